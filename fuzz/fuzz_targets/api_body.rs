//! A request body as the API takes it: parsed strictly (no key twice), applied as a JSON merge
//! patch (RFC 7396) to a service, and what results read and validated as a service, the way a
//! PATCH is; and on its own as a new service, the way a POST is. No input may panic.

#![no_main]

use controlplane::api::{json, merge_patch};
use controlplane::config::{ServiceSpec, validate_service_list};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = json::parse(data) else {
        return;
    };
    let service = json!({
        "id": "web", "protocol": "tcp", "vip": "198.18.0.100", "port": 80,
        "scheduler": "wlc", "forwarding": "nat", "maglev_table_size": 65537,
        "backends": [{"id": "b1", "address": "198.18.1.10", "port": 8080, "weight": 1, "enabled": true}]
    });
    for target in [&mut service.clone(), &mut serde_json::Value::Null] {
        merge_patch(target, &body);
        if let Ok(spec) = serde_json::from_value::<ServiceSpec>(target.clone()) {
            let _ = validate_service_list(&[spec], "services");
        }
    }
    if let Ok(spec) = serde_json::from_value::<ServiceSpec>(body) {
        let _ = validate_service_list(&[spec], "services");
    }
});
