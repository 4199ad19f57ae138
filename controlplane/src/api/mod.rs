//! The REST API (DESIGN.md §5): what each request means for the running configuration
//! ([`Controller`], plain Rust, tested without HTTP) and the HTTP server in front of it
//! ([`http`]). Requests reach the controller as messages to the control thread, so the
//! configuration has a single writer and each change is whole: parse, validate, save, publish,
//! then answer.

pub mod http;
pub mod openapi;
pub mod stats;

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::{
    BackendSpec, Model, Service, ServiceSpec, validate_service, validate_service_list,
};
use crate::state;
pub use stats::{FlowSample, Stats, render_metrics};

/// What the API asks of the control thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    ListServices,
    GetService {
        service: String,
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
    Flows {
        service: String,
        limit: usize,
    },
    Stats,
    Metrics,
    Health,
}

impl Request {
    /// Whether it changes the configuration (and so needs the token).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Request::CreateService { .. }
                | Request::PatchService { .. }
                | Request::DeleteService { .. }
                | Request::CreateBackend { .. }
                | Request::PatchBackend { .. }
                | Request::DeleteBackend { .. }
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
    fn json(status: u16, v: Value) -> Reply {
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
    fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }
    fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }
    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(422, message)
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        Reply::error(e.status, e.message)
    }
}

/// What the controller needs of the running appliance.
pub trait Dataplane {
    /// Makes `model` the running configuration; returns once the workers use it.
    fn apply(&mut self, model: &Model) -> Result<(), String>;
    /// The counters, for the services of `model`.
    fn stats(&mut self, model: &Model) -> Stats;
    /// Up to `limit` live flows of service `service`, gathered from the workers.
    fn flows(
        &mut self,
        model: &Model,
        service: &str,
        limit: usize,
    ) -> Result<Vec<FlowSample>, String>;
}

/// The largest flow sample one request may ask for.
pub const MAX_FLOW_SAMPLE: usize = 10_000;

/// The owner of the running configuration.
#[derive(Debug)]
pub struct Controller {
    running: Model,
    state_file: Option<PathBuf>,
}

fn spec_json(s: &Service) -> Value {
    serde_json::to_value(ServiceSpec::from(s)).expect("a spec serialises")
}

