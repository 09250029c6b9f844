//! Records the compiler and target that built this crate, for the plugin header: a host can
//! then tell a plugin built by another toolchain or for another target before calling into it.
//! With the `integrated` feature, also compiles `proto/coreservice.proto`: protox parses it
//! (pure Rust, so no system `protoc` is needed) and tonic-prost-build generates the messages,
//! the server trait and the client.

use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    #[cfg(feature = "integrated")]
    {
        println!("cargo:rerun-if-changed=proto/coreservice.proto");
        let descriptors = protox::compile(["proto/coreservice.proto"], ["proto"])?;
        tonic_prost_build::configure()
            .build_transport(false)
            .compile_fds(descriptors)?;
    }
    Ok(())
}
