//! Links the `hsu` binary with the functions a running master uses placed together, in the
//! order of `src/hsu.order` (made by `benches/symbol_order.py`).
//!
//! Why: a master maps its code page by page as it first runs it, and the kernel maps 64 KiB
//! around each page it faults in. Scattered over the ~9 MB of code, the ~2 MB a master of
//! process workers runs (start-up, supervision, the control API, stop) left 7 MB of the
//! binary's code resident in every master; placed together, about 2.3 MB. That was half of a
//! master's memory at 200 workers (see the README's performance table).
//!
//! Only where the link goes through LLD, which reads `--symbol-ordering-file`: release builds
//! for `x86_64-unknown-linux-gnu` (LLD is rustup's default linker there since Rust 1.90),
//! `HSU_SYMBOL_ORDER` not `0`, where a probe program linked here as this build links (the same
//! compiler, target, flags and configured linker) accepts LLD's option: an older compiler, a
//! distribution's that links with GNU ld, or a linker chosen by hand may refuse it. Elsewhere the binary
//! is the same, only laid out as the compiler left it. Names the binary no longer has (after a
//! dependency or toolchain update) are skipped.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/hsu.order");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HSU_SYMBOL_ORDER");
    if !ordered_link() {
        return;
    }
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join("src/hsu.order");
    if !order.is_file() {
        return;
    }
    // `-Xlinker` passes each argument as it is (a path with a comma would be split by -Wl).
    for arg in [
        "-Xlinker".to_string(),
        format!("--symbol-ordering-file={}", order.display()),
        "-Xlinker".to_string(),
        "--no-warn-symbol-ordering".to_string(),
    ] {
        println!("cargo:rustc-link-arg-bin=hsu={arg}");
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// Whether this build links through LLD: the cheap refusals first, then a probe.
fn ordered_link() -> bool {
    env("HSU_SYMBOL_ORDER") != "0"
        && env("PROFILE") == "release"
        && env("TARGET") == "x86_64-unknown-linux-gnu"
        && links_with_lld()
}

/// Whether a program linked as this build links (this compiler, target, flags and configured
/// linker) takes an option only LLD knows. Compilers before 1.90 and distributions' compilers
/// that link with GNU ld fail it.
fn links_with_lld() -> bool {
    let out = std::path::PathBuf::from(env("OUT_DIR"));
    let source = out.join("lld_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
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
        .arg(out.join("lld_probe"))
        .args([
            "-C",
            "link-arg=-Xlinker",
            "-C",
            "link-arg=--no-warn-symbol-ordering",
        ])
        .arg(&source)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
