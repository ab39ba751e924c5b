//! HTTP: one keep-alive HTTP/1.1 connection pool without TLS (hyper), and a thin typed client
//! for the setup requests (registration, lookup, claims, commits).
//!
//! The generator uses hyper directly rather than reqwest: workspace feature unification can
//! switch on reqwest's rustls-without-provider mode (the client SDK uses it), which makes a
//! plain reqwest client panic at construction.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nightjar_api::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiErrorOrText, Error, Result};

/// How long one request may take before it counts as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The shared connection pool.
pub(crate) type Http = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive HTTP/1.1 pool keeping up to `pool_idle` idle connections per server.
pub(crate) fn http_client(pool_idle: usize) -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool_idle)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// An answer: status and body.
#[derive(Debug)]
pub(crate) struct Answer {
    /// HTTP status code.
    pub(crate) status: u16,
    /// The whole body.
    pub(crate) body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoAnswer {
    /// The connection could not be made.
    Connect,
    /// The request timed out.
    Timeout,
    /// The connection broke during the exchange.
    Transport,
}

impl NoAnswer {
    /// A short label for error counts.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Connect => "http_connect",
            Self::Timeout => "http_timeout",
            Self::Transport => "http_transport",
        }
    }
}

/// Sends one request with an optional bearer token and JSON body.
pub(crate) async fn exchange(
    http: &Http,
    method: http::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Bytes>,
) -> std::result::Result<Answer, NoAnswer> {
    let mut builder = http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|_| NoAnswer::Transport)?;
    let exchange = async {
        let response = http.request(request).await.map_err(|e| {
            if e.is_connect() {
                NoAnswer::Connect
            } else {
                NoAnswer::Transport
            }
        })?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| NoAnswer::Transport)?
            .to_bytes();
        Ok(Answer { status, body })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| NoAnswer::Timeout)?
}

/// One server's base URL and the shared pool.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    base: String,
    http: Http,
}

impl Api {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub(crate) fn new(base: &str, http: Http) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The shared pool.
    pub(crate) fn http(&self) -> &Http {
        &self.http
    }

    /// POSTs `body` as JSON and decodes a 2xx answer as `R`.
    pub(crate) async fn post<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &B,
    ) -> Result<R> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        let url = format!("{}{path}", self.base);
        let answer = exchange(&self.http, http::Method::POST, &url, token, Some(body)).await;
        decode(format!("POST {path}"), answer)
    }

    /// GETs `path` and decodes a 2xx answer as `R`.
    pub(crate) async fn get<R: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<R> {
        let url = format!("{}{path}", self.base);
        let answer = exchange(&self.http, http::Method::GET, &url, token, None).await;
        decode(format!("GET {path}"), answer)
    }
}

fn decode<R: DeserializeOwned>(
    what: String,
    answer: std::result::Result<Answer, NoAnswer>,
) -> Result<R> {
    let answer = answer.map_err(|e| Error::NoAnswer {
        what: what.clone(),
        why: e.label(),
    })?;
    if (200..300).contains(&answer.status) {
        return Ok(serde_json::from_slice(&answer.body)?);
    }
    let body = match serde_json::from_slice::<ApiError>(&answer.body) {
        Ok(e) => ApiErrorOrText::Api(e),
        Err(_) => ApiErrorOrText::Text(String::from_utf8_lossy(&answer.body).into_owned()),
    };
    Err(Error::Refused {
        what,
        status: answer.status,
        body: Box::new(body),
    })
}
