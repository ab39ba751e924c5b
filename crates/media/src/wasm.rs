//! The browser's face of [`CallMedia`]: what the SFrame worker (`web/sframe-worker.js`) calls
//! for every frame.

use wasm_bindgen::prelude::*;

use crate::{CallMedia, FrameKind, MediaError};

fn kind(code: u8) -> Result<FrameKind, JsError> {
    match code {
        0 => Ok(FrameKind::Audio),
        1 => Ok(FrameKind::VideoKey),
        2 => Ok(FrameKind::VideoDelta),
        _ => Err(JsError::new("unknown frame kind")),
    }
}

fn js(e: MediaError) -> JsError {
    JsError::new(&e.to_string())
}

/// One call's SFrame state in the worker.
#[wasm_bindgen]
pub struct SframeContext {
    media: CallMedia,
}

#[wasm_bindgen]
impl SframeContext {
    /// A context with no key yet.
    #[wasm_bindgen(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            media: CallMedia::new(),
        }
    }

    /// Takes the call's base key of `epoch` (an integer below 2^53), this device being
    /// `leaf_index` in it.
    #[wasm_bindgen(js_name = setEpoch)]
    pub fn set_epoch(
        &mut self,
        epoch: f64,
        leaf_index: u32,
        base_key: &[u8],
    ) -> Result<(), JsError> {
        if !(0.0..9_007_199_254_740_992.0).contains(&epoch) || epoch.fract() != 0.0 {
            return Err(JsError::new("bad epoch"));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let epoch = epoch as u64;
        self.media
            .set_epoch(epoch, leaf_index, base_key)
            .map_err(js)
    }

    /// Encrypts a frame (`kind`: 0 audio, 1 VP8 keyframe, 2 VP8 interframe).
    pub fn encrypt(&mut self, frame: &[u8], kind_code: u8) -> Result<Vec<u8>, JsError> {
        self.media.encrypt(frame, kind(kind_code)?).map_err(js)
    }

    /// Decrypts a frame (`kind` as for [`Self::encrypt`]).
    pub fn decrypt(&mut self, frame: &[u8], kind_code: u8) -> Result<Vec<u8>, JsError> {
        self.media.decrypt(frame, kind(kind_code)?).map_err(js)
    }
}
