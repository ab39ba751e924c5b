//! The HTTP API: one router per resource, merged here with the OpenAPI document, the JSON
//! rejection handling, the fallbacks, the body limit and the request middleware.

mod accounts;
mod devices;
mod handshakes;
mod key_packages;
mod messages;
mod ops;
mod stream;

use std::any::Any;
use std::sync::OnceLock;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
use nightjar_api::{ApiError, ErrorCode};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::error::{Error, api_error_response};
use crate::state::AppState;

/// A JSON body whose rejections are typed [`ApiError`]s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub(crate) struct Json<T>(pub(crate) T);

/// A raw body whose rejections are typed [`ApiError`]s.
#[derive(Debug)]
pub(crate) struct Body(pub(crate) axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Error;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Error> {
        Ok(Self(axum::body::Bytes::from_request(request, state).await?))
    }
}

/// A path parameter whose rejections are typed [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub(crate) struct Path<T>(pub(crate) T);

/// A query string whose rejections are typed [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub(crate) struct Query<T>(pub(crate) T);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Nightjar",
        description = "End-to-end encrypted messaging. The server stores and routes only \
                       ciphertext, public keys and OPAQUE password files. Binary fields are \
                       base64url without padding.",
    ),
    modifiers(&BearerAuth),
    components(schemas(
        nightjar_api::ApiError,
        nightjar_api::ErrorCode,
        nightjar_api::ServerFrame,
        nightjar_api::ClientFrame
    )),
    tags(
        (name = "accounts", description = "Registration and login (OPAQUE), sessions, lookup"),
        (name = "devices", description = "Devices, linking and the signed device list"),
        (name = "key-packages", description = "The MLS key-package directory"),
        (name = "messages", description = "Delivery queues and the push stream"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every route, with its OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(accounts::router())
        .merge(devices::router())
        .merge(key_packages::router())
        .merge(messages::router())
        .merge(stream::router())
        .merge(ops::router())
}

/// The OpenAPI document as JSON, built once.
pub(crate) fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        routes()
            .into_openapi()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".to_owned())
    })
}

/// The complete application.
pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    let (router, _) = routes().split_for_parts();
    router
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(state)
}

async fn unknown_route() -> Error {
    Error::not_found("no such route")
}

async fn wrong_method() -> Response {
    let mut response = api_error_response(ApiError::new(
        ErrorCode::BadRequest,
        "this route does not accept that method",
    ));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

fn panicked(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Error::Internal("handler panicked").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/v1/register/start", "post"),
            ("/v1/register/finish", "post"),
            ("/v1/login/start", "post"),
            ("/v1/login/finish", "post"),
            ("/v1/logout", "post"),
            ("/v1/accounts/{username}", "get"),
            ("/v1/accounts/{username}/key-packages/claim", "post"),
            ("/v1/devices", "get"),
            ("/v1/devices/pending", "get"),
            ("/v1/devices/approve", "post"),
            ("/v1/devices/link", "get"),
            ("/v1/devices/{device_id}", "delete"),
            ("/v1/device-list", "put"),
            ("/v1/key-packages", "post"),
            ("/v1/key-packages/count", "get"),
            ("/v1/conversations/{conversation_id}/messages", "post"),
            ("/v1/messages", "get"),
            ("/v1/messages/ack", "post"),
            ("/v1/stream", "get"),
            ("/v1/openapi.json", "get"),
            ("/healthz", "get"),
            ("/metrics", "get"),
        ] {
            assert!(
                paths.get(path).and_then(|p| p.get(method)).is_some(),
                "{method} {path} missing"
            );
        }
        assert_eq!(paths.len(), 22, "{:?}", paths.keys().collect::<Vec<_>>());
    }
}
