//! The versioned plaintext that travels inside MLS application messages.
//!
//! A [`Message`] is what a sender encrypts with its MLS group and every other device decrypts:
//! an id, the sender's clock, the disappearing timer in force, and one [`Content`]. The same
//! codec encodes [`GroupMetadata`], the encrypted group name and avatar kept in the group context.
//!
//! # Wire format
//!
//! The encoding is the TLS presentation language (RFC 8446 §3) with the variable-length vectors
//! of MLS (RFC 9420 §2.1.2), as implemented by `tls_codec`: integers are big-endian, `opaque
//! x<V>` is a minimally encoded QUIC varint byte length followed by the bytes, `optional<T>` is a
//! `uint8` presence tag (0 or 1) followed by `T` when present, and a `bool` is a `uint8` that
//! must be 0 or 1. Strings are UTF-8 in an `opaque <V>`.
//!
//! ```text
//! struct {
//!     uint8 version = 1;
//!     opaque id[16];
//!     uint64 sent_at_ms;
//!     optional<uint32> expires_after_secs;
//!     uint16 content_type;
//!     opaque body<V>;              // the content type's own struct, below
//! } Message;
//!
//! struct {
//!     uint8 version = 2;           // version 2: what the engine encrypts (`Plaintext`)
//!     uint64 seq;                  // the sending device's sequence number, from 1
//!     opaque id[16];               // ... then every field of version 1 after `version`
//!     uint64 sent_at_ms;
//!     optional<uint32> expires_after_secs;
//!     uint16 content_type;
//!     opaque body<V>;
//! } Plaintext;
//!
//! struct {
//!     uint8 version = 3;           // version 3: sequence number and sender state
//!     uint64 seq;
//!     uint64 list_version;         // the sender's account device-list version (`SenderState`)
//!     optional<DirectoryView> directory;
//!     opaque id[16];               // ... then every field of version 1 after `version`
//!     uint64 sent_at_ms;
//!     optional<uint32> expires_after_secs;
//!     uint16 content_type;
//!     opaque body<V>;
//! } Plaintext;
//!
//! struct {
//!     uint8 version = 4;           // version 4: what the engine encrypts now
//!     uint64 seq;
//!     uint64 list_version;
//!     optional<DirectoryView> directory;
//!     opaque franking_key[32];     // opens the franking commitment (`crate::franking`)
//!     opaque franking_signature[64]; // the sending device's signature of the commitment
//!     opaque id[16];               // ... then every field of version 1 after `version`
//!     uint64 sent_at_ms;
//!     optional<uint32> expires_after_secs;
//!     uint16 content_type;
//!     opaque body<V>;
//! } Plaintext;
//!
//! struct {
//!     uint64 epoch;                // the newest key-transparency root the sender verified
//!     opaque root[32];
//! } DirectoryView;
//!
//! struct {
//!     uint8 version = 1;
//!     opaque name<V>;
//!     optional<AttachmentPointer> avatar;
//! } GroupMetadata;
//!
//! struct {
//!     opaque media_type<V>;        // of the thumbnail itself, e.g. image/jpeg
//!     uint32 width;                // in pixels
//!     uint32 height;
//!     opaque data<V>;              // at most MAX_THUMBNAIL_BYTES
//! } Thumbnail;
//! ```
//!
//! An attachment's body (content type 8, and a group's avatar) is the pointer of
//! [`crate::attachment`]: the blob's id, its key, the SHA-256 of its ciphertext and the real
//! plaintext size, then what the sender says about the file and, for pictures, a small
//! thumbnail carried inline, so a receiver can show it before (or without) downloading.
//!
//! | content_type | variant | body |
//! | --- | --- | --- |
//! | 1 | `Text` | `opaque body<V>` |
//! | 2 | `Reply` | `opaque in_reply_to[16]; opaque body<V>` |
//! | 3 | `Reaction` | `opaque target[16]; opaque emoji<V>; bool remove` |
//! | 4 | `Edit` | `opaque target[16]; opaque body<V>` |
//! | 5 | `Delete` | `opaque target[16]` |
//! | 6 | `ReadReceipt` | `opaque message_ids<V>` (concatenated 16-byte ids) |
//! | 7 | `Typing` | `bool active` |
//! | 8 | `Attachment` | `opaque blob_id<V>; opaque key[32]; opaque digest[32]; uint64 size; opaque media_type<V>; optional<opaque file_name<V>>; optional<opaque caption<V>>; optional<Thumbnail> thumbnail` |
//! | 9 | `DisappearingTimer` | `uint32 seconds` |
//! | 10 | `Call` | `opaque call_id[16]; uint8 signal; ...` where signal 1 = offer (`opaque sdp<V>; bool video`), 2 = answer (`opaque sdp<V>`), 3 = ICE candidate (`opaque candidate<V>; optional<opaque sdp_mid<V>>; optional<uint16 sdp_m_line_index>`), 4 = ringing, 5 = busy, 6 = hangup, 7 = decline, 8 = join a group call (`bool video`), 9 = leave it |
//! | 11 | `DeliveryReceipt` | `opaque message_ids<V>` (concatenated 16-byte ids) |
//! | other | `Unknown` | kept as opaque bytes |
//!
//! # Why TLS encoding
//!
//! It is compact (no field tags or names on the wire) and canonical: every value has exactly one
//! encoding, so decoding then encoding reproduces the input byte for byte, which keeps unknown
//! content intact when it is stored or forwarded. It is already in the dependency tree through
//! openmls, so it adds no code to audit, and the schema is small enough that a self-describing
//! format (CBOR) or a schema compiler (protobuf) would buy nothing. Forward compatibility comes
//! from the `content_type` + length framing: a client that does not know a content type reports
//! it as [`Content::Unknown`] instead of failing, and a new field in a known type means a new
//! content type or a new `version`.
//!
//! # Decoding rules
//!
//! Decoding never panics and never allocates more than the input holds. Input larger than
//! [`MAX_MESSAGE_BYTES`] (plus the 8-byte sequence number in version 2), a version other than
//! [`CONTENT_VERSION`] ([`Message`], [`GroupMetadata`]) or [`CONTENT_VERSION`] and
//! [`SEQUENCED_VERSION`] ([`Plaintext`]), a known content type whose body is malformed, and
//! bytes left over after a message or inside a body are all errors.
//!
//! # Versions
//!
//! Version 2 exists only for [`Plaintext`], the unit the engine encrypts: it inserts the
//! sender's sequence number after the version byte so receivers can drop duplicates and report
//! gaps ([`crate::sequence`]). Version 1 content from older senders still decodes (without a
//! number). [`Message::encode`] stays version 1, so stored and queued messages keep their bytes.
//!
//! Version 3 adds the sender's [`SenderState`]: the version of its account's device list and
//! the newest key-transparency root it verified. Inside the encryption, so only members see
//! them; a receiver that holds an older list of the sender's account fetches the newer one
//! (the server cannot keep serving a stale list unnoticed), and one that verified another
//! root for the same epoch has caught the directory showing two views (a fork).
//!
//! Version 4 adds the message's franking opening ([`crate::franking::Opening`]): the fresh key
//! that opens the commitment the sender put beside the ciphertext, and the sending device's
//! signature of that commitment, so that a recipient can report the message with proof of
//! who sent exactly this content. The commitment covers [`Message::encode`] (version 1) of
//! the message, which decoding and encoding reproduce byte for byte.

use std::borrow::Cow;
use std::fmt;

use tls_codec::{DeserializeBytes, Size, TlsVarInt};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::franking::{FrankingKey, Opening};

/// The content format version this module writes; decoding rejects every other version.
pub const CONTENT_VERSION: u8 = 1;

/// The largest encoded [`Message`] or [`GroupMetadata`] that decoding accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The content version of a [`Plaintext`] that carries a sequence number.
pub const SEQUENCED_VERSION: u8 = 2;

/// The largest thumbnail image an attachment pointer carries inline, in bytes.
pub const MAX_THUMBNAIL_BYTES: usize = 24 * 1024;

