//! Hostile input: random, mutated and pathological configs and plugin files end in Ok or a
//! clear error, never a panic or a hang (each case runs on a thread of its own, whose join is
//! bounded only to report a hang instead of blocking the suite).

use std::path::Path;
use std::time::Duration;

use hsu::config::HsuConfig;
use proptest::prelude::*;

/// Far above what any case needs; only a hang reaches it.
const HANG: Duration = Duration::from_secs(60);

/// Parses and (when it parses) validates `text`; the error text when it fails.
fn parse_and_validate(text: &str) -> Result<usize, String> {
    let config = HsuConfig::parse(text, Path::new("hostile.yaml")).map_err(|e| e.to_string())?;
    let specs = config
        .validate(&|n| n == "echo", Some(Path::new("hostile.yaml")))
        .map_err(|e| e.to_string())?;
    let _ = hsu::config::validate_groups(&config);
    Ok(specs.len())
}

/// Runs `f` on a thread; panics with `what` if it panicked or did not end.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(_) => panic!("{what}: panicked or did not finish within {HANG:?}"),
    }
}

const EXAMPLE: &str = include_str!("../examples/configs/stack.yaml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = bounded("random bytes", move || parse_and_validate(&text));
    }

    #[test]
    fn mutated_real_configs_are_ok_or_a_clear_error(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12)
    ) {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                _ => bytes.insert(i, byte),
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Err(e) = bounded("a mutated config", move || parse_and_validate(&text)) {
            prop_assert!(!e.is_empty());
            prop_assert!(e.contains("hostile.yaml"), "an error names the file: {}", e);
        }
    }

    #[test]
    fn random_and_mutated_plugin_files_are_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
    ) {
        let _ = bounded("random plugin bytes", move || {
            hsu::internals::inspect_bytes(Path::new("random.so"), &bytes).map(drop)
        });
        // A real ELF header with bytes changed (the headers and tables are at its start).
        let mut elf = elf_prefix().to_vec();
        for (at, byte) in flips {
            let i = at.index(elf.len());
            elf[i] = byte;
        }
        let _ = bounded("a mutated plugin", move || {
            hsu::internals::inspect_bytes(Path::new("mutated.so"), &elf).map(drop)
        });
    }
}

/// The first 256 KiB of a real shared library (this test binary's libc would do; the test
/// plugin is at hand).
fn elf_prefix() -> &'static [u8] {
    static PREFIX: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let plugin = exe.parent().unwrap().join("libhsu_test_plugin.so");
        let data = std::fs::read(plugin).expect("the test plugin is built by cargo test");
        data[..data.len().min(256 * 1024)].to_vec()
    })
}

#[test]
fn pathological_yaml_is_refused_clearly() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "deep flow nesting",
            format!("workers: {}1{}", "[".repeat(100_000), "]".repeat(100_000)),
            "nested more than 64 levels",
        ),
        (
            "deep block nesting",
            (0..200)
                .map(|d| format!("{}k{d}:\n", "  ".repeat(d)))
                .collect(),
            "nested more than 64 levels",
        ),
        (
            "an alias bomb",
            {
                let mut t = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
                for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
                    let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
                    t.push_str(&format!(
                        "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
                    ));
                }
                t.push_str("workers: *i\n");
                t
            },
            "",
        ),
        (
            "a 10 MB scalar",
            format!(
                "workers:\n  - {{id: a, type: module, module_name: echo, config: {{blob: '{}'}}}}\n",
                "x".repeat(10 << 20)
            ),
            "",
        ),
        ("binary garbage", "\u{0}\u{1}\u{7f}\u{feff}\u{fffd}\n: - ] }".into(), ""),
    ];
    for (what, text, expected) in cases {
        let result = bounded(what, move || parse_and_validate(&text));
        match result {
            Ok(n) => assert!(expected.is_empty(), "{what}: accepted with {n} workers"),
            Err(e) => {
                assert!(e.contains(expected), "{what}: {e}");
                assert!(
                    e.len() < 10_000,
                    "{what}: an error, not an echo of the input"
                );
            }
        }
    }
}
