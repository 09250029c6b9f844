//! Records the compiler and target that built this crate, for the plugin header: a host can
//! then tell a plugin built by another toolchain or for another target before calling into it.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("-vV")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    // One line per `key: value`; the header keeps it whole, so a mismatch shows everything.
    println!(
        "cargo:rustc-env=HSU_RUSTC_VERSION={}",
        version.replace('\n', "; ")
    );
    println!(
        "cargo:rustc-env=HSU_TARGET={}",
        std::env::var("TARGET").unwrap_or_else(|_| "unknown".into())
    );
    println!("cargo:rerun-if-env-changed=RUSTC");
    println!("cargo:rerun-if-changed=build.rs");
}
