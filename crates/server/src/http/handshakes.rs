//! The driver of handshake validation on the send path: reads the conversation's public state
//! and the devices' registered keys, runs the pure checks of `rules/commits.rs`, and fills in
//! the routing the commit proves. Application messages return at the first line: they never
//! load group state.

use nightjar_api::{EnvelopeKind, ErrorCode};
use nightjar_core::handshake::HandshakeError;

use crate::error::{Error, Result};
use crate::rules::commits::{
    HandshakeRefusal, accepted, address, check_commit_rules, check_proposal_room, credential,
    leaves_to_check, starting_state,
};
use crate::rules::delivery::{CheckedSend, Handshake};
use crate::state::AppState;
use crate::store::{Sender, StoredGroup};

/// The API error for a refused handshake message.
fn refusal_error(refusal: HandshakeRefusal) -> Error {
    match refusal {
        HandshakeRefusal::Mls(HandshakeError::Forged | HandshakeError::WrongSender) => Error::new(
            ErrorCode::Forbidden,
            format!("handshake refused: {refusal}"),
        ),
        other => Error::bad_request(format!("handshake refused: {other}")),
    }
}

/// Validates a commit or proposal in `send` against the conversation's public state and
/// records the outcome in `send.handshake` (and, for a commit, its members and Welcome
/// recipients). Refuses with an error what can never be accepted; a message made in another
/// epoch is marked [`Handshake::Stale`] so the store answers it (an epoch conflict, or the
/// first answer of a retried send).
pub(super) async fn validate(
    state: &AppState,
    sender: &Sender,
    send: &mut CheckedSend,
) -> Result<()> {
    if !matches!(send.kind, EnvelopeKind::Commit | EnvelopeKind::Proposal) {
        return Ok(());
    }
    let poster = credential(&sender.address)
        .ok_or_else(|| Error::bad_request("the sending device's address is malformed"))?;
    let conversation = send.conversation;
    let stored = state
        .store
        .group_state(&conversation.to_string())
        .await
        .map_err(Error::from)?;
    let stored = match &stored {
        StoredGroup::NoState => return Err(refusal_error(HandshakeRefusal::NoState)),
        StoredGroup::Missing if send.kind == EnvelopeKind::Commit && send.epoch == 0 => None,
        StoredGroup::Missing => {
            send.handshake = Handshake::Stale;
            return Ok(());
        }
        StoredGroup::State {
            state, proposals, ..
        } => Some((state.as_slice(), proposals.as_slice())),
    };
    let poster_key = if stored.is_none() {
        state
            .store
            .device_keys(std::slice::from_ref(&sender.address))
            .await
            .map_err(Error::from)?
            .remove(&sender.address)
    } else {
        None
    };
    let waiting = stored.map_or(0, |(_, p)| p.len());
    let mut group = match starting_state(
        conversation,
        stored,
        send.group_info.as_deref(),
        &poster,
        poster_key.as_deref(),
        send.epoch,
    ) {
        Ok(group) => group,
        Err(HandshakeRefusal::Stale) | Err(HandshakeRefusal::Mls(HandshakeError::WrongEpoch)) => {
            send.handshake = Handshake::Stale;
            return Ok(());
        }
        Err(other) => return Err(refusal_error(other)),
    };
    let stale = |e: HandshakeError| match e {
        HandshakeError::WrongEpoch => Ok(()),
        other => Err(refusal_error(other.into())),
    };
    if send.kind == EnvelopeKind::Proposal {
        let members = group.members().map_err(|e| refusal_error(e.into()))?.len();
        check_proposal_room(waiting, members).map_err(refusal_error)?;
        return match group.process_proposal(conversation, &send.payload, &poster) {
            Ok(()) => {
                send.handshake = Handshake::Proposal;
                Ok(())
            }
            Err(e) => {
                stale(e)?;
                send.handshake = Handshake::Stale;
                Ok(())
            }
        };
    }
    let facts = match group.process_commit(conversation, &send.payload, &poster) {
        Ok(facts) => facts,
        Err(e) => {
            stale(e)?;
            send.handshake = Handshake::Stale;
            return Ok(());
        }
    };
    if facts.members.len() > state.config.limits.max_conversation_members {
        return Err(Error::bad_request("too many member devices"));
    }
    let to_check: Vec<_> = leaves_to_check(&facts)
        .map(|l| address(&l.device))
        .collect();
    let keys = state
        .store
        .device_keys(&to_check)
        .await
        .map_err(Error::from)?;
    check_commit_rules(&facts, &keys, send.welcome.is_some()).map_err(refusal_error)?;
    let commit = accepted(&group, &facts).map_err(refusal_error)?;
    send.members = commit.members;
    if let Some((_, recipients)) = &mut send.welcome {
        *recipients = commit.added;
    }
    send.handshake = Handshake::Commit {
        state: commit.state,
    };
    Ok(())
}
