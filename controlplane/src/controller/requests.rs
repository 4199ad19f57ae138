//! What each API request means: reads answered from the running model and the counters, and
//! changes turned into a candidate list of services. The changed object is validated once, in
//! the context of its service; conflicts and counts are checked against the other services,
//! which are valid already and are not validated again.

use serde_json::{Value, json};

use super::Controller;
use crate::api::{
    ApiError, Body, MAX_FLOW_SAMPLE, Reply, Request, backend_json, field_errors, merge_patch,
    render_metrics, spec_json, typed,
};
use crate::config::{
    BackendSpec, MAX_BACKENDS, MAX_SERVICES, Service, ServiceSpec, validate_service,
    validate_service_list,
};

/// A change the controller may commit: the services it leads to, and the answer once live.
#[derive(Debug)]
pub(super) struct Candidate {
    pub services: Vec<Service>,
    pub reply: Reply,
}

/// How an audit line names the request (before it is known to be valid).
pub(super) fn describe(req: &Request) -> String {
    let id = |body: &Value| {
        body.get("id")
            .and_then(Value::as_str)
            .map_or_else(String::new, |id| format!(" {id}"))
    };
    match req {
        Request::CreateService { body } => format!("create service{}", id(body)),
        Request::ReplaceServices { body } => format!(
            "replace the services with {} given",
            body.as_array().map_or(0, Vec::len)
        ),
        Request::PatchService { service, .. } => format!("change service {service}"),
        Request::DeleteService { service } => format!("delete service {service}"),
        Request::CreateBackend { service, body } => {
            format!("add backend{} to service {service}", id(body))
        }
        Request::PatchBackend {
            service, backend, ..
        } => format!("change backend {service}/{backend}"),
        Request::DeleteBackend { service, backend } => {
            format!("delete backend {service}/{backend}")
        }
        other => format!("{other:?}"),
    }
}

fn created(location: String, body: Value) -> Reply {
    Reply {
        location: Some(location),
        ..Reply::json(201, body)
    }
}

fn no_content() -> Reply {
    Reply {
        status: 204,
        body: Body::Empty,
        location: None,
    }
}

impl Controller {
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

