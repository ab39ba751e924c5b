//! Nightjar in the browser: the client state machine (`nightjar-machine`) and the end-to-end
//! encryption engine (`nightjar-core`) compiled to wasm, driven by [`driver`] over `fetch` and
//! the WebSocket stream, with the profile in IndexedDB encrypted under non-extractable
//! WebCrypto keys ([`vault`]) and a Leptos UI ([`ui`]).

mod account;
pub mod bench;
mod driver;
mod js;
mod link;
mod net;
// Leptos's `#[component]` makes each component's props type `pub`.
#[allow(unreachable_pub)]
mod ui;
mod ui_state;
mod vault;

use wasm_bindgen::prelude::wasm_bindgen;

/// Mounts the app (called by the page's module script).
#[wasm_bindgen(start)]
pub fn start() {
    leptos::mount::mount_to_body(ui::App);
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
