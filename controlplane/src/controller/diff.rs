//! What a change changes, in words for the audit line: `service web backend web-3: weight 1 ->
//! 0`. Services and backends are compared by id, field by field through their specs (the form
//! the API and the file write), so a field added to a spec is reported without code here.

use serde_json::Value;

use crate::api::{backend_json, spec_json};
use crate::config::{Model, Service};

/// A JSON value as an operator writes it: strings without quotes.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `key old -> new` for every field that differs (but `skip`); the fields of an object that
/// is one on both sides by their path: `health_check.type none -> tcp`.
fn fields(old: &Value, new: &Value, skip: &str) -> Vec<String> {
    let (Value::Object(o), Value::Object(n)) = (old, new) else {
        return vec![format!("{} -> {}", text(old), text(new))];
    };
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).filter(|k| *k != skip).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .flat_map(|k| {
            let (a, b) = (
                o.get(k).unwrap_or(&Value::Null),
                n.get(k).unwrap_or(&Value::Null),
            );
            match (a, b) {
                _ if a == b => Vec::new(),
                (Value::Object(_), Value::Object(_)) => fields(a, b, "")
                    .into_iter()
                    .map(|f| format!("{k}.{f}"))
                    .collect(),
                _ => vec![format!("{k} {} -> {}", summary(a, &[]), summary(b, &[]))],
            }
        })
        .collect()
}

/// Keys an added object shows only when they are set (not empty, false or 0; a `tunnel` other
/// than ipip): what most services and backends leave alone.
const SHOWN_WHEN_SET: [&str; 8] = [
    "persistence_timeout",
    "expire_quiescent_template",
    "scheduler_flags",
    "one_packet",
    "allow",
    "deny",
    "upper_threshold",
    "lower_threshold",
];

fn unset(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_u64() == Some(0),
        Value::Null => true,
        _ => false,
    }
}

/// A whole object in one parenthesis: `(address 198.18.0.12, port 8080, weight 1)`.
fn summary(v: &Value, skip: &[&str]) -> String {
    let Value::Object(m) = v else {
        return text(v);
    };
    let parts: Vec<String> = m
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .filter(|(k, v)| {
            !(SHOWN_WHEN_SET.contains(&k.as_str()) && unset(v)
                || k.as_str() == "tunnel" && v.as_str() == Some("ipip"))
        })
        .map(|(k, v)| match v {
            Value::Object(_) => format!("{k} {}", summary(v, &[])),
            _ => format!("{k} {}", text(v)),
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// Whether two versions of a service differ in nothing but their backends.
fn same_but_backends(a: &Service, b: &Service) -> bool {
    let bare = |s: &Service| Service {
        backends: Vec::new(),
        ..s.clone()
    };
    bare(a) == bare(b)
}

/// Every difference between two service lists, one entry each.
pub fn services(old: &[Service], new: &[Service]) -> Vec<String> {
    let mut out = Vec::new();
    for s in old {
        if !new.iter().any(|n| n.id == s.id) {
            out.push(format!("service {} removed", s.id));
        }
    }
    for n in new {
        let Some(s) = old.iter().find(|s| s.id == n.id) else {
            let backends: Vec<&str> = n.backends.iter().map(|b| b.id.as_str()).collect();
            // Health settings only when there are checks, a sorry backend only when set.
            let mut skip = vec!["id", "backends"];
            if n.health.kind == crate::config::CheckKind::None {
                skip.extend(["health_check", "on_down"]);
            }
            if n.sorry.is_none() {
                skip.push("sorry_backend");
            }
            out.push(format!(
                "service {} added {} with backends [{}]",
                n.id,
                summary(&spec_json(n), &skip),
                backends.join(", ")
            ));
            continue;
        };
        // The specs are written out (as JSON) only for what differs: a change touches one
        // service, often one backend's field, and writing out every service and backend of the
        // running configuration was most of the work a change did.
        if s == n {
            continue;
        }
        if !same_but_backends(s, n) {
            let changed = fields(&spec_json(s), &spec_json(n), "backends");
            if !changed.is_empty() {
                out.push(format!("service {}: {}", n.id, changed.join(", ")));
            }
        }
        for b in &s.backends {
            if !n.backends.iter().any(|x| x.id == b.id) {
                out.push(format!("service {} backend {} removed", n.id, b.id));
            }
        }
        for b in &n.backends {
            match s.backends.iter().find(|x| x.id == b.id) {
                None => out.push(format!(
                    "service {} backend {} added {}",
                    n.id,
                    b.id,
                    summary(&backend_json(b), &["id"])
                )),
                Some(was) if was == b => {}
                Some(was) => {
                    let changed = fields(&backend_json(was), &backend_json(b), "");
                    if !changed.is_empty() {
                        out.push(format!(
                            "service {} backend {}: {}",
                            n.id,
                            b.id,
                            changed.join(", ")
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Every difference a reload can make: the sections that change live, then the services.
pub fn model(old: &Model, new: &Model) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&old.timeouts, &new.timeouts);
    let timeouts = [
        ("tcp_established", a.tcp_established, b.tcp_established),
        ("tcp_syn", a.tcp_syn, b.tcp_syn),
        ("tcp_fin", a.tcp_fin, b.tcp_fin),
        ("tcp_close", a.tcp_close, b.tcp_close),
        ("udp", a.udp, b.udp),
    ];
    for (name, was, is) in timeouts {
        if was != is {
            out.push(format!("timeouts.{name} {was} -> {is}"));
        }
    }
    let (a, b) = (&old.replies, &new.replies);
    if a.closed_ports != b.closed_ports {
        out.push(format!(
            "replies.closed_ports {} -> {}",
            a.closed_ports, b.closed_ports
        ));
    }
    if a.per_second != b.per_second {
        out.push(format!(
            "replies.closed_ports_per_second {} -> {}",
            a.per_second, b.per_second
        ));
    }
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    if old.routes != new.routes {
        let routes = |m: &Model| {
            list(
                m.routes
                    .iter()
                    .map(|r| format!("{} via {}", r.prefix, r.via))
                    .collect(),
            )
        };
        out.push(format!("routes {} -> {}", routes(old), routes(new)));
    }
    if old.neighbors != new.neighbors {
        let neighbors = |m: &Model| {
            list(
                m.neighbors
                    .iter()
                    .map(|n| format!("{} at {}", n.address, n.mac))
                    .collect(),
            )
        };
        out.push(format!(
            "neighbors {} -> {}",
            neighbors(old),
            neighbors(new)
        ));
    }
    out.extend(services(&old.services, &new.services));
    out
}
