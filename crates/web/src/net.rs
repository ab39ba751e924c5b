//! The web driver's transport: `fetch` for the HTTP API (same origin), mapping every outcome to
//! what the state machine expects ([`Response`] or [`Failure`]).

use nightjar_api::{ApiError, ErrorCode, InboxResponse};
use nightjar_machine::backoff::requested_wait;
use nightjar_machine::{Failure, Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::js;

/// Percent-encodes a path segment.
pub(crate) fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The error body of a refusal, or one made up from the status.
fn api_error(status: u16, bytes: &[u8], retry_after: Option<&str>) -> ApiError {
    let mut error = serde_json::from_slice::<ApiError>(bytes).unwrap_or_else(|_| {
        let code = match status {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            413 => ErrorCode::TooLarge,
            429 => ErrorCode::RateLimited,
            400..=499 => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, format!("HTTP {status}"))
    });
    if status == 429 {
        error.retry_after_ms = Some(requested_wait(retry_after, error.retry_after_ms));
    }
    error
}

/// One request to this origin: `headers` and a `body` as given (with its content type among
/// the headers), the session token as a bearer; the response whatever its status (read its
/// body, or [`refusal`] for a status outside 2xx).
pub(crate) async fn fetch(
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&JsValue>,
) -> Result<web_sys::Response, Failure> {
    let network = |e: JsValue| Failure::Network(js::describe(&e));
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let all = web_sys::Headers::new().map_err(network)?;
    if let Some(token) = token {
        all.set("authorization", &format!("Bearer {token}"))
            .map_err(network)?;
    }
    for (name, value) in headers {
        all.set(name, value).map_err(network)?;
    }
    if let Some(body) = body {
        init.set_body(body);
    }
    init.set_headers(&all);
    let request = web_sys::Request::new_with_str_and_init(path, &init).map_err(network)?;
    let window = js::window().map_err(Failure::Network)?;
    JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(network)?
        .dyn_into()
        .map_err(network)
}

/// The whole body of `response`.
pub(crate) async fn body(response: &web_sys::Response) -> Result<Vec<u8>, Failure> {
    let network = |e: JsValue| Failure::Network(js::describe(&e));
    let buffer = JsFuture::from(response.array_buffer().map_err(network)?)
        .await
        .map_err(network)?;
    Ok(js::bytes(&buffer))
}

/// The refusal a response outside 2xx stands for (its error body read).
pub(crate) async fn refusal(response: &web_sys::Response) -> Failure {
    let retry_after = response.headers().get("retry-after").ok().flatten();
    match body(response).await {
        Ok(bytes) => Failure::Refused(api_error(response.status(), &bytes, retry_after.as_deref())),
        Err(e) => e,
    }
}

/// One HTTP call; the body of a success.
pub(crate) async fn call(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<Vec<u8>, Failure> {
    let json = [("content-type", "application/json")];
    let (headers, body) = match body {
        Some(text) => (&json[..], Some(JsValue::from_str(&text))),
        None => (&[][..], None),
    };
    let response = fetch(method, path, token, headers, body.as_ref()).await?;
    if (200..300).contains(&response.status()) {
        self::body(&response).await
    } else {
        Err(refusal(&response).await)
    }
}

/// A JSON call.
pub(crate) async fn json<T: DeserializeOwned>(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&impl Serialize>,
) -> Result<T, Failure> {
    let body = match body {
        Some(b) => Some(serde_json::to_string(b).map_err(|e| Failure::Network(e.to_string()))?),
        None => None,
    };
    let bytes = call(method, path, token, body).await?;
    let bytes = if bytes.is_empty() {
        b"null".to_vec()
    } else {
        bytes
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| Failure::Network(format!("unexpected answer to {path}: {e}")))
}

/// Carries one of the machine's requests.
pub(crate) async fn execute(token: Option<&str>, request: Request) -> Result<Response, Failure> {
    match request {
        Request::Send { conversation, body } => {
            let path = format!("/v1/conversations/{conversation}/messages");
            json("POST", &path, token, Some(&body))
                .await
                .map(Response::Sent)
        }
        Request::SealedSend { conversation, body } => {
            // No session token: the server learns only that a member sent it.
            let path = format!("/v1/conversations/{conversation}/sealed");
            json("POST", &path, None, Some(&body))
                .await
                .map(Response::Sent)
        }
        Request::RegisterSealedKey { conversation, body } => {
            let path = format!("/v1/conversations/{conversation}/sealed-key");
            let body = serde_json::to_string(&body).map_err(|e| Failure::Network(e.to_string()))?;
            call("PUT", &path, token, Some(body))
                .await
                .map(|_| Response::Registered)
        }
        Request::Inbox { after, limit } => {
            let path = format!("/v1/messages?after={after}&limit={limit}");
            json::<InboxResponse>("GET", &path, token, None::<&()>)
                .await
                .map(|r| Response::Inbox(r.envelopes))
        }
        Request::Ack { ids } => {
            let body = nightjar_api::AckRequest { ids };
            let body = serde_json::to_string(&body).map_err(|e| Failure::Network(e.to_string()))?;
            call("POST", "/v1/messages/ack", token, Some(body))
                .await
                .map(|_| Response::Acked)
        }
        Request::Account { username } => {
            let path = format!("/v1/accounts/{}", segment(&username));
            json("GET", &path, token, None::<&()>)
                .await
                .map(Response::Account)
        }
        Request::OwnHistory => json("GET", "/v1/kt/history", token, None::<&()>)
            .await
            .map(Response::OwnHistory),
        Request::DirectoryRoot { epoch } => {
            json("GET", &format!("/v1/kt/epochs/{epoch}"), token, None::<&()>)
                .await
                .map(Response::DirectoryRoot)
        }
        Request::DirectoryEpochs { after, limit } => {
            let path = format!("/v1/kt/epochs?after={after}&limit={limit}");
            json("GET", &path, token, None::<&()>)
                .await
                .map(Response::DirectoryEpochs)
        }
        Request::ClaimKeyPackages { username } => {
            let path = format!("/v1/accounts/{}/key-packages/claim", segment(&username));
            json("POST", &path, token, None::<&()>)
                .await
                .map(Response::Claimed)
        }
    }
}