/// The content version of a [`Plaintext`] that carries a sequence number and the sender's
/// [`SenderState`].
pub const STATEFUL_VERSION: u8 = 3;

/// The content version of a [`Plaintext`] that also carries the franking opening.
pub const FRANKED_VERSION: u8 = 4;

/// What version 4 adds after the sender state: the franking key and signature.
const FRANKING_BYTES: usize = crate::franking::KEY_LEN + crate::franking::SIGNATURE_LEN;

/// What version 2 adds to a message's encoding: the 8-byte sequence number.
const SEQUENCE_BYTES: usize = 8;

/// The most that version 3 adds after the sequence number: a list version, a presence tag, an
/// epoch and a 32-byte root.
const SENDER_STATE_BYTES: usize = 8 + 1 + 8 + 32;

const TYPE_TEXT: u16 = 1;
const TYPE_REPLY: u16 = 2;
const TYPE_REACTION: u16 = 3;
const TYPE_EDIT: u16 = 4;
const TYPE_DELETE: u16 = 5;
const TYPE_READ_RECEIPT: u16 = 6;
const TYPE_TYPING: u16 = 7;
const TYPE_ATTACHMENT: u16 = 8;
const TYPE_DISAPPEARING_TIMER: u16 = 9;
const TYPE_CALL: u16 = 10;
const TYPE_DELIVERY_RECEIPT: u16 = 11;

const SIGNAL_OFFER: u8 = 1;
const SIGNAL_ANSWER: u8 = 2;
const SIGNAL_ICE_CANDIDATE: u8 = 3;
const SIGNAL_RINGING: u8 = 4;
const SIGNAL_BUSY: u8 = 5;
const SIGNAL_HANGUP: u8 = 6;
const SIGNAL_DECLINE: u8 = 7;
const SIGNAL_JOIN: u8 = 8;
const SIGNAL_LEAVE: u8 = 9;

/// Why bytes could not be decoded as a [`Message`] or [`GroupMetadata`].
///
/// Variants carry no input text, so an error can be logged without echoing what a peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// The input ended before a complete value, or a length prefix points past the end.
    #[error("content is truncated")]
    Truncated,
    /// Bytes remain after a complete message, or after a known content type's body.
    #[error("content has trailing bytes")]
    TrailingBytes,
    /// The leading version byte is not [`CONTENT_VERSION`].
    #[error("unsupported content version {0}")]
    UnsupportedVersion(u8),
    /// A string field is not valid UTF-8.
    #[error("content text is not valid UTF-8")]
    InvalidUtf8,
    /// The input is longer than [`MAX_MESSAGE_BYTES`].
    #[error("content is larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    /// A field breaks the encoding rules: a non-minimal length, a bool or presence tag other
    /// than 0 or 1, a list of ids that is not a multiple of 16 bytes, an unknown call signal,
    /// or a thumbnail larger than [`MAX_THUMBNAIL_BYTES`].
    #[error("content is malformed")]
    Malformed,
}

/// A sender-chosen random identifier that names a message for replies, edits and receipts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// Wraps 16 bytes as an id.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes of the id, as they appear on the wire.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(32);
        for byte in self.0 {
            hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
            hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        hex
    }

    /// Parses exactly 32 hex digits (either case); returns `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let digits = hex.as_bytes();
        if digits.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let [high, low] = pair else { return None };
            *byte = (hex_value(*high)? << 4) | hex_value(*low)?;
        }
        Some(Self(bytes))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.to_hex())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The symmetric key that decrypts one attachment blob; wiped on drop and never printed.
#[derive(Clone)]
pub struct AttachmentKey(Box<[u8; 32]>);

impl AttachmentKey {
    /// Takes ownership of a key, wiping the caller's by-value copy.
    pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
        let key = Self(Box::new(bytes));
        bytes.zeroize();
        key
    }

    /// A fresh random key, for one file.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = Box::new([0u8; 32]);
        getrandom::fill(&mut key[..])?;
        Ok(Self(key))
    }

    /// The raw key bytes, for the attachment cipher.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Zeroize for AttachmentKey {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for AttachmentKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for AttachmentKey {}

impl PartialEq for AttachmentKey {
    fn eq(&self, other: &Self) -> bool {
        // Fold every byte so the comparison does not stop at the first difference.
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

impl Eq for AttachmentKey {}

impl fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AttachmentKey(<redacted>)")
    }
}

/// Everything a recipient needs to fetch, verify and decrypt an uploaded attachment blob.
/// `Debug` leaves out the blob id (a read capability) and the key.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentPointer {
    /// The blob store's name for the encrypted blob.
    pub blob_id: String,
    /// The key that decrypts the blob.
    pub key: AttachmentKey,
    /// SHA-256 of the encrypted blob, checked before decrypting.
    pub digest: [u8; 32],
    /// Size of the plaintext in bytes, as claimed by the sender.
    pub size: u64,
    /// MIME type of the plaintext, as claimed by the sender.
    pub media_type: String,
    /// Original file name, if the sender shared one.
    pub file_name: Option<String>,
    /// Caption shown with the attachment.
    pub caption: Option<String>,
    /// A small preview of a picture, shown before the blob is downloaded (boxed: most
    /// pointers have none, and every message would otherwise carry its room).
    pub thumbnail: Option<Box<Thumbnail>>,
}

impl fmt::Debug for AttachmentPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentPointer")
            .field("blob_id", &"<redacted>")
            .field("key", &self.key)
            .field("size", &self.size)
            .field("media_type", &self.media_type)
            .field("file_name", &self.file_name)
            .field("caption", &self.caption)
            .field("thumbnail", &self.thumbnail)
            .finish_non_exhaustive()
    }
}

impl AttachmentPointer {
    /// The pointer on its own (as a device link carries the history archive's), in the same
    /// encoding it has inside an attachment message.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.0
    }

    /// Decodes [`Self::encode`]'s bytes; anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        let mut r = Reader::new(bytes);
        let pointer = Self::read(&mut r)?;
        r.finish()?;
        Ok(pointer)
    }

    fn write(&self, w: &mut Writer) {
        w.string(&self.blob_id);
        w.raw(self.key.as_bytes());
        w.raw(&self.digest);
        w.u64(self.size);
        w.string(&self.media_type);
        w.option(self.file_name.as_deref(), Writer::string);
        w.option(self.caption.as_deref(), Writer::string);
        w.option(self.thumbnail.as_ref(), |w, thumbnail| thumbnail.write(w));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ContentError> {
        let blob_id = r.string()?;
        let key = AttachmentKey::from_bytes(r.array()?);
        Ok(Self {
            blob_id,
            key,
            digest: r.array()?,
            size: r.u64()?,
            media_type: r.string()?,
            file_name: r.option(Reader::string)?,
            caption: r.option(Reader::string)?,
            thumbnail: r.option(Thumbnail::read)?.map(Box::new),
        })
    }
}

/// A small preview image of an attachment, end-to-end encrypted with the message that
/// carries it (not uploaded as a blob).
#[derive(Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// MIME type of `data`, e.g. `image/jpeg`.
    pub media_type: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The encoded image, at most [`MAX_THUMBNAIL_BYTES`].
    pub data: Vec<u8>,
}

impl fmt::Debug for Thumbnail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The picture is the user's content: its size only.
        f.debug_struct("Thumbnail")
            .field("media_type", &self.media_type)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl Thumbnail {
    fn write(&self, w: &mut Writer) {
        w.string(&self.media_type);
        w.u32(self.width);
        w.u32(self.height);
        w.opaque(&self.data);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ContentError> {
        let media_type = r.string()?;
        let width = r.u32()?;
        let height = r.u32()?;
        let data = r.opaque()?;
        if data.len() > MAX_THUMBNAIL_BYTES {
            return Err(ContentError::Malformed);
        }
        Ok(Self {
            media_type,
            width,
            height,
            data: data.to_vec(),
        })
    }
}

/// One step of call setup or teardown, scoped to a call by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSignal {
    /// Random id chosen by the caller; every signal of one call carries it.
    pub call_id: [u8; 16],
    /// What this signal says.
    pub kind: CallSignalKind,
}

