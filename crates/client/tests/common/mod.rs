//! What the SDK's end-to-end tests share: client options that keep tests fast and off the
//! system keyring, an in-process server on a port the kernel picks, and registered accounts.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::path::Path;

use nightjar_client::{Client, ClientOptions, Password};
use nightjar_core::{EngineConfig, Suite};
use nightjar_server::{RunningServer, ServerConfig};

/// The classic suite (fast key generation) and no system keyring.
pub fn options() -> ClientOptions {
    ClientOptions {
        try_keyring: false,
        engine: EngineConfig {
            suite: Suite::Classic,
            ..EngineConfig::default()
        },
    }
}

/// Starts a server with `config`; returns it and its base URL.
pub async fn start(config: ServerConfig) -> (RunningServer, String) {
    let running = nightjar_server::start(config).await.unwrap();
    let url = format!("http://{}", running.local_addr());
    (running, url)
}

/// A new profile under `root` with a new account `name` (password `pw`) on `url`.
pub async fn account(root: &Path, url: &str, name: &str) -> Client {
    let mut c = Client::open(&root.join(name), options()).unwrap();
    c.register(url, name, &Password::new("pw".into()))
        .await
        .unwrap();
    c
}
