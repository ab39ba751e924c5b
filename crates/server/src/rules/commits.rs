//! Which handshake messages (commits, proposals) the delivery service accepts, and what an
//! accepted commit does to routing.
//!
//! Every commit and proposal is an MLS PublicMessage, validated against the conversation's
//! public state with OpenMLS's `PublicGroup` ([`nightjar_core::handshake`]): signature, epoch,
//! sender membership, tree validity. On top of MLS, Nightjar's rules: the MLS sender is the
//! posting device; every added or updated leaf names an active device of its account with the
//! signature key the server holds for it; a leaf never changes identity; a direct conversation
//! has exactly two accounts, for good. The member set and the Welcome's recipients come from the
//! validated commit, never from the request.

use std::collections::HashMap;

use nightjar_api::DeviceAddress;
use nightjar_core::ConversationId;
use nightjar_core::ConversationKind;
use nightjar_core::handshake::{CommitFacts, HandshakeError, Leaf, PublicState};
use nightjar_core::identity::{DeviceCredential, DeviceId};

/// Why a handshake message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HandshakeRefusal {
    /// OpenMLS or a Nightjar rule that needs no server data refused it.
    #[error("{0}")]
    Mls(#[from] HandshakeError),
    /// The message was made in another epoch than the stored state's.
    #[error("the message was made in another epoch")]
    Stale,
    /// A commit creating a conversation came without the GroupInfo of epoch 0.
    #[error("the commit creating a conversation must carry the GroupInfo of epoch 0")]
    NoGroupInfo,
    /// A GroupInfo came with something other than a creation commit.
    #[error("only the commit creating a conversation carries a GroupInfo")]
    UnexpectedGroupInfo,
    /// The conversation exists but has no public state (created before validation existed).
    #[error("this conversation has no server-side group state; create a new one")]
    NoState,
    /// An added or updated leaf is not an active device with that signature key.
    #[error("device {0} is not in its account's device list with that key")]
    DeviceNotListed(String),
    /// A direct conversation would not have exactly its two accounts.
    #[error("a direct conversation has exactly two accounts")]
    DirectConversation,
    /// A commit adds devices without a Welcome for them, or carries a Welcome but adds none.
    #[error("a commit carries a Welcome exactly when it adds devices")]
    WelcomeMismatch,
    /// Too many proposals are waiting in this epoch.
    #[error("too many proposals are waiting for a commit")]
    TooManyProposals,
}

/// A device's address as the API spells it.
pub(crate) fn address(device: &DeviceCredential) -> DeviceAddress {
    DeviceAddress {
        username: device.username.clone(),
        device_id: device.device_id.to_string(),
    }
}

/// The MLS credential of a posting device, if its address is well formed.
pub(crate) fn credential(address: &DeviceAddress) -> Option<DeviceCredential> {
    Some(DeviceCredential {
        username: address.username.clone(),
        device_id: DeviceId::parse(&address.device_id)?,
    })
}

/// Registered signature keys of active devices, by address.
pub(crate) type DeviceKeys = HashMap<DeviceAddress, Vec<u8>>;

/// An accepted commit: the new state to store and the routing it proves.
#[derive(Debug)]
pub(crate) struct AcceptedCommit {
    /// The encoded public state after the commit.
    pub(crate) state: Vec<u8>,
    /// Every member device after the commit, sorted.
    pub(crate) members: Vec<DeviceAddress>,
    /// The devices the commit adds: the Welcome's recipients.
    pub(crate) added: Vec<DeviceAddress>,
}

/// Loads the state a handshake is validated against: the stored one, or for a creation
/// commit (no stored state) the one built from the creator's GroupInfo.
pub(crate) fn starting_state(
    conversation: ConversationId,
    stored: Option<(&[u8], &[Vec<u8>])>,
    group_info: Option<&[u8]>,
    poster: &DeviceCredential,
    poster_key: Option<&[u8]>,
    epoch: u64,
) -> Result<PublicState, HandshakeRefusal> {
    match (stored, group_info) {
        (Some(_), Some(_)) => Err(HandshakeRefusal::UnexpectedGroupInfo),
        (Some((state, proposals)), None) => {
            let state = PublicState::decode(conversation, state, proposals)?;
            if state.epoch() != epoch {
                return Err(HandshakeRefusal::Stale);
            }
            Ok(state)
        }
        (None, Some(info)) if epoch == 0 => {
            let key = poster_key.ok_or(HandshakeRefusal::DeviceNotListed(poster.to_string()))?;
            Ok(PublicState::from_group_info(
                conversation,
                info,
                poster,
                key,
            )?)
        }
        (None, _) => Err(HandshakeRefusal::NoGroupInfo),
    }
}

