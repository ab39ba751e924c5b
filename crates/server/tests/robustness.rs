//! End to end over HTTP: malformed and oversized input gets typed JSON errors and changes
//! nothing; health, metrics and the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nightjar_api::*;
use reqwest::{Method, StatusCode};

backend_tests!(
    bad_input_gets_typed_errors,
    metrics_and_openapi,
    run_stops_when_its_shutdown_future_completes,
);

async fn raw(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let mut request = server.http.request(method, server.url(path)).body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(c) = content_type {
        request = request.header("content-type", c);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, value)
}

async fn bad_input_gets_typed_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 0).await;
    let json = Some("application/json");
    let conv = "0123456789abcdef0123456789abcdef";
    let send_path = format!("/v1/conversations/{conv}/messages");

    // Malformed JSON, wrong shapes, missing content type, bad base64.
    for (body, content_type) in [
        (&b"{not json"[..], json),
        (&b"[]"[..], json),
        (&br#"{"username": 5}"#[..], json),
        (
            &br#"{"username":"bob","registration_request":"AQID"}"#[..],
            None,
        ),
        (
            &br#"{"username":"bob","registration_request":"+/+/"}"#[..],
            json,
        ),
        (
            &br#"{"username":"bob","registration_request":"AQID="}"#[..],
            json,
        ),
    ] {
        let (status, error) = raw(
            &server,
            Method::POST,
            "/v1/register/start",
            None,
            content_type,
            body.to_vec(),
        )
        .await;
        assert_eq!(
            (status, code(&error)),
            (StatusCode::BAD_REQUEST, "bad_request")
        );
    }
    // Well-formed JSON, garbage OPAQUE message.
    let (status, error) = server
        .post(
            "/v1/register/start",
            None,
            &RegisterStartRequest {
                username: "bob".into(),
                registration_request: B64(vec![7; 10]),
            },
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    // Oversized envelope (under the body limit) and oversized body.
    let big = send_request("big", EnvelopeKind::Application, 0, vec![0; 300 * 1024]);
    let (status, error) = server.post(&send_path, alice.token(), &big).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    let huge = send_request(
        "huge",
        EnvelopeKind::Application,
        0,
        vec![0; 3 * 1024 * 1024],
    );
    let (status, error) = server.post(&send_path, alice.token(), &huge).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );

    // Garbage MLS, bad ids in paths.
    let garbage = send_request("g", EnvelopeKind::Application, 0, vec![1, 2, 3, 4]);
    let (status, error) = server.post(&send_path, alice.token(), &garbage).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let (status, _) = server
        .post("/v1/conversations/XYZ/messages", alice.token(), &garbage)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, error) = server
        .request(Method::DELETE, "/v1/devices/not-hex", alice.token(), None)
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let (status, error) = server.get("/v1/messages?after=-1", alice.token()).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    // Tokens.
    for token in [Some("wrong"), None] {
        let (status, error) = server.get("/v1/devices", token).await;
        assert_eq!(
            (status, code(&error)),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
    }
    let (status, error) = raw(&server, Method::GET, "/v1/devices", None, None, Vec::new()).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );

    // Unknown routes, wrong methods, a plain GET on the stream.
    let (status, error) = server.get("/v1/nothing-here", None).await;
    assert_eq!((status, code(&error)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, error) = server
        .request(Method::DELETE, "/v1/messages", alice.token(), None)
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::METHOD_NOT_ALLOWED, "bad_request")
    );
    let (status, error) = server.get("/v1/stream", alice.token()).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    // A refused registration leaves nothing behind: the name is still free.
    let record = opaque_register(&server, "bob", PASSWORD).await.unwrap();
    let (status, _) = server
        .post(
            "/v1/register/finish",
            None,
            &RegisterFinishRequest {
                username: "bob".into(),
                registration_record: record,
                device_id: "0000000000000001".into(),
                device_list: B64(vec![1, 2, 3]),
                key_packages: vec![],
                last_resort_key_package: B64(vec![]),
            },
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let _bob = register(&server, "bob", 1).await;

    let health: Health = server.get_ok("/healthz", None).await;
    assert_eq!(health.status, "ok");
}

async fn metrics_and_openapi(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 0).await;
    let _: AccountResponse = server.get_ok("/v1/accounts/alice", alice.token()).await;
    let (status, _) = server.get("/v1/devices", Some("wrong-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Metrics have their own listener (issue 8, finding 11; see hostile_streams.rs).
    let response = server.http.get(metrics_url(&server)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for needle in [
        r#"nightjar_http_requests_total{method="GET",route="/v1/accounts/{username}",status="200"} 1"#,
        r#"nightjar_http_requests_total{method="GET",route="/v1/devices",status="401"} 1"#,
        "nightjar_http_request_duration_seconds_bucket",
        "nightjar_websocket_connections 0",
        "nightjar_queue_depth 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(!text.contains("alice"), "metrics must not name accounts");

    let doc: serde_json::Value = server.get_ok("/v1/openapi.json", None).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/conversations/{conversation_id}/messages"));
    assert!(paths.contains_key("/v1/stream"));
    assert!(doc["components"]["schemas"]["ApiError"].is_object());
}

async fn run_stops_when_its_shutdown_future_completes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let schema = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(schema().await),
    };
    let config = nightjar_server::ServerConfig {
        data_dir: dir.path().to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: schema.as_ref().map(|s| s.url.clone()),
        ..nightjar_server::ServerConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nightjar_server::run(config, async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!server.is_finished());
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(
        dir.path().join("nightjar.db").exists(),
        backend == Backend::Sqlite
    );
}

#[tokio::test]
async fn unusable_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = |database: Option<&str>, nats: Option<&str>| nightjar_server::ServerConfig {
        data_dir: dir.path().to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database.map(Into::into),
        nats_url: nats.map(Into::into),
        ..nightjar_server::ServerConfig::default()
    };
    // An unsupported database, and NATS without a shared database: configuration errors.
    for config in [
        config(Some("mysql://localhost/nightjar"), None),
        config(None, Some("nats://127.0.0.1:4222")),
    ] {
        assert!(matches!(
            nightjar_server::start(config).await,
            Err(nightjar_server::ServerError::Config(_))
        ));
    }
    // A PostgreSQL server that is not there: an error, not a panic or a hang.
    let unreachable = config(Some("postgres://nobody@127.0.0.1:1/nightjar"), None);
    assert!(nightjar_server::start(unreachable).await.is_err());
}
