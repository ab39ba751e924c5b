//! The HTTP API: one router per resource, merged here with the OpenAPI document, the JSON
//! rejection handling, the fallbacks, the body limit and the request middleware.

mod accounts;
mod blobs;
mod calls;
mod consent;
mod devices;
mod handshakes;
mod key_packages;
mod messages;
mod ops;
mod reports;
mod sessions;
mod stream;
mod transparency;
mod web;

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
    modifiers(&BearerAuth, &Conformance),
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
        (name = "consent", description = "Message requests: accepting, blocking, reporting accounts and messages"),
        (name = "moderation", description = "Verified message reports, for the operator's moderators (a token of their own, not a session)"),
        (name = "calls", description = "Calls: short-lived credentials for the TURN relay, and joining a group call on the server's SFU"),
        (name = "blobs", description = "Attachments: an opaque store of encrypted blobs, uploaded in resumable parts and read by whoever holds a blob's capability"),
        (name = "operations", description = "Health and this document (metrics are served on a separate, loopback-by-default listener)"),
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
        components.add_security_scheme(
            "moderator",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Completes every operation with the refusals every route shares, so that the document lists
/// every status the server can answer with: a bearer route also answers 401 (no or bad
/// session) and 429 (the device's request rate); a route with a body or parameters answers 400
/// (malformed input); a route with a body answers 413 (over the body limit).
struct Conformance;

impl Modify for Conformance {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let refusal = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ApiError")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                let bearer = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = operation.request_body.is_some();
                let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut operation.responses.responses;
                let mut ensure = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| refusal(description).into());
                };
                if bearer {
                    ensure("401", "missing, unknown, expired or revoked session");
                    ensure(
                        "429",
                        "too many requests from this device; see `retry_after_ms`",
                    );
                }
                if has_body || has_params {
                    ensure("400", "malformed request");
                }
                if has_body {
                    ensure("413", "the body is larger than the server accepts");
                }
            }
        }
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
        .merge(sessions::router())
        .merge(consent::router())
        .merge(reports::router())
        .merge(transparency::router())
        .merge(calls::router())
        .merge(blobs::router())
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
        .fallback(web::fallback)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(state)
}

pub(crate) async fn unknown_route() -> Error {
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
            ("/v1/conversations/{conversation_id}/sealed", "post"),
            ("/v1/conversations/{conversation_id}/sealed-key", "put"),
            ("/v1/messages", "get"),
            ("/v1/messages/ack", "post"),
            ("/v1/stream", "get"),
            ("/v1/openapi.json", "get"),
            ("/healthz", "get"),
            ("/v1/kt/keys", "get"),
            ("/v1/kt/epochs/latest", "get"),
            ("/v1/kt/epochs/{epoch}", "get"),
            ("/v1/kt/epochs", "get"),
            ("/v1/kt/lookup/{username}", "get"),
            ("/v1/kt/history", "get"),
            ("/v1/device-login/start", "post"),
            ("/v1/device-login/finish", "post"),
            ("/v1/sessions", "get"),
            ("/v1/sessions/revoke-others", "post"),
            ("/v1/consent", "get"),
            ("/v1/consent/{username}", "put"),
            ("/v1/consent/{username}", "delete"),
            ("/v1/reports", "post"),
            ("/v1/reports/messages", "post"),
            ("/v1/moderation/reports", "get"),
            ("/v1/moderation/reports/{report_id}/reviewed", "post"),
            ("/v1/calls/turn", "get"),
            ("/v1/calls/{conversation_id}/sfu", "post"),
            ("/v1/blobs", "post"),
            ("/v1/blobs/usage", "get"),
            ("/v1/blobs/{blob}/parts/{index}", "put"),
            ("/v1/blobs/{blob}/upload", "get"),
            ("/v1/blobs/{blob}", "get"),
            ("/v1/blobs/{blob}/fetched", "post"),
        ] {
            assert!(
                paths.get(path).and_then(|p| p.get(method)).is_some(),
                "{method} {path} missing"
            );
        }
        assert!(
            paths.get("/metrics").is_none(),
            "metrics have their own listener"
        );
        assert_eq!(paths.len(), 47, "{:?}", paths.keys().collect::<Vec<_>>());
    }
}
