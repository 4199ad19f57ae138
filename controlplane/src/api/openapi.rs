//! The OpenAPI 3 description of the API, generated from the handlers and types by utoipa.

use serde_json::Value;
use utoipa::OpenApi;

use super::stats::{
    ActionStats, BackendStats, FlowSample, FlowStats, MbufStats, PortStats, ServiceStats, Stats,
    Traffic, WorkerStats,
};
use crate::config::{BackendSpec, ServiceSpec};

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
        super::http::reload,
        super::http::audit,
        super::http::stats,
        super::http::metrics,
        super::http::health,
        super::http::version,
        super::http::openapi,
    ),
    components(schemas(
        ServiceSpec, BackendSpec, Stats, PortStats, ActionStats, FlowStats, MbufStats, Traffic, ServiceStats,
        BackendStats, FlowSample, WorkerStats, ErrorBody
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

/// The document `GET /api/v1/openapi.json` serves.
pub fn document() -> Value {
    serde_json::to_value(Doc::openapi()).expect("the OpenAPI document serialises")
}
