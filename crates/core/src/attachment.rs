//! The attachment cipher: a file encrypted once under its own key, as one blob the server
//! stores without being able to read it.
//!
//! # Construction
//!
//! - **Key.** Every file gets a fresh random 32-byte [`AttachmentKey`]. HKDF-SHA256 (no salt)
//!   derives from it the ChaCha20-Poly1305 key (`info = "nightjar attachment v1 key"`) and the
//!   7-byte STREAM nonce prefix (`info = "nightjar attachment v1 nonce"`). The key travels only
//!   inside the end-to-end encrypted message ([`AttachmentPointer`]).
//! - **Padding.** The plaintext is padded with zero bytes to its Padmé length ([`padded_len`]):
//!   Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication with
//!   PURBs", PoPETs 2019 (4), §4. The server sees the padded length only: it leaks
//!   O(log log L) bits of the size instead of all of it, at a cost of at most 12 % (about 3 %
//!   past 1 MiB). The real size travels in the pointer; the opener checks that the padding is
//!   all zeros and that the blob is exactly as long as that size implies ([`ciphertext_len`]).
//! - **Chunks.** The padded plaintext is cut into chunks of [`CHUNK_SIZE`] bytes (the last one
//!   shorter, possibly empty: a zero-byte file is one empty chunk) and each is sealed with
//!   RustCrypto's STREAM construction (`aead::stream::StreamBE32` over ChaCha20-Poly1305,
//!   Hoang, Reyhanitabar, Rogaway and Vizár, "Online Authenticated-Encryption and its
//!   Nonce-Reuse Misuse-Resistance", CRYPTO 2015): the nonce is the prefix, the chunk's
//!   32-bit big-endian position and a last-chunk flag. Chunks cannot be reordered,
//!   duplicated or dropped, and the flag marks the final one, so a blob cut short is refused.
//!   The associated data of every chunk is `"nightjar attachment v1" || size` (u64, big
//!   endian), binding the chunks to the size in the pointer.
//! - **Digest.** SHA-256 of the whole ciphertext, in the pointer: a downloader checks it
//!   before decrypting (and the opener checks it again).
//!
//! A sealed chunk is [`CIPHER_CHUNK_SIZE`] bytes (the plaintext chunk and a 16-byte tag), so
//! ciphertext chunk `i` starts at byte `i * CIPHER_CHUNK_SIZE`.
//!
//! # Resumable uploads
//!
//! With a fixed key and position, STREAM is deterministic: chunk `i` is the same bytes however
//! often it is sealed. So an upload needs no ciphertext on disk. The blob store cuts the
//! ciphertext into parts of its own size (byte ranges that need not fall on chunk boundaries);
//! to (re)send the ciphertext bytes `start..end`, an uploader asks [`range_source`] which
//! plaintext bytes those chunks cover, reads just those from the file, and [`seal_range`]
//! seals chunks `start / CIPHER_CHUNK_SIZE` to `ceil(end / CIPHER_CHUNK_SIZE)` (through
//! [`Sealer::at_chunk`]) and cuts out exactly `start..end`. At most one part and two chunks
//! are in memory; the digest comes from one streaming pass over the file first.
//!
//! Everything here is sans-IO: slices in, bytes out.

use std::fmt;
use std::ops::Range;

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
use chacha20poly1305::aead::{KeyInit, generic_array::GenericArray};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use crate::content::AttachmentKey;
#[cfg(doc)]
use crate::content::AttachmentPointer;

/// Plaintext bytes per chunk (64 KiB).
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Bytes the AEAD adds to every chunk.
pub const TAG_SIZE: usize = 16;

/// Ciphertext bytes per chunk: a plaintext chunk and its tag.
pub const CIPHER_CHUNK_SIZE: usize = CHUNK_SIZE + TAG_SIZE;

/// The largest plaintext the cipher takes (1 TiB): far below STREAM's 2^32 chunks.
pub const MAX_SIZE: u64 = 1 << 40;

const CHUNK: u64 = CHUNK_SIZE as u64;
const CIPHER_CHUNK: u64 = CIPHER_CHUNK_SIZE as u64;
const TAG: u64 = TAG_SIZE as u64;

const LABEL: &[u8] = b"nightjar attachment v1";
const KEY_INFO: &[u8] = b"nightjar attachment v1 key";
const NONCE_INFO: &[u8] = b"nightjar attachment v1 nonce";
/// The STREAM nonce prefix: ChaCha20-Poly1305's 12 bytes less the counter and the flag.
const NONCE_PREFIX: usize = 7;
const AAD_LEN: usize = LABEL.len() + 8;