/// The WebRTC signalling steps a call goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallSignalKind {
    /// The caller's SDP offer.
    Offer {
        /// Session description.
        sdp: String,
        /// Whether the caller asks for video.
        video: bool,
    },
    /// The callee's SDP answer.
    Answer {
        /// Session description.
        sdp: String,
    },
    /// A trickled ICE candidate.
    IceCandidate {
        /// The candidate line.
        candidate: String,
        /// Media stream identification tag the candidate belongs to.
        sdp_mid: Option<String>,
        /// Index of the media description the candidate belongs to.
        sdp_m_line_index: Option<u16>,
    },
    /// The callee's device is alerting.
    Ringing,
    /// The callee is in another call.
    Busy,
    /// Either side ends the call (the caller, before an answer: it stopped ringing).
    Hangup,
    /// The callee refuses the call (every device of the callee stops ringing).
    Decline,
    /// A device joins the conversation's group call (the first join starts it and rings the
    /// other members); media goes through the server's forwarding unit.
    Join {
        /// Whether the device sends video.
        video: bool,
    },
    /// A device leaves the conversation's group call.
    Leave,
}

impl CallSignal {
    fn write(&self, w: &mut Writer) {
        w.raw(&self.call_id);
        match &self.kind {
            CallSignalKind::Offer { sdp, video } => {
                w.u8(SIGNAL_OFFER);
                w.string(sdp);
                w.bool(*video);
            }
            CallSignalKind::Answer { sdp } => {
                w.u8(SIGNAL_ANSWER);
                w.string(sdp);
            }
            CallSignalKind::IceCandidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            } => {
                w.u8(SIGNAL_ICE_CANDIDATE);
                w.string(candidate);
                w.option(sdp_mid.as_deref(), Writer::string);
                w.option(*sdp_m_line_index, Writer::u16);
            }
            CallSignalKind::Ringing => w.u8(SIGNAL_RINGING),
            CallSignalKind::Busy => w.u8(SIGNAL_BUSY),
            CallSignalKind::Hangup => w.u8(SIGNAL_HANGUP),
            CallSignalKind::Decline => w.u8(SIGNAL_DECLINE),
            CallSignalKind::Join { video } => {
                w.u8(SIGNAL_JOIN);
                w.bool(*video);
            }
            CallSignalKind::Leave => w.u8(SIGNAL_LEAVE),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ContentError> {
        let call_id = r.array()?;
        let kind = match r.u8()? {
            SIGNAL_OFFER => CallSignalKind::Offer {
                sdp: r.string()?,
                video: r.bool()?,
            },
            SIGNAL_ANSWER => CallSignalKind::Answer { sdp: r.string()? },
            SIGNAL_ICE_CANDIDATE => CallSignalKind::IceCandidate {
                candidate: r.string()?,
                sdp_mid: r.option(Reader::string)?,
                sdp_m_line_index: r.option(Reader::u16)?,
            },
            SIGNAL_RINGING => CallSignalKind::Ringing,
            SIGNAL_BUSY => CallSignalKind::Busy,
            SIGNAL_HANGUP => CallSignalKind::Hangup,
            SIGNAL_DECLINE => CallSignalKind::Decline,
            SIGNAL_JOIN => CallSignalKind::Join { video: r.bool()? },
            SIGNAL_LEAVE => CallSignalKind::Leave,
            _ => return Err(ContentError::Malformed),
        };
        Ok(Self { call_id, kind })
    }
}

/// What a message says; each variant has a fixed content type number (see the module table).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Content {
    /// A plain text message.
    Text {
        /// The text.
        body: String,
    },
    /// A text message quoting an earlier one.
    Reply {
        /// The message being answered.
        in_reply_to: MessageId,
        /// The text.
        body: String,
    },
    /// Adds or removes an emoji reaction on a message.
    Reaction {
        /// The message reacted to.
        target: MessageId,
        /// The emoji.
        emoji: String,
        /// True to withdraw an earlier reaction with this emoji.
        remove: bool,
    },
    /// Replaces the text of the sender's own earlier message.
    Edit {
        /// The message being edited.
        target: MessageId,
        /// The new text.
        body: String,
    },
    /// Deletes the sender's own earlier message for everyone.
    Delete {
        /// The message being deleted.
        target: MessageId,
    },
    /// Tells the group which messages this device has read.
    ReadReceipt {
        /// The messages read.
        message_ids: Vec<MessageId>,
    },
    /// Tells the group which messages reached this device (stored, not necessarily read).
    DeliveryReceipt {
        /// The messages received.
        message_ids: Vec<MessageId>,
    },
    /// Starts or stops the typing indicator.
    Typing {
        /// True while the sender is typing.
        active: bool,
    },
    /// An uploaded file.
    Attachment(AttachmentPointer),
    /// Changes the conversation's disappearing-message timer.
    DisappearingTimer {
        /// Lifetime of new messages in seconds; 0 turns the timer off.
        seconds: u32,
    },
    /// Voice or video call signalling.
    Call(CallSignal),
    /// A content type this version does not know, kept so it re-encodes byte for byte.
    ///
    /// Decoding only produces it for unassigned numbers; one built by hand with a known number
    /// encodes as that known type.
    Unknown {
        /// The content type number from the wire.
        content_type: u16,
        /// The undecoded body.
        body: Vec<u8>,
    },
}

impl Content {
    /// The content type number written on the wire for this variant.
    pub fn content_type(&self) -> u16 {
        match self {
            Self::Text { .. } => TYPE_TEXT,
            Self::Reply { .. } => TYPE_REPLY,
            Self::Reaction { .. } => TYPE_REACTION,
            Self::Edit { .. } => TYPE_EDIT,
            Self::Delete { .. } => TYPE_DELETE,
            Self::ReadReceipt { .. } => TYPE_READ_RECEIPT,
            Self::DeliveryReceipt { .. } => TYPE_DELIVERY_RECEIPT,
            Self::Typing { .. } => TYPE_TYPING,
            Self::Attachment(_) => TYPE_ATTACHMENT,
            Self::DisappearingTimer { .. } => TYPE_DISAPPEARING_TIMER,
            Self::Call(_) => TYPE_CALL,
            Self::Unknown { content_type, .. } => *content_type,
        }
    }

    /// A stable lowercase name for the variant, for logs, metrics and APIs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Reply { .. } => "reply",
            Self::Reaction { .. } => "reaction",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
            Self::ReadReceipt { .. } => "read_receipt",
            Self::DeliveryReceipt { .. } => "delivery_receipt",
            Self::Typing { .. } => "typing",
            Self::Attachment(_) => "attachment",
            Self::DisappearingTimer { .. } => "disappearing_timer",
            Self::Call(_) => "call",
            Self::Unknown { .. } => "unknown",
        }
    }

    fn body(&self) -> Cow<'_, [u8]> {
        let mut w = Writer::default();
        match self {
            Self::Text { body } => w.string(body),
            Self::Reply {
                in_reply_to: target,
                body,
            }
            | Self::Edit { target, body } => {
                w.raw(target.as_bytes());
                w.string(body);
            }
            Self::Reaction {
                target,
                emoji,
                remove,
            } => {
                w.raw(target.as_bytes());
                w.string(emoji);
                w.bool(*remove);
            }
            Self::Delete { target } => w.raw(target.as_bytes()),
            Self::ReadReceipt { message_ids } | Self::DeliveryReceipt { message_ids } => {
                let ids: Vec<u8> = message_ids.iter().flat_map(|id| id.0).collect();
                w.opaque(&ids);
            }
            Self::Typing { active } => w.bool(*active),
            Self::Attachment(pointer) => pointer.write(&mut w),
            Self::DisappearingTimer { seconds } => w.u32(*seconds),
            Self::Call(signal) => signal.write(&mut w),
            Self::Unknown { body, .. } => return Cow::Borrowed(body),
        }
        Cow::Owned(w.0)
    }

    fn decode_body(content_type: u16, body: &[u8]) -> Result<Self, ContentError> {
        let mut r = Reader::new(body);
        let content = match content_type {
            TYPE_TEXT => Self::Text { body: r.string()? },
            TYPE_REPLY => Self::Reply {
                in_reply_to: r.message_id()?,
                body: r.string()?,
            },
            TYPE_REACTION => Self::Reaction {
                target: r.message_id()?,
                emoji: r.string()?,
                remove: r.bool()?,
            },
            TYPE_EDIT => Self::Edit {
                target: r.message_id()?,
                body: r.string()?,
            },
            TYPE_DELETE => Self::Delete {
                target: r.message_id()?,
            },
            TYPE_READ_RECEIPT | TYPE_DELIVERY_RECEIPT => {
                let (ids, rest) = r.opaque()?.as_chunks::<16>();
                if !rest.is_empty() {
                    return Err(ContentError::Malformed);
                }
                let message_ids = ids.iter().copied().map(MessageId).collect();
                if content_type == TYPE_READ_RECEIPT {
                    Self::ReadReceipt { message_ids }
                } else {
                    Self::DeliveryReceipt { message_ids }
                }
            }
            TYPE_TYPING => Self::Typing { active: r.bool()? },
            TYPE_ATTACHMENT => Self::Attachment(AttachmentPointer::read(&mut r)?),
            TYPE_DISAPPEARING_TIMER => Self::DisappearingTimer { seconds: r.u32()? },
            TYPE_CALL => Self::Call(CallSignal::read(&mut r)?),
            _ => {
                return Ok(Self::Unknown {
                    content_type,
                    body: body.to_vec(),
                });
            }
        };
        r.finish()?;
        Ok(content)
    }
}

