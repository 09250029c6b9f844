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
//! for `x86_64-unknown-linux-gnu` with Rust 1.90 or later (whose default linker it is), no
//! linker chosen in the environment or the flags, `HSU_SYMBOL_ORDER` not `0`, and a probe
//! program linked here with the same compiler, target and flags accepts LLD's option (a
//! distribution's compiler may link with GNU ld, which would refuse it). Elsewhere the binary
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

/// Whether this build links through LLD as rustc chose it.
fn ordered_link() -> bool {
    if env("HSU_SYMBOL_ORDER") == "0" || env("PROFILE") != "release" {
        return false;
    }
    if env("TARGET") != "x86_64-unknown-linux-gnu" || !env("RUSTC_LINKER").is_empty() {
        return false;
    }
    // A linker, its flavour or its self-contained parts set by hand: it may not be LLD.
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    if flags
        .split('\x1f')
        .any(|f| f.contains("linker") || f.contains("link-self-contained") || f.contains("fuse-ld"))
    {
        return false;
    }
    rustc_minor().is_some_and(|minor| minor >= 90) && links_with_lld(&flags)
}

/// Whether a program linked by this compiler, for this target and with these flags, takes an
/// option only LLD knows.
fn links_with_lld(flags: &str) -> bool {
    let out = std::path::PathBuf::from(env("OUT_DIR"));
    let source = out.join("lld_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .args(flags.split('\x1f').filter(|f| !f.is_empty()))
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

/// The minor version of the compiler building this (`rustc 1.95.0 (…)` → 95).
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
