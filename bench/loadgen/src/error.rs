//! The generator's one error type: what went wrong, in words an operator can act on.

use nightjar_api::ApiError;

/// Why a step of the generator failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The server answered a request with a refusal.
    #[error("{what}: HTTP {status}: {body}")]
    Refused {
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The error body (typed when the server sent one).
        body: Box<ApiErrorOrText>,
    },
    /// The request did not get an answer (connection refused, reset, timeout).
    #[error("{what}: no answer ({why})")]
    NoAnswer {
        /// The request.
        what: String,
        /// What happened instead.
        why: &'static str,
    },
    /// A WebSocket could not be opened.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// Local file or socket trouble.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The MLS engine refused a setup step.
    #[error("engine: {0}")]
    Engine(#[from] nightjar_core::Error),
    /// A JSON body or the state file did not parse.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// OPAQUE failed on the client side.
    #[error("OPAQUE: {0}")]
    Opaque(String),
    /// The server binary failed.
    #[error("server: {0}")]
    Server(#[from] nightjar_server::ServerError),
    /// Anything else, explained.
    #[error("{0}")]
    Other(String),
}

/// An error body: typed if it parsed as an [`ApiError`], raw text otherwise.
#[derive(Debug)]
pub(crate) enum ApiErrorOrText {
    /// The server's typed refusal.
    Api(ApiError),
    /// Whatever else came back.
    Text(String),
}

impl std::fmt::Display for ApiErrorOrText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Api(e) => write!(f, "{e}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

impl Error {
    /// An [`Error::Other`] from anything printable.
    pub(crate) fn other(why: impl Into<String>) -> Self {
        Self::Other(why.into())
    }
}

/// Results of the generator.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
