//! Any bytes as a plugin file: its header read without loading it. Ok or an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hsu_actors::internals::inspect_bytes(std::path::Path::new("fuzz.so"), data);
});
