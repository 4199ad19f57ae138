//! The REST API's vocabulary: the requests the HTTP server ([`http`]) hands to the control
//! thread, their answers, and the parsing of JSON bodies into specs with errors that name the
//! field. What a request means for the running configuration is decided by the one writer,
//! [`crate::controller::Controller`].

pub mod http;
pub mod json;
pub mod openapi;
pub mod stats;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::{BackendSpec, Service, ServiceSpec};
pub use stats::{FlowSample, MbufStats, Stats, render_metrics};

/// What the API asks of the control thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    ListServices,
    GetService {
        service: String,
    },
    /// Every service at once (a JSON array of services): all are applied or none.
    ReplaceServices {
        body: Value,
    },
    CreateService {
        body: Value,
    },
    PatchService {
        service: String,
        body: Value,
    },
    DeleteService {
        service: String,
    },
    ListBackends {
        service: String,
    },
    GetBackend {
        service: String,
        backend: String,
    },
    CreateBackend {
        service: String,
        body: Value,
    },
    PatchBackend {
        service: String,
        backend: String,
        body: Value,
    },
    DeleteBackend {
        service: String,
        backend: String,
    },
    /// Live flows (of one service, or of all) that `query` takes.
    Flows {
        query: FlowQuery,
        limit: usize,
    },
    /// Removes the flow of `client` to `service` (on `port` of a port-zero service).
    DeleteFlow {
        service: String,
        client: std::net::SocketAddr,
        port: Option<u16>,
    },
    /// Where a flow from `client` goes (`port`: of a port-zero service).
    Lookup {
        service: String,
        client: std::net::SocketAddr,
        port: Option<u16>,
    },
    /// The flow timeouts (`[timeouts]`).
    GetTimeouts,
    /// The BGP speaker: drained or not, the VIPs announced, its sessions.
    GetBgp,
    /// `{"drained": bool}`: withdraw every VIP (or announce them again).
    PatchBgp {
        body: Value,
    },
    /// A merge patch of the flow timeouts (ipvsadm --set), live.
    PatchTimeouts {
        body: Value,
    },
    /// Zeroes the traffic counters of every service and backend, or of one service's (ipvsadm
    /// -Z).
    ZeroCounters {
        service: Option<String>,
    },
    /// Reads the configuration file again (like SIGHUP); `body` may ask for the file's
    /// services too (`{"services_from_file": true}`).
    Reload {
        body: Value,
    },
    /// The last changes and reloads, newest last.
    Audit,
    Stats,
    Metrics,
    Health,
}

/// Which flows a listing shows: every given part must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowQuery {
    pub service: Option<String>,
    /// The client's address, and its port when given.
    pub client: Option<(std::net::IpAddr, Option<u16>)>,
    /// A backend id (of `service`, which it needs).
    pub backend: Option<String>,
    /// syn, established, fin, closed, midstream or udp.
    pub state: Option<String>,
}

impl Request {
    /// Whether it changes the configuration (and so needs the token).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Request::CreateService { .. }
                | Request::ReplaceServices { .. }
                | Request::PatchService { .. }
                | Request::DeleteService { .. }
                | Request::CreateBackend { .. }
                | Request::PatchBackend { .. }
                | Request::DeleteBackend { .. }
                | Request::DeleteFlow { .. }
                | Request::ZeroCounters { .. }
                | Request::PatchTimeouts { .. }
                | Request::PatchBgp { .. }
                | Request::Reload { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(Value),
    /// Prometheus text.
    Metrics(String),
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Body,
    /// For 201: where the new object lives.
    pub location: Option<String>,
}

impl Reply {
    pub fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            body: Body::Json(v),
            location: None,
        }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, json!({ "error": message.into() }))
    }
}

/// A refused request: the status and what is wrong, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(422, message)
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        Reply::error(e.status, e.message)
    }
}

/// The largest flow sample one request may ask for.
pub const MAX_FLOW_SAMPLE: usize = 10_000;

pub(crate) fn spec_json(s: &Service) -> Value {
    serde_json::to_value(ServiceSpec::from(s)).expect("a spec serialises")
}

pub(crate) fn backend_json(b: &crate::config::Backend) -> Value {
    serde_json::to_value(BackendSpec::from(b)).expect("a spec serialises")
}

/// `at.name`, or `name` at the top of a body.
fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

/// A JSON body as `T`; what does not fit is an error naming the field.
pub(crate) fn typed<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    let kind = match &v {
        Value::Object(_) => None,
        Value::Array(_) => Some("an array"),
        Value::String(_) => Some("a string"),
        Value::Number(_) => Some("a number"),
        Value::Bool(_) => Some("a boolean"),
        Value::Null => Some("null"),
    };
    if let Some(kind) = kind {
        return Err(ApiError::invalid(format!(
            "body: a JSON object is expected, not {kind}"
        )));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { "" } else { path.as_str() };
        let inner = e.inner().to_string();
        let message = if let Some(f) = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            format!("{}: is required", join(at, f))
        } else if let Some(rest) = inner.strip_prefix("unknown field `") {
            let (f, expected) = rest.split_once('`').unwrap_or((rest, ""));
            let field = if f.is_empty() {
                join(at, "\"\"")
            } else if at.ends_with(f) {
                at.to_string()
            } else {
                join(at, f)
            };
            format!(
                "{field}: unknown field{}",
                expected.replacen(", expected", " (expected", 1)
                    + if expected.is_empty() { "" } else { ")" }
            )
        } else if at.is_empty() {
            format!("body: {inner}")
        } else {
            format!("{at}: {inner}")
        };
        ApiError::invalid(message)
    })
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

pub(crate) fn field_errors(errors: Vec<crate::config::FieldError>, strip: &str) -> ApiError {
    let parts: Vec<String> = errors
        .into_iter()
        .map(|mut e| {
            if let Some(rest) = e.field.strip_prefix(strip) {
                e.field = rest.trim_start_matches('.').to_string();
            }
            e.to_string()
        })
        .collect();
    ApiError::invalid(parts.join("; "))
}

#[cfg(test)]
mod tests;
