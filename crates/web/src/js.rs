//! Small helpers over the browser's JavaScript objects.

use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast as _, JsValue};

/// A plain object with these properties.
pub(crate) fn object(properties: &[(&str, JsValue)]) -> Object {
    let o = Object::new();
    for (k, v) in properties {
        // Setting a property of a fresh plain object cannot fail.
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o
}

/// The bytes of an `ArrayBuffer` or typed array.
pub(crate) fn bytes(value: &JsValue) -> Vec<u8> {
    Uint8Array::new(value).to_vec()
}

/// A `Uint8Array` holding a copy of `data`.
pub(crate) fn u8_array(data: &[u8]) -> Uint8Array {
    Uint8Array::from(data)
}

/// The text of a JavaScript error or exception.
pub(crate) fn describe(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    if let Some(ex) = e.dyn_ref::<web_sys::DomException>() {
        return ex.message();
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// Milliseconds since the Unix epoch, from the browser's clock.
pub(crate) fn now_ms() -> u64 {
    let ms = js_sys::Date::now();
    if ms.is_finite() && ms > 0.0 {
        // Integral milliseconds far below 2^53.
        ms as u64
    } else {
        0
    }
}

/// The browser window.
pub(crate) fn window() -> Result<web_sys::Window, String> {
    web_sys::window().ok_or_else(|| "no window".to_owned())
}
