//! The HTTP side of the API: routes, the bearer token, body limits, JSON errors. It runs on its
//! own ordinary thread (a small tokio runtime), never on a worker lcore, and hands every request
//! to the control thread as a [`Call`].

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use super::openapi::ErrorBody;
#[allow(unused_imports)]
use super::stats::Stats;
use super::{Body, FlowQuery, Reply, Request};
use crate::config::{BackendSpec, ServiceSpec};

/// Bodies larger than this are refused with 413 (a service with thousands of backends fits).
pub const BODY_LIMIT: usize = 1 << 20;
/// How many requests of each kind (reads, changes) may wait for the control thread before the
/// API answers 503.
pub const QUEUE: usize = 64;

/// One request for the control thread and where its answer goes.
pub struct Call {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

/// Where the HTTP side hands requests over: reads and changes on queues of their own, so that
/// however many reads wait, a change still gets through (the control thread takes changes
/// first).
#[derive(Clone)]
pub struct Calls {
    reads: crossbeam_channel::Sender<Call>,
    changes: crossbeam_channel::Sender<Call>,
}

/// The control thread's ends of [`Calls`].
pub struct CallQueues {
    pub reads: crossbeam_channel::Receiver<Call>,
    pub changes: crossbeam_channel::Receiver<Call>,
}

/// The two queues, [`QUEUE`] deep each.
pub fn queues() -> (Calls, CallQueues) {
    let (reads, read_rx) = crossbeam_channel::bounded(QUEUE);
    let (changes, change_rx) = crossbeam_channel::bounded(QUEUE);
    (
        Calls { reads, changes },
        CallQueues {
            reads: read_rx,
            changes: change_rx,
        },
    )
}

#[derive(Clone)]
struct App {
    calls: Calls,
    token: Option<Arc<[u8]>>,
    version: Arc<Value>,
}

/// The API's routes. `version` is what `GET /api/v1/version` answers.
pub fn router(calls: Calls, token: Option<&str>, version_info: Value) -> Router {
    let app = App {
        calls,
        token: token.map(|t| Arc::from(t.as_bytes())),
        version: Arc::new(version_info),
    };
    Router::new()
        .route(
            "/api/v1/services",
            get(list_services)
                .post(create_service)
                .put(replace_services),
        )
        .route(
            "/api/v1/services/{service}",
            get(get_service).patch(patch_service).delete(delete_service),
        )
        .route(
            "/api/v1/services/{service}/backends",
            get(list_backends).post(create_backend),
        )
        .route(
            "/api/v1/services/{service}/backends/{backend}",
            get(get_backend).patch(patch_backend).delete(delete_backend),
        )
        .route("/api/v1/services/{service}/flows", get(flows))
        .route("/api/v1/flows", get(all_flows).delete(delete_flow))
        .route("/api/v1/services/{service}/lookup", get(lookup))
        .route("/api/v1/reload", axum::routing::post(reload))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/stats/zero", axum::routing::post(zero))
        .route("/api/v1/timeouts", get(get_timeouts).patch(patch_timeouts))
        .route("/api/v1/bgp", get(get_bgp).patch(patch_bgp))
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .route("/api/v1/version", get(version))
        .route("/api/v1/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// Serves `router` on `listener` until `shutdown` completes, on a runtime of its own (call it
/// from a thread made for the API).
pub fn serve(
    listener: std::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = match self.body {
            Body::Json(v) => (status, axum::Json(v)).into_response(),
            Body::Metrics(text) => (
                status,
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response(),
            Body::Empty => status.into_response(),
        };
        if let Some(l) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }
}

/// The bearer token, compared in constant time (only its length can show in the timing). The
/// scheme's name is case-insensitive (RFC 7235 §2.1).
fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(token) = &app.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, t)| t.trim_start_matches(' '));
    given.as_bytes().ct_eq(token).into()
}

