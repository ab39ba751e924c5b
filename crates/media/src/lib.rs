//! End-to-end encryption of call media: SFrame (RFC 9605) over each encoded audio and video
//! frame, below WebRTC's hop-by-hop DTLS-SRTP, so a TURN relay or the forwarding unit carries
//! frames it cannot read or alter.
//!
//! The framing and the cryptography are the `sframe` crate's (suite AES_128_GCM_SHA256_128);
//! this crate only decides which key a frame uses and which bytes stay readable:
//! - **Keys** follow RFC 9605 section 5.2: every member of the conversation's MLS epoch holds
//!   the call's base key (`nightjar_core::calls`), and a sender's key is SFrame's derivation
//!   from that base key under its key id, `(leaf index << 8) | (epoch mod 256)`. A receiver
//!   derives a sender's key from the key id in the frame's header, for the epochs it holds
//!   (the newest [`EPOCHS_KEPT`]), so a member whose epoch moved on a moment earlier than
//!   another's still decrypts.
//! - **Readable prefix**: a VP8 frame keeps its payload header in the clear (10 bytes on a
//!   keyframe, 3 otherwise) so that packetizers, depacketizers and the forwarding unit still
//!   see keyframes and sizes. SFrame authenticates those bytes as metadata: changing them makes
//!   the frame fail. Audio frames are encrypted whole.
//! - **Replays** of a frame are refused per key id (a window of [`REPLAY_WINDOW`] frames, wide
//!   enough for audio and video frames of one sender arriving out of order).
//!
//! Audio and video of one device use one key, so they share one frame counter; a call has a
//! fresh base key (its id is the exporter's context), so a counter restarting with a call never
//! repeats a nonce.

use std::collections::{HashMap, VecDeque};

use sframe::CipherSuite;
use sframe::frame::validation::{ReplayAttackProtectionStore, Tolerance};
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::header::KeyId;
use sframe::key::{DecryptionKey, EncryptionKey};
use sframe::mls::{MlsKeyId, MlsKeyIdBitRange};
use zeroize::Zeroizing;

#[cfg(target_arch = "wasm32")]
mod wasm;

/// The SFrame cipher suite of every call.
pub const SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;

/// Length of a call's base key (the suite's `Nk`).
pub const BASE_KEY_LEN: usize = 16;

/// Bits of the key id that carry the epoch (its low bits).
pub const EPOCH_BITS: u8 = 8;

/// Bits of the key id that carry the sender's leaf index.
pub const INDEX_BITS: u8 = 16;

/// How many epochs' base keys a receiver keeps (the newest ones).
pub const EPOCHS_KEPT: usize = 3;

/// How far behind the newest frame of a sender a frame may arrive and still be accepted.
pub const REPLAY_WINDOW: usize = 1024;

/// Receive keys derived at most; more means someone sends made-up key ids, and the cache
/// starts again.
const MAX_RECEIVE_KEYS: usize = 512;

/// Bytes a VP8 keyframe keeps readable: the payload header (3) and the keyframe header (7).
pub const VP8_KEYFRAME_CLEAR: usize = 10;

/// Bytes a VP8 interframe keeps readable: its payload header.
pub const VP8_DELTA_CLEAR: usize = 3;

/// Why a frame could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaError {
    /// No key to send with yet: the call's keys have not arrived.
    #[error("no sending key yet")]
    NoSendKey,
    /// The base key is not [`BASE_KEY_LEN`] bytes, or the leaf index does not fit the key id.
    #[error("invalid call key")]
    InvalidKey,
    /// The frame names an epoch this device holds no key for (too old, not yet known, or a
    /// sender outside the call).
    #[error("no key for this frame")]
    UnknownKey,
    /// The frame is not an SFrame ciphertext, was altered, or was encrypted under another key.
    #[error("the frame does not decrypt")]
    Undecryptable,
    /// The frame was seen before, or is too old.
    #[error("a replayed frame")]
    Replayed,
    /// A video frame shorter than its readable prefix (not a VP8 frame).
    #[error("the frame is shorter than its header")]
    TooShort,
}

