//! The web app at `/`: its built assets, read from the configured directory, with headers that
//! keep the page to its own origin (no inline script, no third-party code, not framed). API
//! paths that match no route get the API's JSON error, never a page.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use tower::ServiceExt as _;
use tower_http::services::ServeDir;

use crate::state::AppState;

/// Only the page's own origin: scripts (and compiling its wasm), styles, API calls and the
/// stream; nothing inline, nothing framed. Images may also be `blob:` URLs: the thumbnails of
/// attachments, which the page decrypts itself (object URLs are the page's own origin); and
/// media only `blob:` URLs: a video the user attaches, opened (never shown) to draw its
/// thumbnail.
const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' data: blob:; media-src blob:; connect-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const NOT_BUILT: &str = "<!doctype html><title>Nightjar</title>\
    <p>The web app is not built. Run <code>scripts/build-web.sh</code>, then start the server \
    with <code>--web-dir web/dist</code>.</p>";

fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Everything no API route matched: a file of the web app, else the API's 404.
pub(super) async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    let readable = request.method() == Method::GET || request.method() == Method::HEAD;
    if path.starts_with("/v1/") || path == "/v1" || !readable {
        return super::unknown_route().await.into_response();
    }
    let Some(dir) = state.config.web_dir.clone() else {
        if path != "/" {
            return super::unknown_route().await.into_response();
        }
        let page = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            Body::from(NOT_BUILT),
        );
        return secure(page.into_response());
    };
    match ServeDir::new(&dir).oneshot(request).await {
        Ok(response) if response.status() == StatusCode::NOT_FOUND => {
            super::unknown_route().await.into_response()
        }
        Ok(response) => secure(response.map(Body::new)),
        Err(never) => match never {},
    }
}