fn backend_json(b: &crate::config::Backend) -> Value {
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
fn typed<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
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
            let field = if at.ends_with(f) {
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

fn field_errors(errors: Vec<crate::config::FieldError>, strip: &str) -> ApiError {
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

impl Controller {
    pub fn new(running: Model) -> Controller {
        let state_file = running.api.state_file.clone();
        Controller {
            running,
            state_file,
        }
    }

    pub fn running(&self) -> &Model {
        &self.running
    }

    fn service(&self, id: &str) -> Result<(usize, &Service), ApiError> {
        self.running
            .services
            .iter()
            .enumerate()
            .find(|(_, s)| s.id == id)
            .ok_or_else(|| ApiError::not_found(format!("no service {id:?}")))
    }

    fn backend(&self, service: &str, id: &str) -> Result<(usize, usize), ApiError> {
        let (i, s) = self.service(service)?;
        let j = s.backends.iter().position(|b| b.id == id).ok_or_else(|| {
            ApiError::not_found(format!("service {service:?} has no backend {id:?}"))
        })?;
        Ok((i, j))
    }

    /// Answers one request; a change is saved and live before the answer.
    pub fn handle(&mut self, req: Request, dp: &mut impl Dataplane) -> Reply {
        self.answer(req, dp).unwrap_or_else(Reply::from)
    }

    fn answer(&mut self, req: Request, dp: &mut impl Dataplane) -> Result<Reply, ApiError> {
        Ok(match req {
            Request::ListServices => Reply::json(
                200,
                Value::Array(self.running.services.iter().map(spec_json).collect()),
            ),
            Request::GetService { service } => {
                Reply::json(200, spec_json(self.service(&service)?.1))
            }
            Request::CreateService { body } => {
                let spec: ServiceSpec = typed(body)?;
                let svc = validate_service(&spec, "").map_err(|e| field_errors(e, ""))?;
                if self.service(&svc.id).is_ok() {
                    return Err(ApiError::conflict(format!(
                        "id: service {:?} already exists",
                        svc.id
                    )));
                }
                self.check_endpoint(&svc, None)?;
                let mut services = self.running.services.clone();
                services.push(svc.clone());
                self.commit(services, dp)?;
                Reply {
                    location: Some(format!("/api/v1/services/{}", svc.id)),
                    ..Reply::json(201, spec_json(&svc))
                }
            }
            Request::PatchService { service, body } => {
                let (i, current) = self.service(&service)?;
                let mut merged = spec_json(current);
                merge_patch(&mut merged, &body);
                let spec: ServiceSpec = typed(merged)?;
                if spec.id != service {
                    return Err(ApiError::invalid(format!(
                        "id: cannot change ({service:?}); create the service under the new id and delete this one"
                    )));
                }
                let svc = validate_service(&spec, "").map_err(|e| field_errors(e, ""))?;
                self.check_endpoint(&svc, Some(i))?;
                let mut services = self.running.services.clone();
                services[i] = svc.clone();
                self.commit(services, dp)?;
                Reply::json(200, spec_json(&svc))
            }
            Request::DeleteService { service } => {
                let (i, _) = self.service(&service)?;
                let mut services = self.running.services.clone();
                services.remove(i);
                self.commit(services, dp)?;
                Reply {
                    status: 204,
                    body: Body::Empty,
                    location: None,
                }
            }
            Request::ListBackends { service } => Reply::json(
                200,
                Value::Array(
                    self.service(&service)?
                        .1
                        .backends
                        .iter()
                        .map(backend_json)
                        .collect(),
                ),
            ),
            Request::GetBackend { service, backend } => {
                let (i, j) = self.backend(&service, &backend)?;
                Reply::json(200, backend_json(&self.running.services[i].backends[j]))
            }
            Request::CreateBackend { service, body } => {
                let (i, current) = self.service(&service)?;
                let spec: BackendSpec = typed(body)?;
                let b = self.validate_backend(current, &spec)?;
                if current.backends.iter().any(|x| x.id == b.id) {
                    return Err(ApiError::conflict(format!(
                        "id: service {service:?} already has backend {:?}",
                        b.id
                    )));
                }
                Self::check_backend_endpoint(current, &b, None)?;
                let mut services = self.running.services.clone();
                services[i].backends.push(b.clone());
                self.validate_whole(&services[i])?;
                self.commit(services, dp)?;
                Reply {
                    location: Some(format!("/api/v1/services/{service}/backends/{}", b.id)),
                    ..Reply::json(201, backend_json(&b))
                }
            }
            Request::PatchBackend {
                service,
                backend,
                body,
            } => {
                let (i, j) = self.backend(&service, &backend)?;
                let current = &self.running.services[i];
                let mut merged = backend_json(&current.backends[j]);
                // A port left out follows the service's (for dr and tun it must).
                if body.get("port").is_some_and(Value::is_null) {
                    merged["port"] = json!(current.port);
                }
                merge_patch(&mut merged, &body);
                let spec: BackendSpec = typed(merged)?;
                if spec.id != backend {
                    return Err(ApiError::invalid(format!(
                        "id: cannot change ({backend:?}); add the backend under the new id and delete this one"
                    )));
                }
                let b = self.validate_backend(current, &spec)?;
                Self::check_backend_endpoint(current, &b, Some(j))?;
                let mut services = self.running.services.clone();
                services[i].backends[j] = b.clone();
                self.validate_whole(&services[i])?;
                self.commit(services, dp)?;
                Reply::json(200, backend_json(&b))
            }
            Request::DeleteBackend { service, backend } => {
                let (i, j) = self.backend(&service, &backend)?;
                let mut services = self.running.services.clone();
                services[i].backends.remove(j);
                self.commit(services, dp)?;
                Reply {
                    status: 204,
                    body: Body::Empty,
                    location: None,
                }
            }
            Request::Flows { service, limit } => {
                self.service(&service)?;
                if !(1..=MAX_FLOW_SAMPLE).contains(&limit) {
                    return Err(ApiError::invalid(format!(
                        "limit: {limit} is not from 1 to {MAX_FLOW_SAMPLE}"
                    )));
                }
                let flows = dp
                    .flows(&self.running, &service, limit)
                    .map_err(|e| ApiError::new(503, e))?;
                Reply::json(
                    200,
                    json!({ "service": service, "limit": limit, "flows": flows }),
                )
            }
            Request::Stats => Reply::json(
                200,
                serde_json::to_value(dp.stats(&self.running)).expect("stats serialise"),
            ),
            Request::Metrics => Reply {
                status: 200,
                body: Body::Metrics(render_metrics(&dp.stats(&self.running))),
                location: None,
            },
            Request::Health => Reply::json(
                200,
                json!({ "status": "ok", "services": self.running.services.len() }),
            ),
        })
    }

    /// A backend's own fields, checked as the only backend of its service.
    fn validate_backend(
        &self,
        service: &Service,
        spec: &BackendSpec,
    ) -> Result<crate::config::Backend, ApiError> {
        let mut alone = ServiceSpec::from(service);
        alone.backends = vec![spec.clone()];
        let mut s = validate_service(&alone, "").map_err(|e| field_errors(e, "backends[0]"))?;
        Ok(s.backends.remove(0))
    }

    /// The service with its new backend set, as a whole (e.g. the Maglev table size).
    fn validate_whole(&self, service: &Service) -> Result<(), ApiError> {
        let spec = ServiceSpec::from(service);
        validate_service(&spec, "")
            .map(|_| ())
            .map_err(|e| field_errors(e, ""))
    }

    /// No other service (but the one at `except`) may use the same protocol, VIP and port.
    fn check_endpoint(&self, svc: &Service, except: Option<usize>) -> Result<(), ApiError> {
        let other = self.running.services.iter().enumerate().find(|(i, s)| {
            Some(*i) != except
                && s.protocol == svc.protocol
                && s.vip == svc.vip
                && s.port == svc.port
        });
        match other {
            Some((_, s)) => Err(ApiError::conflict(format!(
                "vip: {} {} port {} is already service {:?}",
                svc.protocol, svc.vip, svc.port, s.id
            ))),
            None => Ok(()),
        }
    }

    fn check_backend_endpoint(
        service: &Service,
        b: &crate::config::Backend,
        except: Option<usize>,
    ) -> Result<(), ApiError> {
        let other = service
            .backends
            .iter()
            .enumerate()
            .find(|(j, x)| Some(*j) != except && x.address == b.address && x.port == b.port);
        match other {
            Some((_, x)) => Err(ApiError::conflict(format!(
                "address: {} port {} is already backend {:?} of service {:?}",
                b.address, b.port, x.id, service.id
            ))),
            None => Ok(()),
        }
    }

    /// Saves, publishes and adopts `services`; on any failure nothing changes.
    fn commit(&mut self, services: Vec<Service>, dp: &mut impl Dataplane) -> Result<(), ApiError> {
        let specs: Vec<ServiceSpec> = services.iter().map(ServiceSpec::from).collect();
        validate_service_list(&specs, "services").map_err(|e| field_errors(e, ""))?;
        let mut next = self.running.clone();
        next.services = services;
        self.adopt(next, dp)
            .map_err(|e| ApiError::new(e.status, e.message))
    }

    /// The state file first (a crash after it keeps the change), then the dataplane; if the
    /// dataplane refuses, the state file is put back.
    fn adopt(&mut self, next: Model, dp: &mut impl Dataplane) -> Result<(), ApiError> {
        if let Some(path) = &self.state_file {
            state::save(path, &next.services).map_err(|e| {
                ApiError::new(
                    500,
                    format!(
                        "cannot save the state file {}: {e}; nothing changed",
                        path.display()
                    ),
                )
            })?;
        }
        if let Err(e) = dp.apply(&next) {
            if let Some(path) = &self.state_file {
                let _ = state::save(path, &self.running.services);
            }
            return Err(ApiError::invalid(format!("{e}; nothing changed")));
        }
        self.running = next;
        Ok(())
    }

    /// SIGHUP: the configuration file again, applied like an API change (services included, and
    /// saved to the state file). What only a restart can change must stay as it is.
    pub fn reload(&mut self, next: Model, dp: &mut impl Dataplane) -> Result<(), String> {
        if next.dpdk != self.running.dpdk || next.interfaces != self.running.interfaces {
            return Err("[dpdk] and [[interfaces]] change only with a restart".into());
        }
        if next.api != self.running.api {
            return Err("[api] changes only with a restart".into());
        }
        self.adopt(next, dp).map_err(|e| e.message)
    }
}

#[cfg(test)]
mod tests;