/// What kind of frame is handed over, which sets the readable prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// An audio frame (encrypted whole).
    Audio,
    /// A VP8 keyframe.
    VideoKey,
    /// A VP8 interframe.
    VideoDelta,
}

impl FrameKind {
    /// How many leading bytes stay readable (authenticated, not encrypted).
    pub fn clear_bytes(self) -> usize {
        match self {
            FrameKind::Audio => 0,
            FrameKind::VideoKey => VP8_KEYFRAME_CLEAR,
            FrameKind::VideoDelta => VP8_DELTA_CLEAR,
        }
    }
}

/// Counts of what passed through, for the call's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Frames encrypted.
    pub encrypted: u64,
    /// Frames decrypted.
    pub decrypted: u64,
    /// Frames that could not be decrypted (no key, altered, replayed).
    pub failed: u64,
}

fn bit_range() -> MlsKeyIdBitRange {
    MlsKeyIdBitRange::new(EPOCH_BITS, INDEX_BITS)
}

/// The SFrame key id of `leaf_index` in `epoch`.
pub fn key_id(epoch: u64, leaf_index: u32) -> Result<KeyId, MediaError> {
    MlsKeyId::try_new(0u64, epoch, leaf_index, bit_range())
        .map(KeyId::from)
        .map_err(|_| MediaError::InvalidKey)
}

struct Sending {
    key: EncryptionKey,
    counter: MonotonicCounter,
}

struct BaseKey {
    epoch: u64,
    key: Zeroizing<[u8; BASE_KEY_LEN]>,
}

/// One device's SFrame state for one call: its sending key and frame counter, the base keys of
/// the epochs it can receive from, and the receive keys derived from them.
pub struct CallMedia {
    sending: Option<Sending>,
    epochs: VecDeque<BaseKey>,
    receive: HashMap<KeyId, DecryptionKey>,
    replay: ReplayAttackProtectionStore,
    stats: MediaStats,
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia")
            .field(
                "epochs",
                &self.epochs.iter().map(|b| b.epoch).collect::<Vec<_>>(),
            )
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for CallMedia {
    fn default() -> Self {
        Self::new()
    }
}

impl CallMedia {
    /// A state with no key: nothing is sent or received until [`Self::set_epoch`].
    pub fn new() -> Self {
        Self {
            sending: None,
            epochs: VecDeque::new(),
            receive: HashMap::new(),
            replay: ReplayAttackProtectionStore::new(Tolerance::new(REPLAY_WINDOW)),
            stats: MediaStats::default(),
        }
    }

    /// Takes the call's base key of `epoch` (this device being `leaf_index` in it): frames are
    /// sent under it from now on, and frames of every member of it can be received. Epochs
    /// older than the newest [`EPOCHS_KEPT`] are forgotten. Giving an epoch again changes
    /// nothing (its counter goes on).
    pub fn set_epoch(
        &mut self,
        epoch: u64,
        leaf_index: u32,
        base_key: &[u8],
    ) -> Result<(), MediaError> {
        let key: Zeroizing<[u8; BASE_KEY_LEN]> =
            Zeroizing::new(base_key.try_into().map_err(|_| MediaError::InvalidKey)?);
        let kid = key_id(epoch, leaf_index)?;
        if self.epochs.iter().any(|b| b.epoch == epoch) {
            if self.sending.as_ref().is_some_and(|s| s.key.key_id() == kid) {
                return Ok(());
            }
        } else {
            self.epochs.push_back(BaseKey { epoch, key });
            self.epochs.make_contiguous().sort_by_key(|b| b.epoch);
            while self.epochs.len() > EPOCHS_KEPT {
                self.epochs.pop_front();
            }
            let kept: Vec<u64> = self.epochs.iter().map(|b| b.epoch).collect();
            let layout = bit_range();
            let live = |kid: &KeyId| {
                let lsb = MlsKeyId::from_key_id(*kid, layout).epoch_lsb();
                kept.iter().any(|e| epoch_lsb(*e) == lsb)
            };
            self.receive.retain(|kid, _| live(kid));
            self.replay.retain(|kid| live(&kid));
        }
        let Some(newest) = self.epochs.back() else {
            return Err(MediaError::InvalidKey);
        };
        if newest.epoch == epoch {
            let key = EncryptionKey::derive_from(SUITE, kid, newest.key.as_slice())
                .map_err(|_| MediaError::InvalidKey)?;
            self.sending = Some(Sending {
                key,
                counter: MonotonicCounter::default(),
            });
        }
        Ok(())
    }