type Stream = StreamBE32<ChaCha20Poly1305>;

/// Why an attachment could not be sealed or opened.
///
/// Variants carry no input, so an error can be logged without echoing what a peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// The ciphertext ended before its final chunk.
    #[error("the attachment is truncated")]
    Truncated,
    /// A chunk did not authenticate: altered, reordered, duplicated, cut at the wrong place,
    /// or sealed under another key or size.
    #[error("the attachment was altered or does not match its key")]
    Tampered,
    /// More bytes than the size implies (ciphertext to an opener, plaintext to a sealer), a
    /// sealer finished before all the plaintext came, or a chunk or range outside the blob.
    #[error("the attachment is not the length its size implies")]
    WrongLength,
    /// The padding after the real size is not all zeros.
    #[error("the attachment's padding is not zero")]
    BadPadding,
    /// The ciphertext's SHA-256 is not the digest in the pointer.
    #[error("the attachment does not match its digest")]
    DigestMismatch,
    /// The size is above [`MAX_SIZE`].
    #[error("the attachment is larger than the cipher takes")]
    TooLarge,
}

/// The Padmé length of `size` bytes (PURBs, §4): `size` rounded up so that only the top
/// `floor(log2(floor(log2 size))) + 1` bits of it may be non-zero.
pub fn padded_len(size: u64) -> u64 {
    if size < 2 {
        return size;
    }
    let e = u64::from(size.ilog2());
    let s = u64::from(e.ilog2()) + 1;
    let last_bits = e - s;
    let mask = (1u64 << last_bits) - 1;
    // Only overflows within 2^last_bits of u64::MAX, far above MAX_SIZE.
    size.saturating_add(mask) & !mask
}

/// How many chunks a plaintext of `size` bytes is sealed in (at least one).
pub fn chunk_count(size: u64) -> u64 {
    padded_len(size).div_ceil(CHUNK).max(1)
}

/// The exact length of the blob that a plaintext of `size` bytes seals to: its Padmé length
/// and a tag per chunk. `u64::MAX` (no blob is that long) for sizes above [`MAX_SIZE`].
pub fn ciphertext_len(size: u64) -> u64 {
    if size > MAX_SIZE {
        return u64::MAX;
    }
    padded_len(size) + chunk_count(size) * TAG
}

/// What the cipher needs of one blob: its stream, associated data and layout.
struct Setup {
    stream: Stream,
    aad: [u8; AAD_LEN],
    size: u64,
    padded: u64,
    chunks: u64,
}

impl Setup {
    fn new(key: &AttachmentKey, size: u64) -> Result<Self, AttachmentError> {
        if size > MAX_SIZE {
            return Err(AttachmentError::TooLarge);
        }
        let hkdf = Hkdf::<Sha256>::new(None, key.as_bytes());
        let mut aead_key = Zeroizing::new([0u8; 32]);
        let mut prefix = [0u8; NONCE_PREFIX];
        // 32 and 7 bytes are far below HKDF-SHA256's 8160-byte limit.
        if hkdf.expand(KEY_INFO, &mut aead_key[..]).is_err()
            || hkdf.expand(NONCE_INFO, &mut prefix).is_err()
        {
            return Err(AttachmentError::TooLarge);
        }
        let cipher = ChaCha20Poly1305::new(GenericArray::from_slice(&aead_key[..]));
        let stream = Stream::from_aead(cipher, GenericArray::from_slice(&prefix));
        let mut aad = [0u8; AAD_LEN];
        aad[..LABEL.len()].copy_from_slice(LABEL);
        aad[LABEL.len()..].copy_from_slice(&size.to_be_bytes());
        Ok(Self {
            stream,
            aad,
            size,
            padded: padded_len(size),
            chunks: chunk_count(size),
        })
    }

    /// The STREAM position of chunk `index` (below 2^32 for every size up to [`MAX_SIZE`]).
    fn position(index: u64) -> Result<u32, AttachmentError> {
        u32::try_from(index).map_err(|_| AttachmentError::TooLarge)
    }

    /// Plaintext bytes (padding included) in chunk `index`.
    fn chunk_len(&self, index: u64) -> u64 {
        let start = index * CHUNK;
        (self.padded.saturating_sub(start)).min(CHUNK)
    }

    fn is_last(&self, index: u64) -> bool {
        index + 1 == self.chunks
    }
}

