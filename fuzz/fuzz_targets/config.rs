//! Any bytes as a config file: interpolated, parsed, validated. Ok or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(text) = hsu_actors::config::interpolate(&text, &|name| (name == "SET").then(|| "1".into()))
    else {
        return;
    };
    let path = std::path::Path::new("fuzz.yaml");
    if let Ok(config) = hsu_actors::HsuConfig::parse(&text, path) {
        let _ = config.validate(&|n| n == "echo", Some(path));
        let _ = hsu_actors::config::validate_groups(&config);
    }
});