    /// Encrypts one encoded frame: its readable prefix, then the SFrame ciphertext of the rest.
    pub fn encrypt(&mut self, frame: &[u8], kind: FrameKind) -> Result<Vec<u8>, MediaError> {
        let sending = self.sending.as_mut().ok_or(MediaError::NoSendKey)?;
        let (clear, secret) = frame
            .split_at_checked(kind.clear_bytes())
            .ok_or(MediaError::TooShort)?;
        let media = MediaFrameView::try_with_meta_data(&mut sending.counter, secret, clear)
            .map_err(|_| MediaError::InvalidKey)?;
        let mut out = Vec::with_capacity(frame.len() + 32);
        out.extend_from_slice(clear);
        let mut buffer = Vec::new();
        let encrypted = media
            .encrypt_into(&sending.key, &mut buffer)
            .map_err(|_| MediaError::InvalidKey)?;
        out.extend_from_slice(encrypted.sframe_cipher_text());
        self.stats.encrypted += 1;
        Ok(out)
    }

    /// Decrypts one frame made by [`Self::encrypt`] on another member's device.
    pub fn decrypt(&mut self, data: &[u8], kind: FrameKind) -> Result<Vec<u8>, MediaError> {
        let result = self.decrypt_inner(data, kind);
        match result {
            Ok(_) => self.stats.decrypted += 1,
            Err(_) => self.stats.failed += 1,
        }
        result
    }

    fn decrypt_inner(&mut self, data: &[u8], kind: FrameKind) -> Result<Vec<u8>, MediaError> {
        let (clear, sealed) = data
            .split_at_checked(kind.clear_bytes())
            .ok_or(MediaError::Undecryptable)?;
        let view = EncryptedFrameView::try_with_meta_data(sealed, clear)
            .map_err(|_| MediaError::Undecryptable)?;
        let kid = view.header().key_id();
        self.receive_key(kid)?;
        let frame = view
            .validated_decrypt(&self.receive, &mut self.replay)
            .map_err(|e| match e {
                sframe::error::SframeError::FrameValidationFailed(_) => MediaError::Replayed,
                _ => MediaError::Undecryptable,
            })?;
        let mut out = Vec::with_capacity(data.len());
        out.extend_from_slice(clear);
        out.extend_from_slice(frame.payload());
        Ok(out)
    }

    /// Makes sure the receive key of `kid` is derived, if its epoch is held.
    fn receive_key(&mut self, kid: KeyId) -> Result<(), MediaError> {
        if self.receive.contains_key(&kid) {
            return Ok(());
        }
        let lsb = MlsKeyId::from_key_id(kid, bit_range()).epoch_lsb();
        let base = self
            .epochs
            .iter()
            .rev()
            .find(|b| epoch_lsb(b.epoch) == lsb)
            .ok_or(MediaError::UnknownKey)?;
        if MlsKeyId::from_key_id(kid, bit_range()).context_id() != 0 {
            return Err(MediaError::UnknownKey);
        }
        let key = DecryptionKey::derive_from(SUITE, kid, base.key.as_slice())
            .map_err(|_| MediaError::InvalidKey)?;
        if self.receive.len() >= MAX_RECEIVE_KEYS {
            self.receive.clear();
        }
        self.receive.insert(kid, key);
        Ok(())
    }

    /// What passed through so far.
    pub fn stats(&self) -> MediaStats {
        self.stats
    }
}

fn epoch_lsb(epoch: u64) -> u64 {
    epoch & ((1 << EPOCH_BITS) - 1)
}

#[cfg(test)]
mod tests;
