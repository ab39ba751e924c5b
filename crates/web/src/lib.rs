//! Nightjar in the browser: the client state machine (`nightjar-machine`) and the end-to-end
//! encryption engine (`nightjar-core`) compiled to wasm, driven by [`driver`] over `fetch` and
//! the WebSocket stream, with the profile in IndexedDB encrypted under non-extractable
//! WebCrypto keys ([`vault`]) and a Leptos UI ([`ui`]).

mod account;
pub mod bench;
// Leptos's `#[component]` makes each component's props type `pub`.
#[allow(unreachable_pub)]
mod call;
mod driver;
mod files;
mod history;
mod js;
mod link;
mod net;
mod rich;
// Leptos's `#[component]` makes each component's props type `pub`.
#[allow(unreachable_pub)]
mod ui;
mod ui_state;
mod uploads;
mod vault;

use wasm_bindgen::prelude::wasm_bindgen;

/// Mounts the app (called by the page's module script).
#[wasm_bindgen(start)]
pub fn start() {
    leptos::mount::mount_to_body(ui::App);
}

/// What verifying the key-transparency proofs of `vectors` (the text of
/// `crates/web/bench-data/kt_vectors.json`) costs in this browser: `[lookup µs, history µs,
/// lookup bytes, history bytes]`, set against the native figures of [`bench::kt_verify`].
#[wasm_bindgen(js_name = nightjarBenchKtVerify)]
pub fn bench_kt_verify(vectors: &str, iterations: u32) -> Result<Vec<f64>, String> {
    let performance = web_sys::window().and_then(|w| w.performance());
    let cost = bench::kt_verify(vectors, iterations, move || {
        performance
            .as_ref()
            .map_or_else(js_sys::Date::now, web_sys::Performance::now)
    })?;
    #[allow(clippy::cast_precision_loss)]
    Ok(vec![
        cost.lookup_us,
        cost.history_us,
        cost.lookup_bytes as f64,
        cost.history_bytes as f64,
    ])
}

/// The engine's cost per 1 KiB message (encrypt + decrypt) in this browser, in µs: for the
/// benchmark in `bench/`, set against the native figure of [`bench::roundtrip`].
#[wasm_bindgen(js_name = nightjarBenchRoundtrip)]
pub fn bench_roundtrip(iterations: u32) -> Result<f64, String> {
    let performance = web_sys::window().and_then(|w| w.performance());
    bench::roundtrip(iterations, move || {
        performance
            .as_ref()
            .map_or_else(js_sys::Date::now, web_sys::Performance::now)
    })
}