/// Encrypts one attachment as a stream: push plaintext slices of any size, take back the
/// ciphertext of every chunk they complete, then [`Sealer::finish`]. Holds at most one chunk.
///
/// The final chunk is held until `finish` (it carries the last-chunk flag), and the zero
/// padding is added after the plaintext: by `finish`, or chunk by chunk with
/// [`Sealer::pad`] to keep memory flat when the padding is large (up to 64 MiB for a 2 GiB
/// file).
pub struct Sealer {
    setup: Setup,
    /// The chunk being filled.
    chunk: u64,
    /// Its plaintext so far (then, briefly, its ciphertext); capacity for a sealed chunk, so
    /// it never reallocates and leaves no copy behind.
    buf: Zeroizing<Vec<u8>>,
    hasher: Sha256,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("size", &self.setup.size)
            .field("chunk", &self.chunk)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for a plaintext of exactly `size` bytes, from its start.
    pub fn new(key: &AttachmentKey, size: u64) -> Result<Self, AttachmentError> {
        Self::at_chunk(key, size, 0)
    }

    /// A sealer that starts at chunk `index` (plaintext offset `index * CHUNK_SIZE`): its
    /// output is byte for byte the same as a sealer from the start produces from ciphertext
    /// offset `index * CIPHER_CHUNK_SIZE` on. Chunks past the plaintext are padding only: push
    /// nothing, [`Sealer::pad`] or [`Sealer::finish`].
    pub fn at_chunk(key: &AttachmentKey, size: u64, index: u64) -> Result<Self, AttachmentError> {
        let setup = Setup::new(key, size)?;
        if index >= setup.chunks {
            return Err(AttachmentError::WrongLength);
        }
        Ok(Self {
            setup,
            chunk: index,
            buf: Zeroizing::new(Vec::with_capacity(CIPHER_CHUNK_SIZE)),
            hasher: Sha256::new(),
        })
    }

    /// Where the next byte goes in the padded plaintext.
    fn offset(&self) -> u64 {
        self.chunk * CHUNK + self.buf.len() as u64
    }

    /// Plaintext bytes still expected before the padding.
    pub fn remaining_plaintext(&self) -> u64 {
        self.setup.size.saturating_sub(self.offset())
    }

    /// Padding bytes still to add (all of it once the plaintext is in).
    pub fn remaining_padding(&self) -> u64 {
        self.setup.padded - self.offset().max(self.setup.size)
    }

    /// Takes the next plaintext bytes; returns the ciphertext of the chunks they complete
    /// (never the final chunk, which [`Sealer::finish`] seals). More bytes than the size
    /// declared are refused (`WrongLength`) and change nothing.
    pub fn push(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, AttachmentError> {
        if plaintext.len() as u64 > self.remaining_plaintext() {
            return Err(AttachmentError::WrongLength);
        }
        let mut out = Vec::new();
        self.feed(Some(plaintext), plaintext.len(), &mut out)?;
        Ok(out)
    }

    /// Adds up to `max` bytes of the zero padding (once all the plaintext is in) and returns
    /// the ciphertext of the chunks that completes, as [`Sealer::push`] does.
    pub fn pad(&mut self, max: usize) -> Result<Vec<u8>, AttachmentError> {
        if self.remaining_plaintext() > 0 {
            return Err(AttachmentError::WrongLength);
        }
        let n = usize::try_from(self.remaining_padding()).map_or(max, |left| left.min(max));
        let mut out = Vec::new();
        self.feed(None, n, &mut out)?;
        Ok(out)
    }

    /// Adds what is left of the padding, seals the final chunk, and returns the remaining
    /// ciphertext and the SHA-256 of all the ciphertext this sealer produced: the blob's
    /// digest for a sealer from [`Sealer::new`]. `WrongLength` if plaintext is missing.
    pub fn finish(mut self) -> Result<(Vec<u8>, [u8; 32]), AttachmentError> {
        if self.remaining_plaintext() > 0 {
            return Err(AttachmentError::WrongLength);
        }
        let mut out = Vec::new();
        let padding =
            usize::try_from(self.remaining_padding()).map_err(|_| AttachmentError::TooLarge)?;
        self.feed(None, padding, &mut out)?;
        debug_assert!(self.setup.is_last(self.chunk));
        self.seal(true, &mut out)?;
        Ok((out, self.hasher.finalize().into()))
    }

    /// Appends `n` bytes (`bytes`, or zeros when `None`) to the chunks, sealing every chunk
    /// completed except the final one.
    fn feed(
        &mut self,
        mut bytes: Option<&[u8]>,
        mut n: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), AttachmentError> {
        while n > 0 {
            let room = CHUNK_SIZE - self.buf.len();
            let take = room.min(n);
            match bytes {
                Some(b) => {
                    let (now, rest) = b.split_at(take);
                    self.buf.extend_from_slice(now);
                    bytes = Some(rest);
                }
                None => {
                    let len = self.buf.len() + take;
                    self.buf.resize(len, 0);
                }
            }
            n -= take;
            if self.buf.len() == CHUNK_SIZE && !self.setup.is_last(self.chunk) {
                self.seal(false, out)?;
            }
        }
        Ok(())
    }

    fn seal(&mut self, last: bool, out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        let position = Setup::position(self.chunk)?;
        self.setup
            .stream
            .encrypt_in_place(position, last, &self.setup.aad, &mut *self.buf)
            .map_err(|_| AttachmentError::TooLarge)?;
        self.hasher.update(&self.buf[..]);
        out.extend_from_slice(&self.buf);
        self.buf.clear();
        self.chunk += 1;
        Ok(())
    }
}

/// Which plaintext re-creates a range of a blob's ciphertext: see [`range_source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSource {
    /// The first chunk the range touches.
    pub first_chunk: u64,
    /// One past the last chunk it touches.
    pub end_chunk: u64,
    /// The plaintext bytes (offsets in the file) those chunks hold; empty when they are all
    /// padding.
    pub plaintext: Range<u64>,
}

