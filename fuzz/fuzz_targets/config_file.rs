//! The configuration: TOML text, then (after a line `%%`) `KEY=VALUE` lines as the
//! environment, parsed and validated as a start or `--check` does. No input may panic; a
//! refusal names a field or the variable.

#![no_main]

use controlplane::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = text.split_once("\n%%\n").unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Err(e) = config::load_str("fuzz", toml, env) {
        assert!(!e.errors.is_empty(), "a refusal says why");
    }
});