/// One application message: the unit a device encrypts to its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chosen by the sender; names the message for replies, edits and receipts.
    pub id: MessageId,
    /// The sender's clock at sending, in milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The disappearing timer in force when the message was sent; `None` when off.
    pub expires_after_secs: Option<u32>,
    /// What the message says.
    pub content: Content,
}

impl Message {
    /// The canonical encoding; `Message::decode` of it returns an equal message.
    ///
    /// Encoding cannot fail, but a message whose encoding exceeds [`MAX_MESSAGE_BYTES`] will be
    /// rejected by receivers, so senders check the length before encrypting.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(CONTENT_VERSION);
        self.write_fields(&mut w);
        w.0
    }

    /// Decodes a message; on success, encoding the result gives back exactly `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        let mut r = Reader::versioned(bytes)?;
        let message = Self::read_fields(&mut r)?;
        r.finish()?;
        Ok(message)
    }

    /// The version 2 encoding with sequence number `seq`: what [`Plaintext::encode`] gives for
    /// `Plaintext { seq: Some(seq), sender: None, message }`, without cloning the message.
    pub fn encode_with_seq(&self, seq: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(SEQUENCED_VERSION);
        w.u64(seq);
        self.write_fields(&mut w);
        w.0
    }

    /// The version 3 encoding: what [`Plaintext::encode`] gives for
    /// `Plaintext { seq: Some(seq), sender: Some(state), message }`, without cloning the message.
    pub fn encode_with_state(&self, seq: u64, state: &SenderState) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(STATEFUL_VERSION);
        w.u64(seq);
        state.write(&mut w);
        self.write_fields(&mut w);
        w.0
    }

    /// The version 4 encoding: what [`Plaintext::encode`] gives for `Plaintext { seq:
    /// Some(seq), sender: Some(state), franking: Some(opening), message }`, without cloning
    /// the message.
    pub fn encode_franked(&self, seq: u64, state: &SenderState, opening: &Opening) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(FRANKED_VERSION);
        w.u64(seq);
        state.write(&mut w);
        w.raw(opening.key.as_bytes());
        w.raw(&opening.signature);
        self.write_fields(&mut w);
        w.0
    }

    /// Everything after the version byte.
    fn write_fields(&self, w: &mut Writer) {
        w.raw(self.id.as_bytes());
        w.u64(self.sent_at_ms);
        w.option(self.expires_after_secs, Writer::u32);
        w.u16(self.content.content_type());
        w.opaque(&self.content.body());
    }

    fn read_fields(r: &mut Reader<'_>) -> Result<Self, ContentError> {
        let id = r.message_id()?;
        let sent_at_ms = r.u64()?;
        let expires_after_secs = r.option(Reader::u32)?;
        let content_type = r.u16()?;
        let body = r.opaque()?;
        let content = Content::decode_body(content_type, body)?;
        Ok(Self {
            id,
            sent_at_ms,
            expires_after_secs,
            content,
        })
    }
}

/// The newest key-transparency root a device verified: its epoch and root hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryView {
    /// The directory epoch.
    pub epoch: u64,
    /// The directory's root hash at that epoch.
    pub root: [u8; 32],
}

/// What a sender states about itself inside each message it encrypts (content version 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderState {
    /// The version of the sender's account device list that the sender holds; 0 if none.
    pub list_version: u64,
    /// The newest directory root the sender verified, if it verified one.
    pub directory: Option<DirectoryView>,
}

impl SenderState {
    fn write(&self, w: &mut Writer) {
        w.u64(self.list_version);
        w.option(self.directory.as_ref(), |w, view| {
            w.u64(view.epoch);
            w.raw(&view.root);
        });
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ContentError> {
        let list_version = r.u64()?;
        let directory = r.option(|r| {
            Ok(DirectoryView {
                epoch: r.u64()?,
                root: r.array()?,
            })
        })?;
        Ok(Self {
            list_version,
            directory,
        })
    }
}

/// What the engine encrypts into an MLS application message: a [`Message`], the sending
/// device's sequence number in the conversation (see [`crate::sequence`]), what the sender
/// states about its keys ([`SenderState`]) and the message's franking opening
/// ([`crate::franking`]).
///
/// Content version 4 carries all three, version 3 the number and the state, version 2 only
/// the number, and version 1 (clients before either) neither. Every version re-encodes byte
/// for byte; a `sender` without a `seq` is not encodable and encodes as version 1, and
/// `franking` without both as the version the rest allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plaintext {
    /// The sender's sequence number, counting its application messages in this conversation
    /// from 1; `None` for version 1 content.
    pub seq: Option<u64>,
    /// The sender's device-list version and directory view; `None` before version 3.
    pub sender: Option<SenderState>,
    /// The franking key and the sender's signature of the commitment; `None` before version 4.
    pub franking: Option<Opening>,
    /// The message.
    pub message: Message,
}

impl Plaintext {
    /// The canonical encoding: version 1 without a sequence number, version 2 with one,
    /// version 3 with a number and a sender state, and version 4 with a franking opening too.
    pub fn encode(&self) -> Vec<u8> {
        match (self.seq, &self.sender, &self.franking) {
            (Some(seq), Some(state), Some(opening)) => {
                self.message.encode_franked(seq, state, opening)
            }
            (Some(seq), Some(state), None) => self.message.encode_with_state(seq, state),
            (Some(seq), None, _) => self.message.encode_with_seq(seq),
            (None, _, _) => self.message.encode(),
        }
    }

    /// Decodes version 1, 2, 3 or 4 content; on success, encoding the result gives back
    /// `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        if bytes.len() > MAX_MESSAGE_BYTES + SEQUENCE_BYTES + SENDER_STATE_BYTES + FRANKING_BYTES {
            return Err(ContentError::TooLarge);
        }
        let mut r = Reader::new(bytes);
        let (seq, sender, franking) = match r.u8()? {
            CONTENT_VERSION if bytes.len() <= MAX_MESSAGE_BYTES => (None, None, None),
            SEQUENCED_VERSION if bytes.len() <= MAX_MESSAGE_BYTES + SEQUENCE_BYTES => {
                (Some(r.u64()?), None, None)
            }
            version @ (STATEFUL_VERSION | FRANKED_VERSION) => {
                let seq = r.u64()?;
                let before = r.rest.len();
                let state = SenderState::read(&mut r)?;
                let state_len = before - r.rest.len();
                let franking = if version == FRANKED_VERSION {
                    let key = FrankingKey::from_bytes(r.array()?);
                    let signature = r.array()?;
                    Some(Opening { key, signature })
                } else {
                    None
                };
                let franking_len = if franking.is_some() {
                    FRANKING_BYTES
                } else {
                    0
                };
                if bytes.len() > MAX_MESSAGE_BYTES + SEQUENCE_BYTES + state_len + franking_len {
                    return Err(ContentError::TooLarge);
                }
                (Some(seq), Some(state), franking)
            }
            CONTENT_VERSION | SEQUENCED_VERSION => return Err(ContentError::TooLarge),
            other => return Err(ContentError::UnsupportedVersion(other)),
        };
        let message = Message::read_fields(&mut r)?;
        r.finish()?;
        Ok(Self {
            seq,
            sender,
            franking,
            message,
        })
    }
}