/// Validates a commit against `state` (advancing it) and then Nightjar's device-list and
/// conversation-kind rules; `keys` must hold the registered keys of the devices the commit
/// adds or updates (see [`leaves_to_check`]).
pub(crate) fn check_commit_rules(
    facts: &CommitFacts,
    keys: &DeviceKeys,
    has_welcome: bool,
) -> Result<(), HandshakeRefusal> {
    for leaf in leaves_to_check(facts) {
        let addr = address(&leaf.device);
        if keys.get(&addr) != Some(&leaf.signature_key) {
            return Err(HandshakeRefusal::DeviceNotListed(leaf.device.to_string()));
        }
    }
    if facts.kind == ConversationKind::Direct {
        let after = facts.accounts_after();
        let ok = if facts.accounts_before.is_empty() {
            after.len() == 2
        } else {
            after.is_subset(&facts.accounts_before)
        };
        if !ok {
            return Err(HandshakeRefusal::DirectConversation);
        }
    }
    if facts.added.is_empty() == has_welcome {
        return Err(HandshakeRefusal::WelcomeMismatch);
    }
    Ok(())
}

/// The leaves whose registered keys [`check_commit_rules`] needs.
pub(crate) fn leaves_to_check(facts: &CommitFacts) -> impl Iterator<Item = &Leaf> {
    facts.added.iter().chain(&facts.updated)
}

/// The routing an accepted commit proves.
pub(crate) fn accepted(
    state: &PublicState,
    facts: &CommitFacts,
) -> Result<AcceptedCommit, HandshakeRefusal> {
    let mut members: Vec<DeviceAddress> =
        facts.members.iter().map(|l| address(&l.device)).collect();
    members.sort();
    members.dedup();
    let mut added: Vec<DeviceAddress> = facts.added.iter().map(|l| address(&l.device)).collect();
    added.sort();
    added.dedup();
    Ok(AcceptedCommit {
        state: state.encode()?,
        members,
        added,
    })
}

/// A proposal is accepted while fewer than `max` are waiting in its epoch.
pub(crate) fn check_proposal_room(waiting: usize, max: usize) -> Result<(), HandshakeRefusal> {
    if waiting >= max {
        Err(HandshakeRefusal::TooManyProposals)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn leaf(user: &str, id: u64, key: u8) -> Leaf {
        Leaf {
            device: DeviceCredential {
                username: user.into(),
                device_id: DeviceId(id),
            },
            signature_key: vec![key; 32],
        }
    }

    fn facts(
        kind: ConversationKind,
        before: &[&str],
        members: Vec<Leaf>,
        added: Vec<Leaf>,
    ) -> CommitFacts {
        CommitFacts {
            sender: members[0].device.clone(),
            epoch: 1,
            added,
            updated: Vec::new(),
            removed: Vec::new(),
            members,
            accounts_before: before
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<BTreeSet<_>>(),
            kind,
        }
    }

    #[test]
    fn added_devices_must_be_registered_with_their_key() {
        let f = facts(
            ConversationKind::Group,
            &["alice"],
            vec![leaf("alice", 1, 1), leaf("bob", 2, 2)],
            vec![leaf("bob", 2, 2)],
        );
        let mut keys = DeviceKeys::new();
        assert!(matches!(
            check_commit_rules(&f, &keys, true),
            Err(HandshakeRefusal::DeviceNotListed(_))
        ));
        keys.insert(address(&leaf("bob", 2, 2).device), vec![9; 32]);
        assert!(check_commit_rules(&f, &keys, true).is_err());
        keys.insert(address(&leaf("bob", 2, 2).device), vec![2; 32]);
        assert_eq!(check_commit_rules(&f, &keys, true), Ok(()));
        assert_eq!(
            check_commit_rules(&f, &keys, false),
            Err(HandshakeRefusal::WelcomeMismatch)
        );
    }

    #[test]
    fn direct_conversations_keep_their_two_accounts() {
        let mut keys = DeviceKeys::new();
        for l in [leaf("bob", 2, 2), leaf("mallory", 3, 3)] {
            keys.insert(address(&l.device), l.signature_key.clone());
        }
        let create = facts(
            ConversationKind::Direct,
            &[],
            vec![leaf("alice", 1, 1), leaf("bob", 2, 2)],
            vec![leaf("bob", 2, 2)],
        );
        assert_eq!(check_commit_rules(&create, &keys, true), Ok(()));
        let third = facts(
            ConversationKind::Direct,
            &["alice", "bob"],
            vec![
                leaf("alice", 1, 1),
                leaf("bob", 2, 2),
                leaf("mallory", 3, 3),
            ],
            vec![leaf("mallory", 3, 3)],
        );
        assert_eq!(
            check_commit_rules(&third, &keys, true),
            Err(HandshakeRefusal::DirectConversation)
        );
        let alone = facts(
            ConversationKind::Direct,
            &[],
            vec![leaf("alice", 1, 1)],
            vec![],
        );
        assert_eq!(
            check_commit_rules(&alone, &keys, false),
            Err(HandshakeRefusal::DirectConversation)
        );
    }

    #[test]
    fn proposals_are_capped_per_epoch() {
        assert_eq!(check_proposal_room(0, 2), Ok(()));
        assert_eq!(
            check_proposal_room(2, 2),
            Err(HandshakeRefusal::TooManyProposals)
        );
    }
}
