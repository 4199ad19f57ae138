//! The OpenAPI 3 description of the API, generated from the handlers and types by utoipa.

use serde_json::{Value, json};
use utoipa::OpenApi;

use super::stats::{
    ActionStats, BackendStats, ClosedPortStats, FlowSample, FlowStats, HealthStats, MbufStats,
    PortStats, ServiceStats, Stats, Traffic, WorkerStats,
};
use crate::config::file::{
    ForwardingName, HealthCheckName, OnDownName, ProtocolName, SchedulerName,
};
use crate::config::{BackendSpec, HealthCheckSpec, ServiceSpec, SorryBackendSpec};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "l4lb",
        description = "REST API of the l4lb layer-4 load balancer: services, backends, flows, statistics."
    ),
    paths(
        super::http::list_services,
        super::http::create_service,
        super::http::get_service,
        super::http::patch_service,
        super::http::delete_service,
        super::http::list_backends,
        super::http::create_backend,
        super::http::get_backend,
        super::http::patch_backend,
        super::http::delete_backend,
        super::http::flows,
        super::http::zero,
        super::http::get_timeouts,
        super::http::patch_timeouts,
        super::http::get_bgp,
        super::http::patch_bgp,
        super::http::all_flows,
        super::http::delete_flow,
        super::http::replace_services,
        super::http::lookup,
        super::http::reload,
        super::http::audit,
        super::http::stats,
        super::http::metrics,
        super::http::health,
        super::http::version,
        super::http::openapi,
    ),
    components(schemas(
        ServiceSpec, BackendSpec, Stats, PortStats, ActionStats, FlowStats, ClosedPortStats, MbufStats, Traffic, ServiceStats,
        BackendStats, HealthStats, FlowSample, WorkerStats, ErrorBody, ProtocolName, SchedulerName, ForwardingName,
        HealthCheckSpec, SorryBackendSpec, HealthCheckName, OnDownName
    )),
    modifiers(&BearerAuth)
)]
struct Doc;

/// Every error answer: `{"error": "<field>: <what is wrong>"}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: String,
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What an id of a service or backend is (the validation's rule).
const ID_PATTERN: &str = r"^[A-Za-z0-9._-]{1,64}$";

/// The document `GET /api/v1/openapi.json` serves.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(Doc::openapi()).expect("the OpenAPI document serialises");
    complete(&mut doc);
    doc
}

/// Adds the answers every route of a kind can give, which the handlers' attributes would
/// otherwise each repeat: 503 from every route the control thread answers (its queue full, or
/// stopping), 401 from every route that needs the token, 400 and 413 from every route with a
/// body, 400 from the flows' query; and says that a merge patch is an object.
fn complete(doc: &mut Value) {
    let answer = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        })
    };
    // The specs refuse unknown keys (serde's deny_unknown_fields); a merge patch of one has the
    // same keys, none required, and `null` for a key with a default puts the default back.
    let schemas = &mut doc["components"]["schemas"];
    let mut patches = serde_json::Map::new();
    for (name, defaulted) in [
        (
            "ServiceSpec",
            &[
                "protocol",
                "scheduler",
                "forwarding",
                "maglev_table_size",
                "backends",
                "health_check",
                "on_down",
                "sorry_backend",
            ][..],
        ),
        ("BackendSpec", &["port", "weight", "enabled"][..]),
        ("HealthCheckSpec", &[][..]),
        ("SorryBackendSpec", &["port"][..]),
    ] {
        let spec = &mut schemas[name];
        spec["additionalProperties"] = json!(false);
        let mut props = spec["properties"].clone();
        for key in defaulted {
            let p = props[*key].take();
            props[*key] = json!({"oneOf": [p, {"type": "null"}]});
        }
        patches.insert(
            name.to_string(),
            json!({"type": "object", "properties": props, "additionalProperties": false}),
        );
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let secured = op.get("security").is_some();
            let body = op.get("requestBody").is_some();
            if body {
                set_body_schemas(path, method, op, &patches);
            }
            let params = op.get_mut("parameters").and_then(Value::as_array_mut);
            for p in params.into_iter().flatten() {
                let example = match p["name"].as_str() {
                    Some("limit") => {
                        p["schema"] = json!({"type": "integer", "minimum": 1, "maximum": 10000});
                        continue;
                    }
                    Some("service") => "web",
                    Some("backend") => "b1",
                    _ => continue,
                };
                p["schema"] = json!({"type": "string", "pattern": ID_PATTERN});
                p["example"] = json!(example);
            }
            let Some(responses) = op["responses"].as_object_mut() else {
                continue;
            };
            let mut add = |code: &str, description: &str| {
                responses.entry(code).or_insert_with(|| answer(description));
            };
            if path != "/api/v1/version" && path != "/api/v1/openapi.json" {
                add("503", "The control thread is busy or stopping; try again");
            }
            if secured {
                add("401", "Token missing or wrong");
            }
            if body {
                add("400", "Malformed JSON, or a key given twice");
                add("413", "Body too large");
            }
            if path.ends_with("/flows") {
                add(
                    "400",
                    "An unknown query parameter, or a limit that is not a number",
                );
            }
        }
    }
}