/// A group's display name and avatar, encrypted inside the MLS group context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    /// The group's display name.
    pub name: String,
    /// The group's picture, uploaded as an attachment.
    pub avatar: Option<AttachmentPointer>,
}

impl GroupMetadata {
    /// The canonical encoding; `GroupMetadata::decode` of it returns equal metadata.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(CONTENT_VERSION);
        w.string(&self.name);
        w.option(self.avatar.as_ref(), |w, avatar| avatar.write(w));
        w.0
    }

    /// Decodes metadata under the same rules as [`Message::decode`]; success means `encode`
    /// gives back exactly `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        let mut r = Reader::versioned(bytes)?;
        let name = r.string()?;
        let avatar = r.option(AttachmentPointer::read)?;
        r.finish()?;
        Ok(Self { name, avatar })
    }
}

/// Appends TLS encodings to a buffer; writing to memory cannot fail.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    pub(crate) fn u16(&mut self, value: u16) {
        self.raw(&value.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.raw(&value.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.raw(&value.to_be_bytes());
    }

    pub(crate) fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    /// `opaque <V>`: the shortest QUIC varint length (RFC 9000 §16), then the bytes.
    pub(crate) fn opaque(&mut self, bytes: &[u8]) {
        // `usize` is at most 64 bits wide, and no buffer reaches the 2^62 varint limit.
        let len = bytes.len() as u64;
        if len <= 0x3f {
            self.u8(len as u8);
        } else if len <= 0x3fff {
            self.u16(0x4000 | len as u16);
        } else if len <= 0x3fff_ffff {
            self.u32(0x8000_0000 | len as u32);
        } else {
            self.u64(0xc000_0000_0000_0000 | len);
        }
        self.raw(bytes);
    }

    pub(crate) fn string(&mut self, value: &str) {
        self.opaque(value.as_bytes());
    }

    pub(crate) fn option<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                write(self, value);
            }
        }
    }
}

/// Reads TLS encodings from untrusted bytes, accepting only the canonical form of each value.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Checks the size limit and the version byte that start every top-level structure.
    fn versioned(bytes: &'a [u8]) -> Result<Self, ContentError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(ContentError::TooLarge);
        }
        let mut r = Self::new(bytes);
        match r.u8()? {
            CONTENT_VERSION => Ok(r),
            other => Err(ContentError::UnsupportedVersion(other)),
        }
    }

    fn read<T: DeserializeBytes>(&mut self) -> Result<T, ContentError> {
        let (value, rest) = T::tls_deserialize_bytes(self.rest).map_err(codec_error)?;
        self.rest = rest;
        Ok(value)
    }

    fn u8(&mut self) -> Result<u8, ContentError> {
        self.read()
    }

    fn u16(&mut self) -> Result<u16, ContentError> {
        self.read()
    }

    fn u32(&mut self) -> Result<u32, ContentError> {
        self.read()
    }

    fn u64(&mut self) -> Result<u64, ContentError> {
        self.read()
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ContentError> {
        self.read()
    }

    fn message_id(&mut self) -> Result<MessageId, ContentError> {
        self.array().map(MessageId)
    }

    fn bool(&mut self) -> Result<bool, ContentError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ContentError::Malformed),
        }
    }

    /// Borrows an `opaque <V>` from the input, so a huge length prefix allocates nothing.
    fn opaque(&mut self) -> Result<&'a [u8], ContentError> {
        let before = self.rest.len();
        let len: TlsVarInt = self.read()?;
        // tls_codec rejects non-minimal varints only with its `mls` feature; checking here keeps
        // the encoding canonical whatever features the build unifies.
        if before - self.rest.len() != len.tls_serialized_len() {
            return Err(ContentError::Malformed);
        }
        let len = usize::try_from(len.value()).map_err(|_| ContentError::Truncated)?;
        let (bytes, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or(ContentError::Truncated)?;
        self.rest = rest;
        Ok(bytes)
    }

    fn string(&mut self) -> Result<String, ContentError> {
        let bytes = self.opaque()?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| ContentError::InvalidUtf8)
    }

    fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, ContentError>,
    ) -> Result<Option<T>, ContentError> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(ContentError::Malformed),
        }
    }

    fn finish(&self) -> Result<(), ContentError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ContentError::TrailingBytes)
        }
    }
}