/// Which chunks hold the ciphertext bytes `range` of the blob sealed from `size` bytes, and
/// which plaintext bytes to read to seal them again ([`seal_range`]).
pub fn range_source(size: u64, range: Range<u64>) -> Result<RangeSource, AttachmentError> {
    let total = ciphertext_len(size);
    if size > MAX_SIZE {
        return Err(AttachmentError::TooLarge);
    }
    if range.start >= range.end || range.end > total {
        return Err(AttachmentError::WrongLength);
    }
    let first_chunk = range.start / CIPHER_CHUNK;
    let end_chunk = range.end.div_ceil(CIPHER_CHUNK);
    let start = (first_chunk * CHUNK).min(size);
    let end = (end_chunk * CHUNK).min(size);
    Ok(RangeSource {
        first_chunk,
        end_chunk,
        plaintext: start..end,
    })
}

/// The ciphertext bytes `range` of the blob sealed from `size` bytes under `key`, from the
/// plaintext [`range_source`] names (exactly those bytes of the file): what a sealer over the
/// whole file produces at those offsets, byte for byte.
pub fn seal_range(
    key: &AttachmentKey,
    size: u64,
    range: Range<u64>,
    plaintext: &[u8],
) -> Result<Vec<u8>, AttachmentError> {
    let source = range_source(size, range.clone())?;
    if plaintext.len() as u64 != source.plaintext.end - source.plaintext.start {
        return Err(AttachmentError::WrongLength);
    }
    let mut sealer = Sealer::at_chunk(key, size, source.first_chunk)?;
    let mut sealed = sealer.push(plaintext)?;
    if source.end_chunk == sealer.setup.chunks {
        let (rest, _) = sealer.finish()?;
        sealed.extend_from_slice(&rest);
    } else {
        // Padding up to the end of the last chunk asked for (that chunk is then sealed).
        let padded_end = (source.end_chunk * CHUNK).min(sealer.setup.padded);
        let padding = padded_end.saturating_sub(sealer.offset());
        if padding > 0 {
            let padding = usize::try_from(padding).map_err(|_| AttachmentError::TooLarge)?;
            sealed.extend_from_slice(&sealer.pad(padding)?);
        }
    }
    // Cut out the range in place: no second copy of a part.
    let skip = usize::try_from(range.start - source.first_chunk * CIPHER_CHUNK);
    let end = usize::try_from(range.end - source.first_chunk * CIPHER_CHUNK);
    match (skip, end) {
        (Ok(skip), Ok(end)) if end <= sealed.len() => {
            sealed.truncate(end);
            sealed.drain(..skip);
            Ok(sealed)
        }
        _ => Err(AttachmentError::WrongLength),
    }
}

