//! The web app at `/`: files from the configured directory with a strict content security
//! policy; nothing outside it, no API path shadowed, and a page that says how to build the app
//! when there is none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// Only the HTTP client is used here; the rest of the shared helpers serve the backend suites.
#[allow(unused_imports)]
mod common;

use std::time::Duration;

use common::*;

use reqwest::StatusCode;

async fn server(
    web_dir: Option<std::path::PathBuf>,
) -> (nightjar_server::RunningServer, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config =
        nightjar_server::ServerConfig::new(data.path(), "127.0.0.1:0".parse().unwrap());
    config.web_dir = web_dir;
    config.metrics_listen = None;
    config.shutdown_grace = Duration::from_secs(2);
    (nightjar_server::start(config).await.unwrap(), data)
}

#[tokio::test]
async fn the_app_is_served_from_its_directory_and_nothing_else_is() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "not for the web").unwrap();
    let web = outside.path().join("dist");
    std::fs::create_dir(&web).unwrap();
    std::fs::write(web.join("index.html"), "<!doctype html><title>app</title>").unwrap();
    std::fs::write(web.join("app.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let (running, _data) = server(Some(web)).await;
    let base = format!("http://{}", running.local_addr());
    let http = http_client();

    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.text().await.unwrap().contains("<title>app</title>"));

    let wasm = http.get(format!("{base}/app.wasm")).send().await.unwrap();
    assert_eq!(wasm.status(), StatusCode::OK);
    assert_eq!(wasm.headers()["content-type"], "application/wasm");

    // Outside the directory, unknown files, API paths and writes: the API's JSON 404.
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/missing.js",
        "/v1/nope",
        "/metrics",
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body = response.text().await.unwrap();
        assert!(!body.contains("not for the web"), "{path}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"], "not_found", "{path}");
    }
    let post = http
        .post(format!("{base}/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_a_built_app_the_root_says_how_to_build_it() {
    let (running, _data) = server(None).await;
    let base = format!("http://{}", running.local_addr());
    let http = http_client();
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("scripts/build-web.sh"));
    let other = http.get(format!("{base}/index.html")).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}
