//! Public, secret-free inspection of MLS messages, for the delivery service.
//!
//! The server cannot decrypt anything, but it must order commits per conversation and epoch
//! and route Welcomes. [`inspect`] reads exactly the fields MLS leaves in the clear — message
//! kind, group id and epoch — so the server can check that what a client claims about an
//! envelope matches the envelope. Application messages are accepted only as encrypted
//! PrivateMessages, commits and proposals only as PublicMessages (validated further by
//! [`crate::handshake`]).

use openmls::prelude::{
    ContentType, KeyPackageIn, MlsMessageBodyIn, MlsMessageIn, ProtocolMessage, ProtocolVersion,
};
use tls_codec::DeserializeBytes as _;

use crate::engine::ConversationId;

/// What kind of MLS message an envelope holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireKind {
    /// An encrypted application message (PrivateMessage).
    Application,
    /// A signed standalone proposal (PublicMessage).
    Proposal,
    /// A signed commit (PublicMessage).
    Commit,
    /// A Welcome for new members.
    Welcome,
}

/// The clear-text facts of an MLS message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireInfo {
    /// The message kind.
    pub kind: WireKind,
    /// The conversation, for everything but a Welcome.
    pub conversation: Option<ConversationId>,
    /// The epoch the message was made in, for everything but a Welcome.
    pub epoch: Option<u64>,
}

/// Why bytes are not an acceptable Nightjar MLS message.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Not a well-formed MLS message.
    #[error("not a well-formed MLS message")]
    Malformed,
    /// A kind Nightjar never sends: a handshake as PrivateMessage, an application message as
    /// PublicMessage, a GroupInfo or key package as an envelope.
    #[error("message kind not accepted")]
    Unsupported,
    /// The group id is not a Nightjar conversation id.
    #[error("group id is not a conversation id")]
    BadGroupId,
}

/// Reads the clear-text facts of an MLS message without any keys.
pub fn inspect(bytes: &[u8]) -> Result<WireInfo, WireError> {
    let message =
        MlsMessageIn::tls_deserialize_exact_bytes(bytes).map_err(|_| WireError::Malformed)?;
    let (message, public) = match message.extract() {
        MlsMessageBodyIn::PrivateMessage(m) => (ProtocolMessage::from(m), false),
        MlsMessageBodyIn::PublicMessage(m) => (ProtocolMessage::from(m), true),
        MlsMessageBodyIn::Welcome(_) => {
            return Ok(WireInfo {
                kind: WireKind::Welcome,
                conversation: None,
                epoch: None,
            });
        }
        _ => return Err(WireError::Unsupported),
    };
    let conversation: [u8; 16] = message
        .group_id()
        .as_slice()
        .try_into()
        .map_err(|_| WireError::BadGroupId)?;
    let kind = match (message.content_type(), public) {
        (ContentType::Application, false) => WireKind::Application,
        (ContentType::Proposal, true) => WireKind::Proposal,
        (ContentType::Commit, true) => WireKind::Commit,
        _ => return Err(WireError::Unsupported),
    };
    Ok(WireInfo {
        kind,
        conversation: Some(ConversationId(conversation)),
        epoch: Some(message.epoch().as_u64()),
    })
}

/// Facts about an uploaded key package that the directory needs, after checking its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPackageInfo {
    /// The leaf credential's identity bytes (`username:device-id`).
    pub identity: Vec<u8>,
    /// The leaf's signature public key.
    pub signature_key: Vec<u8>,
    /// Whether it is a last-resort package (reusable).
    pub last_resort: bool,
    /// The ciphersuite code point.
    pub suite: u16,
}

/// Verifies a key package's own signature and returns what a server may check against the
/// uploading device (that it is that device's key package and credential).
pub fn inspect_key_package(bytes: &[u8]) -> Result<KeyPackageInfo, WireError> {
    let crypto = openmls_libcrux_crypto::CryptoProvider::new().map_err(|_| WireError::Malformed)?;
    let kp = KeyPackageIn::tls_deserialize_exact_bytes(bytes)
        .map_err(|_| WireError::Malformed)?
        .validate(&crypto, ProtocolVersion::Mls10)
        .map_err(|_| WireError::Malformed)?;
    let leaf = kp.leaf_node();
    let basic = openmls::prelude::BasicCredential::try_from(leaf.credential().clone())
        .map_err(|_| WireError::Unsupported)?;
    Ok(KeyPackageInfo {
        identity: basic.identity().to_vec(),
        signature_key: leaf.signature_key().as_slice().to_vec(),
        last_resort: kp.last_resort(),
        suite: kp.ciphersuite() as u16,
    })
}