    /// Answers a request that changes nothing.
    pub(super) fn read(&mut self, req: Request) -> Result<Reply, ApiError> {
        Ok(match req {
            Request::ListServices => Reply::json(
                200,
                Value::Array(self.running.services.iter().map(spec_json).collect()),
            ),
            Request::GetService { service } => {
                Reply::json(200, spec_json(self.service(&service)?.1))
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
            Request::Flows { query, limit } => {
                if let Some(s) = &query.service {
                    self.service(s)?;
                }
                if !(1..=MAX_FLOW_SAMPLE).contains(&limit) {
                    return Err(ApiError::invalid(format!(
                        "limit: {limit} is not from 1 to {MAX_FLOW_SAMPLE}"
                    )));
                }
                let filter = self.flow_filter(&query)?;
                let flows = self
                    .flows(filter, limit)
                    .map_err(|e| ApiError::new(503, e))?;
                let mut body = json!({ "limit": limit, "flows": flows });
                if let Some(s) = query.service {
                    body["service"] = json!(s);
                }
                Reply::json(200, body)
            }
            Request::Lookup {
                service,
                client,
                port,
            } => {
                self.service(&service)?;
                Reply::json(200, self.lookup(&service, client, port)?)
            }
            Request::GetTimeouts => Reply::json(
                200,
                serde_json::to_value(crate::config::file::TimeoutsSection::from(
                    &self.running.timeouts,
                ))
                .expect("timeouts serialise"),
            ),
            Request::Stats => Reply::json(
                200,
                serde_json::to_value(self.stats()).expect("stats serialise"),
            ),
            Request::Metrics => Reply {
                status: 200,
                body: Body::Metrics(render_metrics(&self.stats())),
                location: None,
            },
            Request::Health => {
                let reasons = self.unhealthy(std::time::Instant::now().max(self.last_tick));
                if reasons.is_empty() {
                    Reply::json(
                        200,
                        json!({ "status": "ok", "services": self.running.services.len() }),
                    )
                } else {
                    Reply::json(503, json!({ "status": "unhealthy", "reasons": reasons }))
                }
            }
            Request::Audit => {
                Reply::json(200, json!({ "entries": self.audit().collect::<Vec<_>>() }))
            }
            other => {
                return Err(ApiError::new(
                    500,
                    format!("{} is not a read", describe(&other)),
                ));
            }
        })
    }

    /// The services a change leads to, checked; nothing is changed here.
    pub(super) fn candidate(&self, req: Request) -> Result<Candidate, ApiError> {
        let services = &self.running.services;
        match req {
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
                let mut next = services.clone();
                next.push(svc);
                check_counts(&next)?;
                let svc = next.last().expect("pushed");
                Ok(Candidate {
                    reply: created(format!("/api/v1/services/{}", svc.id), spec_json(svc)),
                    services: next,
                })
            }
            Request::ReplaceServices { body } => {
                let Value::Array(items) = body else {
                    return Err(ApiError::invalid(
                        "body: a JSON array of services is expected",
                    ));
                };
                let specs = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        typed::<ServiceSpec>(v).map_err(|e| {
                            let m = e.message.strip_prefix("body: ").unwrap_or(&e.message);
                            ApiError::new(e.status, format!("[{i}].{m}").replace(".[", "["))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let next = validate_service_list(&specs, "").map_err(|e| field_errors(e, ""))?;
                for (i, svc) in next.iter().enumerate() {
                    if let Some((j, _)) = self
                        .running
                        .interfaces
                        .iter()
                        .enumerate()
                        .find(|(_, itf)| itf.addresses.iter().any(|p| p.addr == svc.vip))
                    {
                        return Err(ApiError::invalid(format!(
                            "[{i}].vip: {} is the address of interfaces[{j}], not a VIP",
                            svc.vip
                        )));
                    }
                }
                check_counts(&next)?;
                Ok(Candidate {
                    reply: Reply::json(200, Value::Array(next.iter().map(spec_json).collect())),
                    services: next,
                })
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
                let mut next = services.clone();
                next[i] = svc;
                check_counts(&next)?;
                Ok(Candidate {
                    reply: Reply::json(200, spec_json(&next[i])),
                    services: next,
                })
            }
            Request::DeleteService { service } => {
                let (i, _) = self.service(&service)?;
                let mut next = services.clone();
                next.remove(i);
                Ok(Candidate {
                    services: next,
                    reply: no_content(),
                })
            }
            Request::CreateBackend { service, body } => {
                let (i, current) = self.service(&service)?;
                let spec: BackendSpec = typed(body)?;
                if current.backends.iter().any(|x| x.id == spec.id) {
                    return Err(ApiError::conflict(format!(
                        "id: service {service:?} already has backend {:?}",
                        spec.id
                    )));
                }
                let j = current.backends.len();
                check_backend_endpoint(current, &spec, j)?;
                let svc = with_backend(current, j, spec)?;
                let mut next = services.clone();
                next[i] = svc;
                check_counts(&next)?;
                let b = &next[i].backends[j];
                Ok(Candidate {
                    reply: created(
                        format!("/api/v1/services/{service}/backends/{}", b.id),
                        backend_json(b),
                    ),
                    services: next,
                })
            }
            Request::PatchBackend {
                service,
                backend,
                body,
            } => {
                let (i, j) = self.backend(&service, &backend)?;
                let current = &services[i];
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
                check_backend_endpoint(current, &spec, j)?;
                let svc = with_backend(current, j, spec)?;
                let mut next = services.clone();
                next[i] = svc;
                Ok(Candidate {
                    reply: Reply::json(200, backend_json(&next[i].backends[j])),
                    services: next,
                })
            }
            Request::DeleteBackend { service, backend } => {
                let (i, j) = self.backend(&service, &backend)?;
                let mut next = services.clone();
                next[i].backends.remove(j);
                Ok(Candidate {
                    services: next,
                    reply: no_content(),
                })
            }
            other => Err(ApiError::new(
                500,
                format!("{} is not a change", describe(&other)),
            )),
        }
    }

    /// No other service (but the one at `except`) may use the same protocol, VIP and port, and
    /// no VIP may be an address of our own interfaces.
    fn check_endpoint(&self, svc: &Service, except: Option<usize>) -> Result<(), ApiError> {
        for (i, itf) in self.running.interfaces.iter().enumerate() {
            if itf.addresses.iter().any(|p| p.addr == svc.vip) {
                return Err(ApiError::invalid(format!(
                    "vip: {} is the address of interfaces[{i}], not a VIP",
                    svc.vip
                )));
            }
        }
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
}

/// `service` with backend `j` replaced by (or, at the end, added as) `spec`, validated once as
/// a whole (its own fields and what depends on the set, such as the Maglev table size). Errors
/// of the backend's own fields are named as in its body (`weight`, not `backends[2].weight`).
fn with_backend(service: &Service, j: usize, spec: BackendSpec) -> Result<Service, ApiError> {
    let mut whole = ServiceSpec::from(service);
    if j < whole.backends.len() {
        whole.backends[j] = spec;
    } else {
        whole.backends.push(spec);
    }
    validate_service(&whole, "").map_err(|e| field_errors(e, &format!("backends[{j}]")))
}

/// No other backend of `service` (but the one at `j`) may have the address and port `spec`
/// asks for: a conflict (409), told apart from a field that is wrong (422, found by the
/// validation that follows), so it is looked for on the spec as written.
fn check_backend_endpoint(service: &Service, spec: &BackendSpec, j: usize) -> Result<(), ApiError> {
    let Ok(address) = spec.address.parse::<std::net::IpAddr>() else {
        return Ok(());
    };
    let port = spec.port.unwrap_or(service.port);
    let other = service
        .backends
        .iter()
        .enumerate()
        .find(|(k, x)| *k != j && x.address == address && x.port == port);
    match other {
        Some((_, x)) => Err(ApiError::conflict(format!(
            "address: {address} port {port} is already backend {:?} of service {:?}",
            x.id, service.id
        ))),
        None => Ok(()),
    }
}

/// The counts the appliance holds (the same limits as the configuration file's).
fn check_counts(services: &[Service]) -> Result<(), ApiError> {
    if services.len() > MAX_SERVICES as usize {
        return Err(ApiError::invalid(format!(
            "services: the appliance holds at most {MAX_SERVICES}; nothing changed"
        )));
    }
    let backends: usize = services.iter().map(|s| s.backends.len()).sum();
    if backends > MAX_BACKENDS as usize {
        return Err(ApiError::invalid(format!(
            "backends: the appliance holds at most {MAX_BACKENDS} in all services; nothing changed"
        )));
    }
    Ok(())
}