/// Decrypts one attachment as a stream: push ciphertext slices of any size, take back the
/// plaintext of every chunk they complete (never the padding, never a byte past the size),
/// then [`Opener::finish`]. Holds at most one chunk.
///
/// Every chunk is authenticated before its plaintext is returned, but only `finish` proves
/// the blob complete: a caller writes the plaintext somewhere temporary and keeps it only once
/// `finish` succeeded. After an error the opener refuses everything.
pub struct Opener {
    setup: Setup,
    expected_digest: [u8; 32],
    total: u64,
    received: u64,
    chunk: u64,
    /// The current chunk's ciphertext (then, briefly, its plaintext).
    buf: Zeroizing<Vec<u8>>,
    hasher: Sha256,
    failed: Option<AttachmentError>,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("size", &self.setup.size)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for the blob of a `size`-byte plaintext whose ciphertext hashes to `digest`
    /// (both from the pointer).
    pub fn new(key: &AttachmentKey, size: u64, digest: [u8; 32]) -> Result<Self, AttachmentError> {
        let setup = Setup::new(key, size)?;
        Ok(Self {
            setup,
            expected_digest: digest,
            total: ciphertext_len(size),
            received: 0,
            chunk: 0,
            buf: Zeroizing::new(Vec::with_capacity(CIPHER_CHUNK_SIZE)),
            hasher: Sha256::new(),
            failed: None,
        })
    }

    /// Takes the next ciphertext bytes; returns the plaintext of the chunks they complete.
    pub fn push(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, AttachmentError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.push_inner(ciphertext);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    fn push_inner(&mut self, mut ciphertext: &[u8]) -> Result<Vec<u8>, AttachmentError> {
        if ciphertext.len() as u64 > self.total - self.received {
            return Err(AttachmentError::WrongLength);
        }
        self.received += ciphertext.len() as u64;
        self.hasher.update(ciphertext);
        let mut out = Vec::new();
        while !ciphertext.is_empty() {
            let want = usize::try_from(self.setup.chunk_len(self.chunk) + TAG)
                .map_err(|_| AttachmentError::TooLarge)?;
            let take = (want - self.buf.len()).min(ciphertext.len());
            let (now, rest) = ciphertext.split_at(take);
            self.buf.extend_from_slice(now);
            ciphertext = rest;
            if self.buf.len() == want {
                self.open_chunk(&mut out)?;
            }
        }
        Ok(out)
    }

    fn open_chunk(&mut self, out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        let last = self.setup.is_last(self.chunk);
        let position = Setup::position(self.chunk)?;
        self.setup
            .stream
            .decrypt_in_place(position, last, &self.setup.aad, &mut *self.buf)
            .map_err(|_| AttachmentError::Tampered)?;
        let start = self.chunk * CHUNK;
        let real = usize::try_from(self.setup.size.saturating_sub(start))
            .map_or(self.buf.len(), |n| n.min(self.buf.len()));
        let (plaintext, padding) = self.buf.split_at(real);
        if padding.iter().any(|&b| b != 0) {
            return Err(AttachmentError::BadPadding);
        }
        out.extend_from_slice(plaintext);
        self.buf.clear();
        self.chunk += 1;
        Ok(())
    }

    /// Checks that the whole blob came: every chunk up to the final one (with its flag),
    /// exactly the length the size implies, and the digest.
    pub fn finish(self) -> Result<(), AttachmentError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.received < self.total || self.chunk < self.setup.chunks {
            return Err(AttachmentError::Truncated);
        }
        let digest: [u8; 32] = self.hasher.finalize().into();
        if digest != self.expected_digest {
            return Err(AttachmentError::DigestMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn key(seed: u8) -> AttachmentKey {
        AttachmentKey::from_bytes([seed; 32])
    }

    fn plaintext(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 31 + 7) as u8).collect()
    }

    /// Seals `data` pushing it in slices of `step` bytes.
    fn seal(key: &AttachmentKey, data: &[u8], step: usize) -> (Vec<u8>, [u8; 32]) {
        let mut sealer = Sealer::new(key, data.len() as u64).unwrap();
        let mut out = Vec::new();
        for piece in data.chunks(step.max(1)) {
            out.extend(sealer.push(piece).unwrap());
        }
        let (rest, digest) = sealer.finish().unwrap();
        out.extend(rest);
        (out, digest)
    }

    fn open(
        key: &AttachmentKey,
        size: u64,
        digest: [u8; 32],
        ciphertext: &[u8],
        step: usize,
    ) -> Result<Vec<u8>, AttachmentError> {
        let mut opener = Opener::new(key, size, digest)?;
        let mut out = Vec::new();
        for piece in ciphertext.chunks(step.max(1)) {
            out.extend(opener.push(piece)?);
        }
        opener.finish()?;
        Ok(out)
    }

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    #[test]
    fn padme_matches_the_paper() {
        // Table values from the PURBs paper's definition, and its overhead bound.
        let cases = [
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 3),
            (8, 8),
            (9, 10),
            (100, 104),
            (1000, 1024),
            (65_535, 65_536),
            (65_537, 67_584),
            (1 << 20, 1 << 20),
            ((1 << 20) + 1, (1 << 20) + (1 << 15)),
            ((2 << 30) - 1, 2 << 30),
            ((2 << 30) + 1, (2 << 30) + (64 << 20)),
        ];
        for (size, padded) in cases {
            assert_eq!(padded_len(size), padded, "{size}");
        }
        for size in (1..200_000u64).step_by(97).chain([MAX_SIZE - 1, MAX_SIZE]) {
            let padded = padded_len(size);
            assert!(padded >= size && padded - size <= size / 8 + 1, "{size}");
            assert_eq!(padded_len(padded), padded, "{size}: idempotent");
        }
    }

