//! Operations: health and the OpenAPI document. Prometheus metrics are not here: they are
//! served on a listener of their own ([`crate::metrics::router`]).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use nightjar_api::Health;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(openapi))
}

/// `ok` when the database answers, else 503.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "the database does not answer", body = Health),
    ))]
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if state.store.healthy().await {
        (
            StatusCode::OK,
            axum::Json(Health {
                status: "ok".into(),
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Health {
                status: "unavailable".into(),
            }),
        )
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi_json(),
    )
}