/// 401 for a change without the right token.
fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "authorization: a valid \"Authorization: Bearer <token>\" header is needed to change the configuration",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Hands `request` to the control thread and waits for its answer.
async fn call(app: &App, headers: &HeaderMap, request: Request) -> Response {
    if request.mutates() && !authorized(app, headers) {
        return unauthorized();
    }
    let (tx, rx) = oneshot::channel();
    let queue = if request.mutates() {
        &app.calls.changes
    } else {
        &app.calls.reads
    };
    if queue.try_send(Call { request, reply: tx }).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control thread is busy or stopping; try again",
        );
    }
    match rx.await {
        Ok(reply) => reply.into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the appliance is stopping"),
    }
}

/// Like [`call`], for a request that carries the body (as JSON) which `make` wraps.
async fn call_with_body(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    make: impl FnOnce(Value) -> Request,
) -> Response {
    // Every request with a body changes something: the token first, so that nobody without
    // it learns anything from how a body is parsed.
    if !authorized(app, headers) {
        return unauthorized();
    }
    match json_body(body) {
        Ok(body) => call(app, headers, make(body)).await,
        Err(r) => r.into_response(),
    }
}

/// The body as JSON; what is not JSON is a 400, what is too large a 413.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, Reply> {
    let bytes = body.map_err(|rej| {
        let status = rej.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Reply::error(
                status.as_u16(),
                format!("body: larger than {BODY_LIMIT} bytes"),
            )
        } else {
            Reply::error(status.as_u16(), format!("body: {}", rej.body_text()))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Reply::error(400, "body: empty; a JSON object is expected"));
    }
    super::json::parse(&bytes).map_err(|e| Reply::error(400, format!("body: malformed JSON: {e}")))
}

#[utoipa::path(get, path = "/api/v1/services", tag = "services", responses((status = 200, description = "Every service", body = [ServiceSpec])))]
async fn list_services(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Request::ListServices).await
}

#[utoipa::path(post, path = "/api/v1/services", tag = "services", request_body = ServiceSpec, security(("token" = [])), responses((status = 201, description = "Created and live", body = ServiceSpec), (status = 409, description = "The id or (protocol, vip, port) is taken", body = ErrorBody), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 422, description = "A field is wrong (the error names it)", body = ErrorBody)))]
async fn create_service(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call_with_body(&app, &headers, body, |body| Request::CreateService { body }).await
}