    #[test]
    fn lengths_follow_the_layout() {
        assert_eq!(ciphertext_len(0), 16);
        assert_eq!(chunk_count(0), 1);
        assert_eq!(ciphertext_len(1), 17);
        assert_eq!(ciphertext_len(CHUNK), CIPHER_CHUNK);
        assert_eq!(chunk_count(CHUNK + 1), 2);
        assert_eq!(
            ciphertext_len(MAX_SIZE),
            MAX_SIZE + (MAX_SIZE / CHUNK) * TAG
        );
        assert_eq!(ciphertext_len(MAX_SIZE + 1), u64::MAX);
        assert_eq!(ciphertext_len(u64::MAX), u64::MAX);
        assert!(matches!(
            Sealer::new(&key(1), MAX_SIZE + 1),
            Err(AttachmentError::TooLarge)
        ));
        assert!(matches!(
            Opener::new(&key(1), u64::MAX, [0; 32]),
            Err(AttachmentError::TooLarge)
        ));
    }

    #[test]
    fn edge_sizes_round_trip() {
        for size in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE + 5,
        ] {
            let data = plaintext(size);
            let (sealed, digest) = seal(&key(1), &data, 1000);
            assert_eq!(sealed.len() as u64, ciphertext_len(size as u64), "{size}");
            assert_eq!(digest, sha256(&sealed));
            for step in [1, 777, CIPHER_CHUNK_SIZE, sealed.len()] {
                let opened = open(&key(1), size as u64, digest, &sealed, step);
                assert_eq!(opened.as_ref(), Ok(&data), "{size} {step}");
            }
        }
    }

    #[test]
    fn equal_keys_and_plaintexts_seal_alike_and_keys_differ() {
        let data = plaintext(5000);
        assert_eq!(seal(&key(1), &data, 10), seal(&key(1), &data, 4096));
        assert_ne!(seal(&key(1), &data, 10).0, seal(&key(2), &data, 10).0);
    }

    #[test]
    fn truncation_is_refused() {
        let size = 3 * CHUNK_SIZE + 100;
        let data = plaintext(size);
        let (sealed, digest) = seal(&key(1), &data, 4096);
        let chunks = chunk_count(size as u64) as usize;
        // Without the final chunk; cut in the middle of a chunk; one byte short.
        let cuts = [
            (chunks - 1) * CIPHER_CHUNK_SIZE,
            CIPHER_CHUNK_SIZE + 100,
            sealed.len() - 1,
            0,
        ];
        for cut in cuts {
            let opened = open(&key(1), size as u64, digest, &sealed[..cut], 4096);
            assert_eq!(opened, Err(AttachmentError::Truncated), "{cut}");
            // Even with the digest of the cut blob.
            let digest = sha256(&sealed[..cut]);
            let opened = open(&key(1), size as u64, digest, &sealed[..cut], 4096);
            assert_eq!(opened, Err(AttachmentError::Truncated), "{cut}");
        }
        // A blob cut at a chunk boundary, presented as a smaller file's whole blob: the
        // non-final chunk lacks the last-chunk flag (and was sealed for another size).
        let short = &sealed[..2 * CIPHER_CHUNK_SIZE];
        let opened = open(&key(1), 2 * CHUNK, sha256(short), short, 4096);
        assert_eq!(opened, Err(AttachmentError::Tampered));
        // More bytes than the size implies.
        let mut long = sealed.clone();
        long.push(0);
        let opened = open(&key(1), size as u64, sha256(&long), &long, 4096);
        assert_eq!(opened, Err(AttachmentError::WrongLength));
    }

    #[test]
    fn reordered_or_duplicated_chunks_are_refused() {
        let size = 4 * CHUNK_SIZE;
        let (sealed, _) = seal(&key(1), &plaintext(size), 4096);
        let chunk = |i: usize| &sealed[i * CIPHER_CHUNK_SIZE..(i + 1) * CIPHER_CHUNK_SIZE];
        let rest = &sealed[3 * CIPHER_CHUNK_SIZE..];
        let swapped = [chunk(1), chunk(0), chunk(2), rest].concat();
        let duplicated = [chunk(0), chunk(0), chunk(2), rest].concat();
        let replayed_tail = [chunk(0), chunk(1), chunk(1), rest].concat();
        for bad in [swapped, duplicated, replayed_tail] {
            assert_eq!(bad.len(), sealed.len());
            let opened = open(&key(1), size as u64, sha256(&bad), &bad, 1000);
            assert_eq!(opened, Err(AttachmentError::Tampered));
        }
    }

    #[test]
    fn wrong_key_size_or_digest_is_refused() {
        let data = plaintext(70_000);
        let (sealed, digest) = seal(&key(1), &data, 4096);
        let size = data.len() as u64;
        assert_eq!(
            open(&key(2), size, digest, &sealed, 4096),
            Err(AttachmentError::Tampered)
        );
        // Another size with the same padded length: the associated data differs.
        assert_eq!(padded_len(size - 1), padded_len(size));
        assert_eq!(
            open(&key(1), size - 1, digest, &sealed, 4096),
            Err(AttachmentError::Tampered)
        );
        let mut other = digest;
        other[0] ^= 1;
        assert_eq!(
            open(&key(1), size, other, &sealed, 4096),
            Err(AttachmentError::DigestMismatch)
        );
    }

    #[test]
    fn non_zero_padding_is_refused() {
        let size = 100u64;
        assert_eq!(padded_len(size), 104);
        let mut sealer = Sealer::new(&key(1), size).unwrap();
        let mut sealed = sealer.push(&plaintext(100)).unwrap();
        // Sneak non-zero padding in below the public API.
        sealer.feed(Some(&[0, 0, 1, 0]), 4, &mut sealed).unwrap();
        let (rest, digest) = sealer.finish().unwrap();
        sealed.extend(rest);
        assert_eq!(
            open(&key(1), size, digest, &sealed, 7),
            Err(AttachmentError::BadPadding)
        );
    }

    #[test]
    fn an_opener_stays_failed() {
        let data = plaintext(3 * CHUNK_SIZE);
        let (mut sealed, digest) = seal(&key(1), &data, 4096);
        sealed[10] ^= 1;
        let mut opener = Opener::new(&key(1), data.len() as u64, digest).unwrap();
        assert_eq!(
            opener.push(&sealed[..CIPHER_CHUNK_SIZE]),
            Err(AttachmentError::Tampered)
        );
        assert_eq!(
            opener.push(&sealed[CIPHER_CHUNK_SIZE..]),
            Err(AttachmentError::Tampered)
        );
        assert_eq!(opener.finish(), Err(AttachmentError::Tampered));
    }

    #[test]
    fn sealer_misuse_is_refused() {
        let mut sealer = Sealer::new(&key(1), 10).unwrap();
        assert_eq!(sealer.push(&[0; 11]), Err(AttachmentError::WrongLength));
        assert_eq!(sealer.pad(4), Err(AttachmentError::WrongLength));
        sealer.push(&[0; 4]).unwrap();
        assert!(matches!(
            Sealer::new(&key(1), 10).unwrap().finish(),
            Err(AttachmentError::WrongLength)
        ));
        assert_eq!(sealer.remaining_plaintext(), 6);
        assert!(Sealer::at_chunk(&key(1), 10, 1).is_err());
        assert!(range_source(10, 0..0).is_err());
        assert!(range_source(10, 0..27).is_err());
        assert!(seal_range(&key(1), 10, 0..26, &[0; 9]).is_err());
    }

    #[test]
    fn padding_can_be_sealed_chunk_by_chunk() {
        // 4 MiB + 1 pads to 4 MiB + 128 KiB: two chunks of padding.
        let size = (4 << 20) + 1;
        let data = plaintext(size);
        let (whole, digest) = seal(&key(3), &data, 1 << 16);
        let mut sealer = Sealer::new(&key(3), size as u64).unwrap();
        let mut out = sealer.push(&data).unwrap();
        assert_eq!(sealer.remaining_padding(), (128 << 10) - 1);
        while sealer.remaining_padding() > 0 {
            let piece = sealer.pad(CHUNK_SIZE).unwrap();
            assert!(piece.len() <= CIPHER_CHUNK_SIZE);
            out.extend(piece);
        }
        let (rest, same) = sealer.finish().unwrap();
        assert!(rest.len() <= CIPHER_CHUNK_SIZE);
        out.extend(rest);
        assert_eq!((out, same), (whole, digest));
    }

    #[test]
    fn debug_shows_no_secrets() {
        let sealer = Sealer::new(&key(0xab), 5).unwrap();
        let opener = Opener::new(&key(0xab), 5, [0; 32]).unwrap();
        let printed = format!("{sealer:?} {opener:?}");
        assert!(!printed.contains("171") && !printed.to_lowercase().contains("ab"));
    }

    fn arb_size() -> impl Strategy<Value = usize> {
        prop_oneof![
            0usize..300,
            Just(CHUNK_SIZE - 1),
            Just(CHUNK_SIZE),
            Just(CHUNK_SIZE + 1),
            0usize..(5 * CHUNK_SIZE),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trips_in_any_slicing(
            size in arb_size(),
            seed in any::<u8>(),
            push_step in 1usize..100_000,
            open_step in 1usize..100_000,
        ) {
            let data: Vec<u8> = plaintext(size).iter().map(|b| b ^ seed).collect();
            let (sealed, digest) = seal(&key(seed), &data, push_step);
            prop_assert_eq!(sealed.len() as u64, ciphertext_len(size as u64));
            let opened = open(&key(seed), size as u64, digest, &sealed, open_step);
            prop_assert_eq!(opened, Ok(data));
        }

        #[test]
        fn any_flipped_bit_is_refused(
            size in 0usize..(3 * CHUNK_SIZE),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let data = plaintext(size);
            let (mut sealed, digest) = seal(&key(9), &data, 5000);
            let at = at.index(sealed.len());
            sealed[at] ^= 1 << bit;
            // With the pointer's digest, and with a digest an attacker recomputed.
            prop_assert!(open(&key(9), size as u64, digest, &sealed, 3000).is_err());
            let rehashed = sha256(&sealed);
            prop_assert_eq!(
                open(&key(9), size as u64, rehashed, &sealed, 3000),
                Err(AttachmentError::Tampered)
            );
        }

        #[test]
        fn resumed_sealing_matches_the_stream(
            size in arb_size(),
            index in any::<prop::sample::Index>(),
        ) {
            let data = plaintext(size);
            let (whole, _) = seal(&key(4), &data, 4096);
            let chunk = index.index(chunk_count(size as u64) as usize) as u64;
            let mut sealer = Sealer::at_chunk(&key(4), size as u64, chunk).unwrap();
            let from = ((chunk * CHUNK) as usize).min(size);
            let mut out = sealer.push(&data[from..]).unwrap();
            out.extend(sealer.finish().unwrap().0);
            prop_assert_eq!(&out[..], &whole[(chunk * CIPHER_CHUNK) as usize..]);
        }

        #[test]
        fn sealed_ranges_match_the_stream(
            size in arb_size(),
            bounds in vec(any::<prop::sample::Index>(), 2),
        ) {
            let data = plaintext(size);
            let (whole, _) = seal(&key(5), &data, 4096);
            let mut a = bounds[0].index(whole.len());
            let mut b = bounds[1].index(whole.len()) + 1;
            if a >= b {
                (a, b) = (b - 1, a + 1);
            }
            let range = a as u64..b as u64;
            let source = range_source(size as u64, range.clone()).unwrap();
            let plain = &data[source.plaintext.start as usize..source.plaintext.end as usize];
            let sealed = seal_range(&key(5), size as u64, range, plain).unwrap();
            prop_assert_eq!(&sealed[..], &whole[a..b]);
        }

        #[test]
        fn parts_of_any_size_rebuild_the_blob(
            size in arb_size(),
            part_size in 1u64..200_000,
        ) {
            let data = plaintext(size);
            let (whole, _) = seal(&key(6), &data, 4096);
            let mut rebuilt = Vec::new();
            let mut start = 0;
            while start < whole.len() as u64 {
                let end = (start + part_size).min(whole.len() as u64);
                let source = range_source(size as u64, start..end).unwrap();
                let plain = &data[source.plaintext.start as usize..source.plaintext.end as usize];
                rebuilt.extend(seal_range(&key(6), size as u64, start..end, plain).unwrap());
                start = end;
            }
            prop_assert_eq!(rebuilt, whole);
        }
    }
}