/// Maps a codec error to ours, dropping its text: it may describe attacker-chosen input.
fn codec_error(error: tls_codec::Error) -> ContentError {
    match error {
        tls_codec::Error::EndOfStream => ContentError::Truncated,
        tls_codec::Error::TrailingData => ContentError::TrailingBytes,
        _ => ContentError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::option::of;
    use proptest::prelude::*;

    fn id(seed: u8) -> MessageId {
        MessageId::from_bytes([seed; 16])
    }

    fn pointer() -> AttachmentPointer {
        AttachmentPointer {
            blob_id: "blob-1".into(),
            key: AttachmentKey::from_bytes([0xab; 32]),
            digest: [7; 32],
            size: 123_456,
            media_type: "image/png".into(),
            file_name: Some("cat.png".into()),
            caption: None,
            thumbnail: Some(Box::new(Thumbnail {
                media_type: "image/jpeg".into(),
                width: 320,
                height: 240,
                data: vec![0xff, 0xd8, 0xff, 0xd9],
            })),
        }
    }

    fn message(content: Content) -> Message {
        Message {
            id: id(1),
            sent_at_ms: 1_700_000_000_000,
            expires_after_secs: Some(60),
            content,
        }
    }

    fn call(kind: CallSignalKind) -> Content {
        Content::Call(CallSignal {
            call_id: [9; 16],
            kind,
        })
    }

    fn text(body: &str) -> String {
        body.to_owned()
    }

    fn every_variant() -> Vec<Content> {
        let ice = CallSignalKind::IceCandidate {
            candidate: text("candidate:1"),
            sdp_mid: Some(text("0")),
            sdp_m_line_index: Some(0),
        };
        vec![
            Content::Text {
                body: text("hello ✓"),
            },
            Content::Reply {
                in_reply_to: id(2),
                body: text("re"),
            },
            Content::Reaction {
                target: id(3),
                emoji: text("👍"),
                remove: true,
            },
            Content::Edit {
                target: id(4),
                body: text("fixed"),
            },
            Content::Delete { target: id(5) },
            Content::ReadReceipt {
                message_ids: vec![id(6), id(7)],
            },
            Content::ReadReceipt {
                message_ids: vec![],
            },
            Content::DeliveryReceipt {
                message_ids: vec![id(8)],
            },
            Content::Typing { active: true },
            Content::Attachment(pointer()),
            Content::DisappearingTimer { seconds: 86_400 },
            call(CallSignalKind::Offer {
                sdp: text("v=0"),
                video: true,
            }),
            call(CallSignalKind::Answer { sdp: text("v=0") }),
            call(ice),
            call(CallSignalKind::Ringing),
            call(CallSignalKind::Busy),
            call(CallSignalKind::Hangup),
            call(CallSignalKind::Decline),
            call(CallSignalKind::Join { video: true }),
            call(CallSignalKind::Leave),
            Content::Unknown {
                content_type: 999,
                body: vec![1, 2, 3],
            },
        ]
    }

    /// An encoded message (no expiry) carrying `body` as-is under `content_type`.
    fn with_body(content_type: u16, body: &[u8]) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(CONTENT_VERSION);
        w.raw(&[1; 16]);
        w.u64(0);
        w.u8(0);
        w.u16(content_type);
        w.opaque(body);
        w.0
    }

    #[test]
    fn every_variant_round_trips() {
        for content in every_variant() {
            let original = message(content);
            let kind = original.content.kind();
            assert_eq!(Message::decode(&original.encode()), Ok(original), "{kind}");
        }
    }

    #[test]
    fn content_type_numbers_and_kinds_are_stable() {
        let pairs: Vec<_> = every_variant()
            .iter()
            .map(|c| format!("{}:{}", c.content_type(), c.kind()))
            .collect();
        let expected = "1:text 2:reply 3:reaction 4:edit 5:delete 6:read_receipt 6:read_receipt \
            11:delivery_receipt 7:typing 8:attachment 9:disappearing_timer 10:call 10:call 10:call \
            10:call 10:call 10:call 10:call 10:call 10:call 999:unknown";
        assert_eq!(pairs.join(" "), expected);
    }

    #[test]
    fn text_message_matches_pinned_vector() {
        let message = Message {
            id: MessageId::from_bytes(core::array::from_fn(|i| i as u8)),
            sent_at_ms: 1_700_000_000_000,
            expires_after_secs: Some(3600),
            content: Content::Text { body: text("hi") },
        };
        #[rustfmt::skip]
        let expected = [
            0x01, // version
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, // id
            0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
            0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // sent_at_ms
            0x01, 0x00, 0x00, 0x0e, 0x10, // expires_after_secs: Some(3600)
            0x00, 0x01, // content_type: text
            0x03, // body length
            0x02, b'h', b'i', // Text.body
        ];
        assert_eq!(message.encode(), expected);
        assert_eq!(Message::decode(&expected), Ok(message));
    }

    #[test]
    fn sequenced_plaintext_matches_pinned_vector() {
        let typing = Message {
            id: MessageId::from_bytes([7; 16]),
            sent_at_ms: 1,
            expires_after_secs: None,
            content: Content::Typing { active: true },
        };
        let plaintext = Plaintext {
            seq: Some(0x0102),
            sender: None,
            franking: None,
            message: typing.clone(),
        };
        let mut expected = vec![2, 0, 0, 0, 0, 0, 0, 1, 2];
        expected.extend_from_slice(&typing.encode()[1..]);
        assert_eq!(plaintext.encode(), expected);
        assert_eq!(Plaintext::decode(&expected), Ok(plaintext));
        // Version 1 content (older senders) decodes without a number and keeps its bytes.
        let legacy = Plaintext {
            seq: None,
            sender: None,
            franking: None,
            message: typing.clone(),
        };
        assert_eq!(legacy.encode(), typing.encode());
        assert_eq!(Plaintext::decode(&typing.encode()), Ok(legacy));
        // A bare Message never accepts version 2.
        assert_eq!(
            Message::decode(&expected),
            Err(ContentError::UnsupportedVersion(2))
        );
        assert_eq!(
            Plaintext::decode(&[5]),
            Err(ContentError::UnsupportedVersion(5))
        );
        for len in 0..expected.len() {
            assert_eq!(
                Plaintext::decode(&expected[..len]),
                Err(ContentError::Truncated),
                "{len}"
            );
        }
        // 32 bytes of header, two 4-byte length prefixes, then the text.
        let big = message(Content::Text {
            body: "x".repeat(MAX_MESSAGE_BYTES - 40),
        });
        assert_eq!(big.encode().len(), MAX_MESSAGE_BYTES);
        let at_limit = Plaintext {
            seq: Some(u64::MAX),
            sender: None,
            franking: None,
            message: big.clone(),
        };
        assert_eq!(Plaintext::decode(&at_limit.encode()), Ok(at_limit));
        let mut over = big.encode();
        over.push(0);
        assert_eq!(Plaintext::decode(&over), Err(ContentError::TooLarge));
        let mut over = big.encode_with_seq(1);
        over.push(0);
        assert_eq!(Plaintext::decode(&over), Err(ContentError::TooLarge));
    }

    #[test]
    fn stateful_plaintext_matches_pinned_vector() {
        let typing = Message {
            id: MessageId::from_bytes([7; 16]),
            sent_at_ms: 1,
            expires_after_secs: None,
            content: Content::Typing { active: true },
        };
        let state = SenderState {
            list_version: 5,
            directory: Some(DirectoryView {
                epoch: 9,
                root: [0xab; 32],
            }),
        };
        let plaintext = Plaintext {
            seq: Some(2),
            sender: Some(state),
            franking: None,
            message: typing.clone(),
        };
        let mut expected = vec![3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, 1];
        expected.extend_from_slice(&9u64.to_be_bytes());
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&typing.encode()[1..]);
        assert_eq!(plaintext.encode(), expected);
        assert_eq!(Plaintext::decode(&expected), Ok(plaintext));
        for len in 0..expected.len() {
            assert_eq!(
                Plaintext::decode(&expected[..len]),
                Err(ContentError::Truncated),
                "{len}"
            );
        }
        // No view yet: a zero presence tag; any other tag is malformed.
        let bare = SenderState {
            list_version: 1,
            directory: None,
        };
        let encoded = typing.encode_with_state(1, &bare);
        assert_eq!(encoded[17], 0);
        assert_eq!(
            Plaintext::decode(&encoded).map(|p| p.sender),
            Ok(Some(bare))
        );
        let mut bad_tag = encoded.clone();
        bad_tag[17] = 2;
        assert_eq!(Plaintext::decode(&bad_tag), Err(ContentError::Malformed));
        // The size limit is the message's: the state does not buy room for a bigger body.
        let big = message(Content::Text {
            body: "x".repeat(MAX_MESSAGE_BYTES - 40),
        });
        let at_limit = big.encode_with_state(1, &bare);
        assert!(Plaintext::decode(&at_limit).is_ok());
        let mut over = at_limit;
        over.push(0);
        assert_eq!(Plaintext::decode(&over), Err(ContentError::TooLarge));
    }

    #[test]
    fn franked_plaintext_matches_pinned_vector() {
        let text = Message {
            id: MessageId::from_bytes([7; 16]),
            sent_at_ms: 1,
            expires_after_secs: None,
            content: Content::Text { body: "hi".into() },
        };
        let state = SenderState {
            list_version: 5,
            directory: None,
        };
        let opening = Opening {
            key: FrankingKey::from_bytes([0x11; 32]),
            signature: [0x22; 64],
        };
        let plaintext = Plaintext {
            seq: Some(2),
            sender: Some(state),
            franking: Some(opening.clone()),
            message: text.clone(),
        };
        let mut expected = vec![4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, 0];
        expected.extend_from_slice(&[0x11; 32]);
        expected.extend_from_slice(&[0x22; 64]);
        expected.extend_from_slice(&text.encode()[1..]);
        assert_eq!(plaintext.encode(), expected);
        assert_eq!(text.encode_franked(2, &state, &opening), expected);
        assert_eq!(Plaintext::decode(&expected), Ok(plaintext));
        for len in 0..expected.len() {
            assert_eq!(
                Plaintext::decode(&expected[..len]),
                Err(ContentError::Truncated),
                "{len}"
            );
        }
        // An opening without a sender state is not encodable: version 2, no opening.
        let partial = Plaintext {
            seq: Some(2),
            sender: None,
            franking: Some(opening.clone()),
            message: text.clone(),
        };
        assert_eq!(partial.encode(), text.encode_with_seq(2));
        // The opening does not buy room for a bigger body either.
        let big = message(Content::Text {
            body: "x".repeat(MAX_MESSAGE_BYTES - 40),
        });
        let at_limit = big.encode_franked(1, &state, &opening);
        assert!(Plaintext::decode(&at_limit).is_ok());
        let mut over = at_limit;
        over.push(0);
        assert_eq!(Plaintext::decode(&over), Err(ContentError::TooLarge));
    }

    #[test]
    fn long_bodies_use_wider_length_prefixes() {
        let cases = [
            (62, 1, 1),
            (63, 1, 2),
            (64, 2, 2),
            (16_381, 2, 2),
            (16_382, 2, 4),
            (200_000, 4, 4),
        ];
        for (len, string_prefix, body_prefix) in cases {
            let original = message(Content::Text {
                body: "x".repeat(len),
            });
            let bytes = original.encode();
            let header = 1 + 16 + 8 + 5 + 2;
            assert_eq!(
                bytes.len(),
                header + body_prefix + string_prefix + len,
                "{len}"
            );
            assert_eq!(Message::decode(&bytes), Ok(original));
        }
    }

    #[test]
    fn unknown_content_type_is_preserved_byte_for_byte() {
        for content_type in [0, 12, 0x7fff, u16::MAX] {
            let bytes = with_body(content_type, &[0xff, 0, 0x80]);
            let decoded = Message::decode(&bytes);
            let unknown = Content::Unknown {
                content_type,
                body: vec![0xff, 0, 0x80],
            };
            assert_eq!(decoded.as_ref().map(|m| &m.content), Ok(&unknown));
            assert_eq!(decoded.map(|m| m.encode()), Ok(bytes));
        }
    }

    #[test]
    fn group_metadata_round_trips() {
        for avatar in [None, Some(pointer())] {
            let metadata = GroupMetadata {
                name: text("Family 🏠"),
                avatar,
            };
            assert_eq!(GroupMetadata::decode(&metadata.encode()), Ok(metadata));
        }
        assert_eq!(
            GroupMetadata {
                name: text("g"),
                avatar: None
            }
            .encode(),
            [1, 1, b'g', 0]
        );
    }

    #[test]
    fn every_prefix_is_truncated() {
        let bytes = message(Content::Attachment(pointer())).encode();
        for len in 0..bytes.len() {
            assert_eq!(
                Message::decode(&bytes[..len]),
                Err(ContentError::Truncated),
                "{len}"
            );
        }
        let metadata = GroupMetadata {
            name: text("g"),
            avatar: Some(pointer()),
        }
        .encode();
        for len in 0..metadata.len() {
            let decoded = GroupMetadata::decode(&metadata[..len]);
            assert_eq!(decoded, Err(ContentError::Truncated), "{len}");
        }
    }

    #[test]
    fn message_decode_errors() {
        use ContentError::*;
        let typing = message(Content::Typing { active: true }).encode();
        let set = |at: usize, value: u8| {
            let mut bytes = typing.clone();
            bytes[at] = value;
            bytes
        };
        let mut trailing = typing.clone();
        trailing.push(0);
        let mut huge_len = with_body(TYPE_TEXT, &[]);
        huge_len.pop();
        huge_len.extend_from_slice(&[0xbf, 0xff, 0xff, 0xff]);
        let mut huger_len = with_body(TYPE_TEXT, &[]);
        huger_len.pop();
        huger_len.extend_from_slice(&[0xff; 8]);
        let oversized = message(Content::Text {
            body: "x".repeat(MAX_MESSAGE_BYTES),
        })
        .encode();
        let cases = [
            ("empty", vec![], Truncated),
            ("trailing after message", trailing, TrailingBytes),
            (
                "trailing inside body",
                with_body(TYPE_DELETE, &[0; 17]),
                TrailingBytes,
            ),
            ("version 2", set(0, 2), UnsupportedVersion(2)),
            ("version 0", vec![0], UnsupportedVersion(0)),
            (
                "invalid utf-8",
                with_body(TYPE_TEXT, &[2, 0xc3, 0x28]),
                InvalidUtf8,
            ),
            ("oversized", oversized, TooLarge),
            ("bool 2", with_body(TYPE_TYPING, &[2]), Malformed),
            ("presence tag 2", set(1 + 16 + 8, 2), Malformed),
            (
                "non-minimal length",
                with_body(TYPE_TEXT, &[0x40, 2, b'h', b'i']),
                Malformed,
            ),
            (
                "partial id in receipt",
                with_body(TYPE_READ_RECEIPT, &[17; 18]),
                Malformed,
            ),
            (
                "partial id in delivery receipt",
                with_body(TYPE_DELIVERY_RECEIPT, &[17; 18]),
                Malformed,
            ),
            (
                "call signal 10",
                with_body(TYPE_CALL, &[[0; 16].as_slice(), &[10]].concat()),
                Malformed,
            ),
            ("2^30 body length", huge_len, Truncated),
            ("2^62 body length", huger_len, Truncated),
        ];
        for (name, bytes, error) in cases {
            assert_eq!(Message::decode(&bytes), Err(error), "{name}");
        }
        let fits = message(Content::Text {
            body: "x".repeat(MAX_MESSAGE_BYTES - 64),
        });
        assert!(fits.encode().len() <= MAX_MESSAGE_BYTES);
        assert_eq!(Message::decode(&fits.encode()), Ok(fits));
    }

    #[test]
    fn group_metadata_decode_errors() {
        use ContentError::*;
        let cases: [(&[u8], _); 6] = [
            (&[1, 1, b'g', 0, 0], TrailingBytes),
            (&[7, 0, 0], UnsupportedVersion(7)),
            (&[1, 1, 0xff, 0], InvalidUtf8),
            (&[1; MAX_MESSAGE_BYTES + 1], TooLarge),
            (&[1, 1, b'g', 2], Malformed),
            (&[1, 0x40, 1, b'g', 0], Malformed),
        ];
        for (bytes, error) in cases {
            assert_eq!(GroupMetadata::decode(bytes), Err(error));
        }
        assert_eq!(
            ContentError::UnsupportedVersion(9).to_string(),
            "unsupported content version 9"
        );
        assert_eq!(TooLarge.to_string(), "content is larger than 262144 bytes");
    }

    #[test]
    fn message_id_hex_round_trips() {
        let id = MessageId::from_bytes(core::array::from_fn(|i| (i * 17) as u8));
        let hex = "00112233445566778899aabbccddeeff";
        assert_eq!(id.to_hex(), hex);
        assert_eq!(id.to_string(), hex);
        assert_eq!(format!("{id:?}"), format!("MessageId({hex})"));
        assert_eq!(MessageId::from_hex(hex), Some(id));
        assert_eq!(MessageId::from_hex(&hex.to_uppercase()), Some(id));
        assert_eq!(id.as_bytes(), &id.0);
        let bad = [
            "",
            "00",
            &hex[1..],
            &format!("{hex}00"),
            &hex.replace('f', "g"),
            &hex.replace("00", "é"),
        ];
        for hex in bad {
            assert_eq!(MessageId::from_hex(hex), None, "{hex}");
        }
    }

    #[test]
    fn thumbnails_are_capped_and_not_printed() {
        let with = |data: Vec<u8>| {
            let mut p = pointer();
            p.thumbnail = Some(Box::new(Thumbnail {
                media_type: "image/jpeg".into(),
                width: 1,
                height: 1,
                data,
            }));
            message(Content::Attachment(p))
        };
        let at_cap = with(vec![0x5a; MAX_THUMBNAIL_BYTES]);
        assert_eq!(Message::decode(&at_cap.encode()), Ok(at_cap.clone()));
        let over = with(vec![0x5a; MAX_THUMBNAIL_BYTES + 1]);
        assert_eq!(
            Message::decode(&over.encode()),
            Err(ContentError::Malformed)
        );
        let printed = format!("{at_cap:?}");
        assert!(printed.contains("bytes: 24576") && !printed.contains("90, 90"));
        // The thumbnail is the pointer's last field: a pointer without one ends in a zero tag.
        let mut bare = pointer();
        bare.thumbnail = None;
        let bytes = message(Content::Attachment(bare)).encode();
        assert_eq!(bytes.last(), Some(&0));
    }

    #[test]
    fn attachment_keys_are_random() {
        let a = AttachmentKey::generate().unwrap();
        let b = AttachmentKey::generate().unwrap();
        assert_ne!(a, b);
        assert_ne!(a.as_bytes(), &[0; 32]);
    }

    #[test]
    fn a_pointer_alone_round_trips_and_refuses_trailing_bytes() {
        let p = pointer();
        let bytes = p.encode();
        assert_eq!(AttachmentPointer::decode(&bytes).unwrap(), p);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(AttachmentPointer::decode(&longer).is_err());
        assert!(AttachmentPointer::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn attachment_key_is_redacted_and_zeroizable() {
        let mut key = AttachmentKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{key:?}"), "AttachmentKey(<redacted>)");
        let printed = format!("{:?} {:#?}", pointer(), Content::Attachment(pointer()));
        assert!(printed.contains("AttachmentKey(<redacted>)"));
        assert!(
            !printed.contains(&pointer().blob_id),
            "the blob id is a read capability"
        );
        assert!(!printed.contains("171") && !printed.contains("ab") && !printed.contains("AB"));
        assert_eq!(key.as_bytes(), &[0xab; 32]);
        assert_eq!(key.clone(), key);
        assert_ne!(key, AttachmentKey::from_bytes([0xac; 32]));
        key.zeroize();
        assert_eq!(key.as_bytes(), &[0; 32]);
    }

    fn arb_id() -> impl Strategy<Value = MessageId> {
        any::<[u8; 16]>().prop_map(MessageId)
    }

    prop_compose! {
        fn arb_thumbnail()(
            media_type in ".*", width in any::<u32>(), height in any::<u32>(),
            data in vec(any::<u8>(), 0..300),
        ) -> Thumbnail {
            Thumbnail { media_type, width, height, data }
        }
    }

    prop_compose! {
        fn arb_pointer()(
            blob_id in ".*", key in any::<[u8; 32]>(), digest in any::<[u8; 32]>(),
            size in any::<u64>(), media_type in ".*", file_name in of(".*"), caption in of(".*"),
            thumbnail in of(arb_thumbnail().prop_map(Box::new)),
        ) -> AttachmentPointer {
            let key = AttachmentKey::from_bytes(key);
            AttachmentPointer {
                blob_id, key, digest, size, media_type, file_name, caption, thumbnail,
            }
        }
    }

    fn arb_call_kind() -> impl Strategy<Value = CallSignalKind> {
        prop_oneof![
            (".*", any::<bool>()).prop_map(|(sdp, video)| CallSignalKind::Offer { sdp, video }),
            ".*".prop_map(|sdp| CallSignalKind::Answer { sdp }),
            (".*", of(".*"), any::<Option<u16>>()).prop_map(|(candidate, sdp_mid, index)| {
                CallSignalKind::IceCandidate {
                    candidate,
                    sdp_mid,
                    sdp_m_line_index: index,
                }
            }),
            Just(CallSignalKind::Ringing),
            Just(CallSignalKind::Busy),
            Just(CallSignalKind::Hangup),
            Just(CallSignalKind::Decline),
            any::<bool>().prop_map(|video| CallSignalKind::Join { video }),
            Just(CallSignalKind::Leave),
        ]
    }

    fn arb_content() -> impl Strategy<Value = Content> {
        let unknown_type = prop_oneof![Just(0u16), 11..=u16::MAX];
        prop_oneof![
            ".*".prop_map(|body| Content::Text { body }),
            (arb_id(), ".*").prop_map(|(in_reply_to, body)| Content::Reply { in_reply_to, body }),
            (arb_id(), ".*", any::<bool>()).prop_map(|(target, emoji, remove)| Content::Reaction {
                target,
                emoji,
                remove
            }),
            (arb_id(), ".*").prop_map(|(target, body)| Content::Edit { target, body }),
            arb_id().prop_map(|target| Content::Delete { target }),
            vec(arb_id(), 0..8).prop_map(|message_ids| Content::ReadReceipt { message_ids }),
            vec(arb_id(), 0..8).prop_map(|message_ids| Content::DeliveryReceipt { message_ids }),
            any::<bool>().prop_map(|active| Content::Typing { active }),
            arb_pointer().prop_map(Content::Attachment),
            any::<u32>().prop_map(|seconds| Content::DisappearingTimer { seconds }),
            (any::<[u8; 16]>(), arb_call_kind())
                .prop_map(|(call_id, kind)| Content::Call(CallSignal { call_id, kind })),
            (unknown_type, vec(any::<u8>(), 0..300))
                .prop_map(|(content_type, body)| Content::Unknown { content_type, body }),
        ]
    }

    prop_compose! {
        fn arb_message()(
            id in arb_id(), sent_at_ms in any::<u64>(), expires_after_secs in any::<Option<u32>>(),
            content in arb_content(),
        ) -> Message {
            Message { id, sent_at_ms, expires_after_secs, content }
        }
    }

    prop_compose! {
        fn arb_sender_state()(
            list_version in any::<u64>(),
            directory in of((any::<u64>(), any::<[u8; 32]>())),
        ) -> SenderState {
            SenderState {
                list_version,
                directory: directory.map(|(epoch, root)| DirectoryView { epoch, root }),
            }
        }
    }

    prop_compose! {
        fn arb_opening()(key in any::<[u8; 32]>(), signature in vec(any::<u8>(), 64)) -> Opening {
            let mut bytes = [0u8; 64];
            bytes.copy_from_slice(&signature);
            Opening { key: FrankingKey::from_bytes(key), signature: bytes }
        }
    }

    prop_compose! {
        fn arb_metadata()(name in ".*", avatar in of(arb_pointer())) -> GroupMetadata {
            GroupMetadata { name, avatar }
        }
    }

    /// Decoding must not panic, and whatever it accepts must be the canonical encoding.
    fn assert_canonical(bytes: &[u8]) {
        if let Ok(message) = Message::decode(bytes) {
            assert_eq!(message.encode(), bytes);
        }
        if let Ok(plaintext) = Plaintext::decode(bytes) {
            assert_eq!(plaintext.encode(), bytes);
        }
        if let Ok(metadata) = GroupMetadata::decode(bytes) {
            assert_eq!(metadata.encode(), bytes);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn message_round_trips(message in arb_message()) {
            prop_assert_eq!(Message::decode(&message.encode()), Ok(message));
        }

        #[test]
        fn plaintext_round_trips(
            seq in any::<Option<u64>>(),
            state in of(arb_sender_state()),
            franking in of(arb_opening()),
            message in arb_message(),
        ) {
            // A state travels only with a number (version 3), an opening only with both
            // (version 4).
            let sender = seq.and(state);
            let franking = sender.and(franking);
            let plaintext = Plaintext { seq, sender, franking, message };
            prop_assert_eq!(Plaintext::decode(&plaintext.encode()), Ok(plaintext));
        }

        #[test]
        fn mutated_plaintexts_decode_canonically(
            seq in any::<u64>(),
            state in of(arb_sender_state()),
            franking in of(arb_opening()),
            message in arb_message(),
            edits in vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let franking = state.and(franking);
            let mut bytes = Plaintext { seq: Some(seq), sender: state, franking, message }.encode();
            for (at, value) in &edits {
                let len = bytes.len();
                bytes[at % len] = *value;
            }
            assert_canonical(&bytes);
            assert_canonical(&bytes[..cut % (bytes.len() + 1)]);
        }

        #[test]
        fn group_metadata_round_trips_arbitrary(metadata in arb_metadata()) {
            prop_assert_eq!(GroupMetadata::decode(&metadata.encode()), Ok(metadata));
        }

        #[test]
        fn arbitrary_bytes_decode_canonically(bytes in vec(any::<u8>(), 0..512)) {
            assert_canonical(&bytes);
        }

        #[test]
        fn arbitrary_bodies_decode_canonically(kind in 0u16..=12, body in vec(any::<u8>(), 0..256)) {
            assert_canonical(&with_body(kind, &body));
        }

        #[test]
        fn mutated_encodings_decode_canonically(
            message in arb_message(),
            metadata in arb_metadata(),
            edits in vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            for mut bytes in [message.encode(), metadata.encode()] {
                for (at, value) in &edits {
                    let len = bytes.len();
                    bytes[at % len] = *value;
                }
                assert_canonical(&bytes);
                assert_canonical(&bytes[..cut % (bytes.len() + 1)]);
            }
        }
    }
}