#[utoipa::path(put, path = "/api/v1/services", tag = "services", request_body = Vec<ServiceSpec>, security(("token" = [])), responses((status = 200, description = "Every service replaced by these, live (all or nothing; `l4lbctl restore`)", body = Vec<ServiceSpec>), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 422, description = "A field is wrong, or two services share an id or (protocol, vip, port) (the error names it, as [i].field)", body = ErrorBody)))]
async fn replace_services(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call_with_body(&app, &headers, body, |body| Request::ReplaceServices {
        body,
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/services/{service}", tag = "services", params(("service" = String, Path, description = "Service id")), responses((status = 200, description = "The service", body = ServiceSpec), (status = 404, description = "No such service", body = ErrorBody)))]
async fn get_service(
    State(app): State<App>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    call(&app, &headers, Request::GetService { service }).await
}

#[utoipa::path(patch, path = "/api/v1/services/{service}", tag = "services", params(("service" = String, Path, description = "Service id")), request_body(content = Value, description = "A JSON merge patch (RFC 7396) of the service", content_type = "application/json"), security(("token" = [])), responses((status = 200, description = "Changed and live", body = ServiceSpec), (status = 404, description = "No such service", body = ErrorBody), (status = 409, description = "(protocol, vip, port) is taken", body = ErrorBody), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 422, description = "A field is wrong (the error names it)", body = ErrorBody)))]
async fn patch_service(
    State(app): State<App>,
    headers: HeaderMap,
    Path(service): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call_with_body(&app, &headers, body, |body| Request::PatchService {
        service,
        body,
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/services/{service}", tag = "services", params(("service" = String, Path, description = "Service id")), security(("token" = [])), responses((status = 204, description = "Deleted; its flows are gone"), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 404, description = "No such service", body = ErrorBody)))]
async fn delete_service(
    State(app): State<App>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    call(&app, &headers, Request::DeleteService { service }).await
}

#[utoipa::path(get, path = "/api/v1/services/{service}/backends", tag = "backends", params(("service" = String, Path, description = "Service id")), responses((status = 200, description = "The service's backends", body = [BackendSpec]), (status = 404, description = "No such service", body = ErrorBody)))]
async fn list_backends(
    State(app): State<App>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    call(&app, &headers, Request::ListBackends { service }).await
}

#[utoipa::path(post, path = "/api/v1/services/{service}/backends", tag = "backends", params(("service" = String, Path, description = "Service id")), request_body = BackendSpec, security(("token" = [])), responses((status = 201, description = "Added and live", body = BackendSpec), (status = 404, description = "No such service", body = ErrorBody), (status = 409, description = "The id or address and port is taken", body = ErrorBody), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 422, description = "A field is wrong (the error names it)", body = ErrorBody)))]
async fn create_backend(
    State(app): State<App>,
    headers: HeaderMap,
    Path(service): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call_with_body(&app, &headers, body, |body| Request::CreateBackend {
        service,
        body,
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/services/{service}/backends/{backend}", tag = "backends", params(("service" = String, Path, description = "Service id"), ("backend" = String, Path, description = "Backend id")), responses((status = 200, description = "The backend", body = BackendSpec), (status = 404, description = "No such service or backend", body = ErrorBody)))]
async fn get_backend(
    State(app): State<App>,
    headers: HeaderMap,
    Path((service, backend)): Path<(String, String)>,
) -> Response {
    call(&app, &headers, Request::GetBackend { service, backend }).await
}

#[utoipa::path(patch, path = "/api/v1/services/{service}/backends/{backend}", tag = "backends", params(("service" = String, Path, description = "Service id"), ("backend" = String, Path, description = "Backend id")), request_body(content = Value, description = "A JSON merge patch (RFC 7396) of the backend; weight 0 or enabled false drains it", content_type = "application/json"), security(("token" = [])), responses((status = 200, description = "Changed and live", body = BackendSpec), (status = 404, description = "No such service or backend", body = ErrorBody), (status = 409, description = "The address and port is taken", body = ErrorBody), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 422, description = "A field is wrong (the error names it)", body = ErrorBody)))]
async fn patch_backend(
    State(app): State<App>,
    headers: HeaderMap,
    Path((service, backend)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call_with_body(&app, &headers, body, |body| Request::PatchBackend {
        service,
        backend,
        body,
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/services/{service}/backends/{backend}", tag = "backends", params(("service" = String, Path, description = "Service id"), ("backend" = String, Path, description = "Backend id")), security(("token" = [])), responses((status = 204, description = "Deleted; its flows are gone (their next packet is scheduled anew)"), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 404, description = "No such service or backend", body = ErrorBody)))]
async fn delete_backend(
    State(app): State<App>,
    headers: HeaderMap,
    Path((service, backend)): Path<(String, String)>,
) -> Response {
    call(&app, &headers, Request::DeleteBackend { service, backend }).await
}

/// The default number of flows `GET .../flows` lists.
pub const DEFAULT_FLOW_SAMPLE: usize = 100;

/// The query of a flow listing: `limit`, and the filters `service` (unless in the path),
/// `client` (ADDR or ADDR:PORT), `backend` and `state`.
fn flow_query(query: Option<&str>, in_path: bool) -> Result<(FlowQuery, usize), String> {
    let mut q = FlowQuery::default();
    let mut limit = DEFAULT_FLOW_SAMPLE;
    let known = if in_path {
        "limit, client, backend and state"
    } else {
        "limit, service, client, backend and state"
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("{pair:?}: not key=value"));
        };
        let v = decode(v);
        match k {
            "limit" => {
                limit = v
                    .parse()
                    .map_err(|_| format!("limit: {v:?} is not a number"))?;
            }
            "service" if !in_path => q.service = Some(v),
            "client" => {
                q.client = Some(match v.parse::<std::net::SocketAddr>() {
                    Ok(a) => (a.ip(), Some(a.port())),
                    Err(_) => (
                        v.parse::<std::net::IpAddr>().map_err(|_| {
                            format!("client: {v:?} is not an address, or an address and port")
                        })?,
                        None,
                    ),
                });
            }
            "backend" => q.backend = Some(v),
            "state" => q.state = Some(v),
            _ => {
                return Err(format!(
                    "{pair:?}: unknown query parameter ({known} are the ones)"
                ));
            }
        }
    }
    Ok((q, limit))
}

/// `%5B`, `%5D` and `%3A` (how clients escape brackets and colons) decoded.
fn decode(v: &str) -> String {
    v.replace("%5B", "[")
        .replace("%5D", "]")
        .replace("%3A", ":")
        .replace("%5b", "[")
        .replace("%5d", "]")
        .replace("%3a", ":")
}

#[utoipa::path(get, path = "/api/v1/services/{service}/flows", tag = "services", params(("service" = String, Path, description = "Service id"), ("limit" = Option<usize>, Query, description = "At most this many flows (default 100, at most 10000)"), ("client" = Option<String>, Query, description = "Only this client: ADDR or ADDR:PORT"), ("backend" = Option<String>, Query, description = "Only this backend (id)"), ("state" = Option<String>, Query, description = "Only this state: syn, established, fin, closed, midstream or udp")), responses((status = 200, description = "A sample of the live flows", body = Value), (status = 400, description = "A query parameter is not understood", body = ErrorBody), (status = 404, description = "No such service or backend", body = ErrorBody), (status = 422, description = "limit or state out of range", body = ErrorBody)))]
async fn flows(
    State(app): State<App>,
    headers: HeaderMap,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let (mut query, limit) = match flow_query(query.as_deref(), true) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    query.service = Some(service);
    call(&app, &headers, Request::Flows { query, limit }).await
}

#[utoipa::path(get, path = "/api/v1/flows", tag = "flows", params(("limit" = Option<usize>, Query, description = "At most this many flows (default 100, at most 10000)"), ("service" = Option<String>, Query, description = "Only this service (id)"), ("client" = Option<String>, Query, description = "Only this client: ADDR or ADDR:PORT"), ("backend" = Option<String>, Query, description = "Only this backend (id; needs service)"), ("state" = Option<String>, Query, description = "Only this state: syn, established, fin, closed, midstream or udp")), responses((status = 200, description = "A sample of the live flows of every service (ipvsadm -L -c)", body = Value), (status = 400, description = "A query parameter is not understood", body = ErrorBody), (status = 404, description = "No such service or backend", body = ErrorBody), (status = 422, description = "limit or state out of range, or a backend without its service", body = ErrorBody)))]
async fn all_flows(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match flow_query(query.as_deref(), false) {
        Ok((query, limit)) => call(&app, &headers, Request::Flows { query, limit }).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[utoipa::path(delete, path = "/api/v1/flows", tag = "flows", params(("service" = String, Query, description = "The flow's service (id)"), ("client" = String, Query, description = "The client: ADDR:PORT"), ("port" = Option<u16>, Query, description = "The VIP port, for a service of port 0")), security(("token" = [])), responses((status = 204, description = "Removed: the client's next packet is scheduled anew"), (status = 400, description = "A query parameter is missing or not understood", body = ErrorBody), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 404, description = "No such service, or no such flow", body = ErrorBody), (status = 422, description = "The port is missing for a port-zero service", body = ErrorBody), (status = 503, description = "A worker did not answer in time", body = ErrorBody)))]
async fn delete_flow(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let (mut service, mut client, mut port) = (None, None, None);
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let bad = |what: String| error(StatusCode::BAD_REQUEST, what);
        match pair.split_once('=').map(|(k, v)| (k, decode(v))) {
            Some(("service", v)) => service = Some(v),
            Some(("client", v)) => match v.parse::<std::net::SocketAddr>() {
                Ok(a) => client = Some(a),
                Err(_) => return bad(format!("client: {v:?} is not an address and port")),
            },
            Some(("port", v)) => match v.parse::<u16>() {
                Ok(p) => port = Some(p),
                Err(_) => return bad(format!("port: {v:?} is not a port")),
            },
            _ => {
                return bad(format!(
                    "{pair:?}: unknown query parameter (service, client and port are the ones)"
                ));
            }
        }
    }
    let (Some(service), Some(client)) = (service, client) else {
        return error(
            StatusCode::BAD_REQUEST,
            "service and client: both are required (service=ID&client=ADDR:PORT)".to_string(),
        );
    };
    call(
        &app,
        &headers,
        Request::DeleteFlow {
            service,
            client,
            port,
        },
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/bgp", tag = "bgp", responses((status = 200, description = "The BGP speaker: enabled, drained, stopping, the VIPs wanted and announced, the sessions as BIRD reports them", body = Value)))]
async fn get_bgp(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Request::GetBgp).await
}

#[utoipa::path(patch, path = "/api/v1/bgp", tag = "bgp", request_body(content = Value, description = "{\"drained\": true} withdraws every VIP (forwarding goes on); false announces them again", content_type = "application/json"), security(("token" = [])), responses((status = 200, description = "Done; the speaker's state", body = Value), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 409, description = "No speaker runs ([bgp] is off)", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 422, description = "A field is wrong (the error names it)", body = ErrorBody)))]
async fn patch_bgp(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call_with_body(&app, &headers, body, |body| Request::PatchBgp { body }).await
}

#[utoipa::path(get, path = "/api/v1/timeouts", tag = "configuration", responses((status = 200, description = "The flow timeouts in seconds", body = Value)))]
async fn get_timeouts(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Request::GetTimeouts).await
}

#[utoipa::path(patch, path = "/api/v1/timeouts", tag = "configuration", request_body(content = Value, description = "A JSON merge patch of the timeouts: tcp_established, tcp_syn, tcp_fin, tcp_close, udp (seconds, at least 1)", content_type = "application/json"), security(("token" = [])), responses((status = 200, description = "Changed and live (saved in the state file, where they then win over the configuration file's)", body = Value), (status = 400, description = "Malformed JSON", body = ErrorBody), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 422, description = "A field is wrong (the error names it)", body = ErrorBody), (status = 503, description = "Applied and saved, but a worker did not take it up in time", body = ErrorBody)))]
async fn patch_timeouts(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call_with_body(&app, &headers, body, |body| Request::PatchTimeouts { body }).await
}

#[utoipa::path(post, path = "/api/v1/stats/zero", tag = "statistics", params(("service" = Option<String>, Query, description = "Only this service and its backends")), security(("token" = [])), responses((status = 204, description = "The packet, byte and new-flow counts of the services and backends count from zero (ipvsadm -Z)"), (status = 400, description = "A query parameter is not understood", body = ErrorBody), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 404, description = "No such service", body = ErrorBody)))]
async fn zero(State(app): State<App>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let mut service = None;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("service", v)) => service = Some(decode(v)),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{pair:?}: unknown query parameter (service=ID is the one)"),
                );
            }
        }
    }
    call(&app, &headers, Request::ZeroCounters { service }).await
}

#[utoipa::path(get, path = "/api/v1/services/{service}/lookup", tag = "services", params(("service" = String, Path, description = "Service id"), ("client" = String, Query, description = "The client's address and port: 198.18.2.1:40000, [2001:db8::1]:40000"), ("port" = Option<u16>, Query, description = "The VIP port, for a service of port 0 (every port)")), responses((status = 200, description = "The backend an existing flow uses, or the one a new flow would get now, and why", body = Value), (status = 400, description = "A query parameter is missing or not understood", body = ErrorBody), (status = 404, description = "No such service", body = ErrorBody), (status = 422, description = "The client is not of the vip's family, or the port is wrong", body = ErrorBody), (status = 503, description = "A worker did not answer in time", body = ErrorBody)))]
async fn lookup(
    State(app): State<App>,
    headers: HeaderMap,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let (mut client, mut port) = (None, None);
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let bad = |what: String| error(StatusCode::BAD_REQUEST, what);
        match pair.split_once('=') {
            Some(("client", v)) => {
                let v = v
                    .replace("%5B", "[")
                    .replace("%5D", "]")
                    .replace("%3A", ":");
                match v.parse::<std::net::SocketAddr>() {
                    Ok(a) => client = Some(a),
                    Err(_) => {
                        return bad(format!(
                            "client: {v:?} is not an address and port (198.18.2.1:40000, [2001:db8::1]:40000)"
                        ));
                    }
                }
            }
            Some(("port", v)) => match v.parse::<u16>() {
                Ok(p) => port = Some(p),
                Err(_) => return bad(format!("port: {v:?} is not a port")),
            },
            _ => {
                return bad(format!(
                    "{pair:?}: unknown query parameter (client=ADDR:PORT and port=N are the ones)"
                ));
            }
        }
    }
    let Some(client) = client else {
        return error(
            StatusCode::BAD_REQUEST,
            "client: is required (client=ADDR:PORT)".to_string(),
        );
    };
    call(
        &app,
        &headers,
        Request::Lookup {
            service,
            client,
            port,
        },
    )
    .await
}

#[utoipa::path(post, path = "/api/v1/reload", tag = "configuration", request_body(content = Value, description = "Optional: {\"services_from_file\": true} takes the configuration file's services too, replacing the state file's", content_type = "application/json"), security(("token" = [])), responses((status = 200, description = "Applied: the changes made and the configuration epoch", body = Value), (status = 401, description = "Token missing or wrong", body = ErrorBody), (status = 422, description = "Refused: the file is invalid or changes what needs a restart; nothing changed", body = ErrorBody), (status = 503, description = "Applied and saved, but a worker did not take it up in time", body = ErrorBody)))]
async fn reload(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    // The body is optional here: none means the defaults.
    let body = match &body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Value::Null),
        _ => json_body(body),
    };
    match body {
        Ok(body) => call(&app, &headers, Request::Reload { body }).await,
        Err(r) => r.into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "configuration", responses((status = 200, description = "The last changes and reloads (up to 1000), oldest first, as the log has them", body = Value)))]
async fn audit(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Request::Audit).await
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "observe", responses((status = 200, description = "Counters per port, action, drop reason, service and backend", body = Stats)))]
async fn stats(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Request::Stats).await
}

#[utoipa::path(get, path = "/metrics", tag = "observe", responses((status = 200, description = "The same counters in the Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Request::Metrics).await
}

#[utoipa::path(get, path = "/healthz", tag = "observe", responses(
    (status = 200, description = "Healthy: the control thread answers, every worker reports, every port's link is up and the last publish reached every worker", body = Value),
    (status = 503, description = "Unhealthy: `reasons` lists why (a worker that stopped reporting, a port whose link is down, a publish that failed)", body = Value)
))]
async fn health(State(app): State<App>, headers: HeaderMap) -> Response {
    call(&app, &headers, Request::Health).await
}

#[utoipa::path(get, path = "/api/v1/version", tag = "observe", responses((status = 200, description = "Version, git commit and DPDK version", body = Value)))]
async fn version(State(app): State<App>) -> Response {
    axum::Json((*app.version).clone()).into_response()
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "observe", responses((status = 200, description = "This document", body = Value)))]
async fn openapi() -> Response {
    axum::Json(super::openapi::document()).into_response()
}
