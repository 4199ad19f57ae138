//! The state file as a start reads it: parsed, its format checked, its services validated. A
//! corrupt file is refused with a reason, never a panic.

#![no_main]

use controlplane::state;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = state::parse(data, "fuzz") {
        assert!(!e.errors.is_empty(), "a refusal says why");
    }
});