/// A merge patch is of its spec's keys; the reload takes no body or `services_from_file`.
fn set_body_schemas(
    path: &str,
    method: &str,
    op: &mut Value,
    patches: &serde_json::Map<String, Value>,
) {
    let json_body = &mut op["requestBody"]["content"]["application/json"]["schema"];
    if method == "patch" {
        let spec = if path.contains("/backends/") {
            "BackendSpec"
        } else {
            "ServiceSpec"
        };
        *json_body = patches[spec].clone();
    }
    if path == "/api/v1/reload" {
        // No body (or `null`), or this object.
        *json_body = json!({
            "type": ["object", "null"],
            "properties": {"services_from_file": {"type": "boolean"}},
            "additionalProperties": false
        });
        op["requestBody"]["required"] = json!(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_lists_the_answers_of_its_kind_and_the_names_are_enums() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for key in ["parameters", "requestBody"] {
                    assert!(
                        op.get(key).is_none_or(|v| !v.is_null()),
                        "{method} {path}: {key} null"
                    );
                }
                let r = &op["responses"];
                let has = |code: &str| r.get(code).is_some();
                if path != "/api/v1/version" && path != "/api/v1/openapi.json" {
                    assert!(has("503"), "{method} {path}");
                }
                if op.get("security").is_some() {
                    assert!(has("401"), "{method} {path}");
                }
                if op.get("requestBody").is_some() {
                    assert!(has("400") && has("413"), "{method} {path}");
                }
            }
        }
        let patch = &doc["paths"]["/api/v1/services/{service}"]["patch"]["requestBody"]["content"]
            ["application/json"]["schema"];
        assert_eq!(patch["type"], "object");
        assert_eq!(patch["additionalProperties"], false);
        assert!(
            patch.get("required").is_none(),
            "a patch names what it changes"
        );
        assert_eq!(
            patch["properties"]["scheduler"]["oneOf"][1],
            json!({"type": "null"})
        );
        assert!(
            patch["properties"]["vip"].get("oneOf").is_none(),
            "vip cannot be removed"
        );
        let schemas = &doc["components"]["schemas"];
        assert!(
            schemas["Stats"]["properties"]["closed_ports"]
                .to_string()
                .contains("#/components/schemas/ClosedPortStats"),
            "{}",
            schemas["Stats"]
        );
        assert!(schemas["ClosedPortStats"]["properties"]["tcp_resets"].is_object());
        assert!(
            schemas["BackendStats"]
                .to_string()
                .contains("\"neighbor_failures\""),
            "{}",
            schemas["BackendStats"]
        );
        let service = &schemas["ServiceSpec"]["properties"];
        assert_eq!(
            service["port"]["minimum"], 0,
            "0: every port (port-zero services)"
        );
        assert_eq!(service["port"]["maximum"], 65535);
        assert_eq!(service["id"]["pattern"], "^[A-Za-z0-9._-]{1,64}$");
        for (field, schema, names) in [
            ("protocol", "ProtocolName", vec!["tcp", "udp"]),
            ("forwarding", "ForwardingName", vec!["nat", "dr", "tun"]),
            (
                "scheduler",
                "SchedulerName",
                vec![
                    "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "maglev", "mh", "fo", "ovf",
                    "twos",
                ],
            ),
        ] {
            let r = service[field].to_string();
            assert!(
                r.contains(&format!("#/components/schemas/{schema}")),
                "{field}: {r}"
            );
            assert_eq!(schemas[schema]["enum"], json!(names), "{schema}");
        }
        // Every name the schema offers is one the configuration takes.
        for name in schemas["SchedulerName"]["enum"].as_array().unwrap() {
            assert!(
                name.as_str()
                    .unwrap()
                    .parse::<dataplane::service::SchedulerKind>()
                    .is_ok()
            );
        }
        let backend = &schemas["BackendSpec"]["properties"];
        assert_eq!(backend["weight"]["maximum"], 65535);
        let check = &schemas["HealthCheckSpec"];
        assert_eq!(check["additionalProperties"], false);
        assert!(
            check.get("required").is_none(),
            "every key has a default: {check}"
        );
        assert!(
            check["properties"]["type"]
                .to_string()
                .contains("#/components/schemas/HealthCheckName")
        );
        assert_eq!(
            schemas["HealthCheckName"]["enum"],
            json!(["tcp", "http", "udp", "none"])
        );
        assert_eq!(schemas["OnDownName"]["enum"], json!(["remove", "inhibit"]));
        assert!(
            schemas["BackendStats"]
                .to_string()
                .contains("#/components/schemas/HealthStats")
        );
        assert!(schemas["HealthStats"]["properties"]["since_unix"].is_object());
    }
}
