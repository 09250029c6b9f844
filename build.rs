//! Links the `hsu` binary as a running master is best served: the functions it uses placed
//! together, in the order of `src/hsu.order` (made by `benches/symbol_order.py`), and its
//! relative relocations packed (`DT_RELR`).
//!
//! Why the order: a master maps its code page by page as it first runs it, and the kernel
//! maps 64 KiB around each page it faults in. Scattered over the ~9 MB of code, the ~2 MB a
//! master of process workers runs (start-up, supervision, the control API, stop) left 7 MB of
//! the binary's code resident in every master; placed together, about 2.3 MB. That was half of
//! a master's memory at 200 workers (see the README's performance table). Why the packing: see
//! [`packed_relocations`].
//!
//! Only where the link goes through LLD, which reads `--symbol-ordering-file`: release builds
//! for `x86_64-unknown-linux-gnu` (LLD is rustup's default linker there since Rust 1.90),
//! where a probe program linked here as this build links (the same compiler, target, flags
//! and configured linker) accepts LLD's option: an older compiler, a distribution's that links
//! with GNU ld, or a linker chosen by hand may refuse it. Elsewhere the binary is the same,
//! only laid out as the compiler left it. `HSU_SYMBOL_ORDER=0` leaves the order out. Names the
//! binary no longer has (after a dependency or toolchain update) are skipped.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/hsu.order");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HSU_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=HSU_PACK_RELOCS");
    if !lld_release() {
        return;
    }
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join("src/hsu.order");
    if env("HSU_SYMBOL_ORDER") != "0" && order.is_file() {
        // `-Xlinker` passes each argument as it is (a path with a comma would be split by -Wl).
        link_args(&[
            &format!("--symbol-ordering-file={}", order.display()),
            "--no-warn-symbol-ordering",
        ]);
    }
    if packed_relocations() {
        link_args(&["-z", "pack-relative-relocs"]);
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// Each of `args` to the linker of the `hsu` binary.
fn link_args(args: &[&str]) {
    for arg in args {
        println!("cargo:rustc-link-arg-bin=hsu=-Xlinker");
        println!("cargo:rustc-link-arg-bin=hsu={arg}");
    }
}

/// Whether this is a release build that links through LLD: the cheap refusals first, then a
/// probe.
fn lld_release() -> bool {
    env("PROFILE") == "release"
        && env("TARGET") == "x86_64-unknown-linux-gnu"
        && probe("lld", &["--no-warn-symbol-ordering"], false)
}

/// Packed relative relocations (`DT_RELR`): the 28,000 relative relocations of a
/// position-independent `hsu` take 8 KB instead of 670 KB, which the loader reads at every
/// start, so a master's resident memory is about 1 MB less (the table and the pages mapped
/// around it). The binary then needs glibc 2.36 or newer to run, so only where the program
/// runs where it is built (host = target) and a probe linked that way runs here (an older
/// loader refuses it or cannot run it); `HSU_PACK_RELOCS=0` leaves them out, for a binary to
/// copy to hosts with an older glibc.
fn packed_relocations() -> bool {
    env("HSU_PACK_RELOCS") != "0"
        && env("HOST") == env("TARGET")
        && probe("relr", &["-z", "pack-relative-relocs"], true)
}

/// Whether a program linked as this build links (this compiler, target, flags and configured
/// linker) with `linker_args` links, and (with `run`) runs. Compilers before 1.90 and
/// distributions' compilers that link with GNU ld refuse LLD's options.
fn probe(name: &str, linker_args: &[&str], run: bool) -> bool {
    let out = std::path::PathBuf::from(env("OUT_DIR"));
    let source = out.join(format!("{name}_probe.rs"));
    // A static with a pointer in it: a relative relocation for the loader to apply.
    let program = "static HELLO: &str = \"hello\";\nfn main() { assert_eq!(std::hint::black_box(HELLO).len(), 5); }\n";
    if std::fs::write(&source, program).is_err() {
        return false;
    }
    let binary = out.join(format!("{name}_probe"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut probe = Command::new(rustc);
    probe.args(
        env("CARGO_ENCODED_RUSTFLAGS")
            .split('\x1f')
            .filter(|f| !f.is_empty()),
    );
    let linker = env("RUSTC_LINKER");
    if !linker.is_empty() {
        probe.arg(format!("-Clinker={linker}"));
    }
    probe
        .args(["--edition", "2021", "--target", &env("TARGET"), "-o"])
        .arg(&binary);
    for arg in linker_args {
        probe.args(["-C", "link-arg=-Xlinker", "-C", &format!("link-arg={arg}")]);
    }
    let quiet = |c: &mut Command| {
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    quiet(probe.arg(&source)) && (!run || quiet(&mut Command::new(&binary)))
}
