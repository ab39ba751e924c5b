//! Membership changes that need the server first: starting a conversation, and adding an
//! account to a group. The device lists of the accounts involved are fetched and accepted (an
//! identity change stops the operation, for the user to verify), one key package is claimed
//! for every device of them (this device excepted), and the commit is queued. Several
//! requests, one operation: the caller gets an [`OperationId`] and, at the end,
//! [`Notification::Completed`] or [`Notification::OperationFailed`]. Changes that need nothing
//! from the server (removing a member, renaming) are queued at once.

use std::collections::{BTreeMap, BTreeSet};

use nightjar_core::content::GroupMetadata;
use nightjar_core::identity::validate_username;
use nightjar_core::{ConversationId, ConversationKind};

use super::outbox::enqueue_commit;
use super::{Machine, Notification, Pending, conversation_row};
use crate::error::{Error, Result};
use crate::rows::OutboxItem;
use crate::store::ClientStore;
use crate::transport::{Failure, Request, Response};

/// Names one multi-request operation until it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperationId(pub u64);

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    /// There is no such account.
    #[error("no account named {0}")]
    NoAccount(String),
    /// The account's identity key changed: the user must verify it first.
    #[error("the identity key of {0} changed")]
    IdentityChanged(String),
    /// The server refused, or could not be reached.
    #[error("{0}")]
    Server(String),
    /// What the server sent, or the engine made of it, is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// What an operation makes once it has the device lists and key packages.
#[derive(Debug)]
enum Goal {
    /// A new conversation.
    Create {
        kind: ConversationKind,
        name: Option<String>,
    },
    /// The peer's devices added to an existing group.
    Add { conversation: ConversationId },
}

/// A membership change waiting for the server's answers.
#[derive(Debug)]
pub(super) struct Creation {
    goal: Goal,
    peers: Vec<String>,
    /// Accounts whose device list or key packages are still asked for.
    waiting: BTreeSet<String>,
    /// Device lists accepted so far: claims start once all are in.
    claiming: bool,
    key_packages: Vec<Vec<u8>>,
    /// Device lists the directory did not prove yet (an account that changed seconds ago):
    /// asked for again at the given time (ms).
    unproven: BTreeMap<String, UnprovenList>,
}

/// A device list a creation waits to see proven by the directory.
#[derive(Clone, Copy, Debug)]
struct UnprovenList {
    /// How many times it came back unproven.
    tries: u32,
    /// When to ask again (`None`: asked, waiting for the answer).
    again_at: Option<u64>,
}

/// How many times a creation asks for a device list the directory does not prove yet before
/// it gives up (the directory publishes every few seconds; this covers about half a minute).
const UNPROVEN_TRIES: u32 = 6;

impl<S: ClientStore> Machine<S> {
    /// Starts a 1:1 conversation with `peer`, or a group named `name` with `peers`. Check with
    /// [`Self::direct_conversation`] first: this always creates a new one.
    pub fn create_conversation(
        &mut self,
        _now: u64,
        kind: ConversationKind,
        peers: &[String],
        name: Option<&str>,
    ) -> Result<OperationId> {
        let me = self.me.username.clone();
        let mut accounts: Vec<String> = Vec::new();
        for p in peers {
            validate_username(p)?;
            if *p == me {
                return Err(Error::Usage("that is your own account".into()));
            }
            if self
                .store
                .contact(p)?
                .is_some_and(|c| c.changed_list.is_some())
            {
                return Err(Error::IdentityChanged(p.clone()));
            }
            if !accounts.contains(p) {
                accounts.push(p.clone());
            }
        }
        match kind {
            ConversationKind::Direct if accounts.len() != 1 => {
                return Err(Error::Usage(
                    "a 1:1 conversation has exactly one other account".into(),
                ));
            }
            ConversationKind::Group if accounts.is_empty() => {
                return Err(Error::Usage("name at least one other account".into()));
            }
            ConversationKind::Group if name.is_none_or(|n| n.trim().is_empty()) => {
                return Err(Error::Usage("a group needs a name".into()));
            }
            _ => {}
        }
        let op = OperationId(self.next_operation);
        self.next_operation += 1;
        let everyone: BTreeSet<String> = accounts.iter().cloned().chain([me]).collect();
        for account in &everyone {
            self.request(
                Request::Account {
                    username: account.clone(),
                },
                Pending::CreateAccount {
                    op,
                    username: account.clone(),
                },
            );
        }
        self.creations.insert(
            op,
            Creation {
                goal: Goal::Create {
                    kind,
                    name: name.map(str::to_owned),
                },
                peers: accounts,
                waiting: everyone,
                claiming: false,
                key_packages: Vec::new(),
                unproven: BTreeMap::new(),
            },
        );
        Ok(op)
    }

    /// Adds every device of `username` to the group `conversation`.
    pub fn add_member(
        &mut self,
        _now: u64,
        conversation: ConversationId,
        username: &str,
    ) -> Result<OperationId> {
        validate_username(username)?;
        let info = self.engine.conversation(conversation)?;
        if info.kind != ConversationKind::Group || !info.active {
            return Err(Error::Usage(
                "members are added to groups this device is in".into(),
            ));
        }
        if info.members.iter().any(|m| m.username == username) {
            return Err(Error::Usage(format!("{username} is already a member")));
        }
        if self
            .store
            .contact(username)?
            .is_some_and(|c| c.changed_list.is_some())
        {
            return Err(Error::IdentityChanged(username.to_owned()));
        }
        let op = OperationId(self.next_operation);
        self.next_operation += 1;
        self.request(
            Request::Account {
                username: username.to_owned(),
            },
            Pending::CreateAccount {
                op,
                username: username.to_owned(),
            },
        );
        self.creations.insert(
            op,
            Creation {
                goal: Goal::Add { conversation },
                peers: vec![username.to_owned()],
                waiting: BTreeSet::from([username.to_owned()]),
                claiming: false,
                key_packages: Vec::new(),
                unproven: BTreeMap::new(),
            },
        );
        Ok(op)
    }

    /// Removes every device of `username` from the group `conversation` (queued at once).
    pub fn remove_member(
        &mut self,
        now: u64,
        conversation: ConversationId,
        username: &str,
    ) -> Result<()> {
        self.atomic(|engine, store| {
            let bundle = engine.remove_member(conversation, username)?;
            enqueue_commit(engine, store, &bundle, now)
        })?;
        self.work(now);
        Ok(())
    }

    /// This account leaves the group `conversation`: its other devices are removed at once
    /// (a commit), then this device asks to leave (a proposal the other members commit). The
    /// account's devices stop reconciling the group, so none of them adds another back.
    pub fn leave_group(&mut self, now: u64, conversation: ConversationId) -> Result<()> {
        let info = self.engine.conversation(conversation)?;
        if info.kind != ConversationKind::Group || !info.active {
            return Err(Error::Usage(
                "only a group this device is in can be left".into(),
            ));
        }
        let me = self.me.clone();
        let others: Vec<_> = info
            .members
            .iter()
            .filter(|m| m.username == me.username && **m != me)
            .cloned()
            .collect();
        let id = conversation.to_string();
        self.atomic(|engine, store| {
            if !others.is_empty() {
                let bundle = engine.remove_devices(conversation, others)?;
                enqueue_commit(engine, store, &bundle, now)?;
            }
            store.set_meta(&format!("{}{id}", super::meta::LEAVING), "1")?;
            store.push_outbox(&id, &OutboxItem::Leave, &super::random_hex()?, now)?;
            Ok(())
        })?;
        self.work(now);
        Ok(())
    }

    /// Renames the group `conversation` (queued at once).
    pub fn rename_group(
        &mut self,
        now: u64,
        conversation: ConversationId,
        name: &str,
    ) -> Result<()> {
        if name.trim().is_empty() {
            return Err(Error::Usage("a group needs a name".into()));
        }
        let metadata = GroupMetadata {
            name: name.trim().to_owned(),
            avatar: None,
        };
        self.atomic(|engine, store| {
            let bundle = engine.set_metadata(conversation, &metadata)?;
            enqueue_commit(engine, store, &bundle, now)
        })?;
        self.work(now);
        Ok(())
    }

    /// The active 1:1 conversation with `peer`, if there is one: a direct conversation whose
    /// member accounts are exactly this account and `peer` (or only this account while its
    /// creating commit waits for the server), as the engine verified them on every Welcome and
    /// commit. If a race made two, the lowest id, so both sides pick the same.
    pub fn direct_conversation(
        &mut self,
        peer: &str,
    ) -> Result<Option<nightjar_core::ConversationId>> {
        let me = self.me.username.clone();
        let mut found = Vec::new();
        for row in self.store.conversations()? {
            if !row.active || row.kind != "direct" {
                continue;
            }
            let Some(id) = ConversationId::parse(&row.id) else {
                continue;
            };
            let Ok(info) = self.engine.conversation(id) else {
                continue;
            };
            let exact = info.kind == ConversationKind::Direct
                && info.active
                && info.peer.as_deref() == Some(peer)
                && info
                    .members
                    .iter()
                    .all(|m| m.username == me || m.username == peer);
            if exact {
                found.push(id);
            }
        }
        Ok(found.into_iter().min())
    }

    fn fail_creation(&mut self, op: OperationId, reason: OperationError) {
        if self.creations.remove(&op).is_some() {
            self.notifications.push_back(Notification::OperationFailed {
                operation: op,
                reason,
            });
        }
    }

    /// Asks again for the device lists creations wait to see proven, once their time came.
    pub(super) fn ask_again_for_unproven(&mut self, now: u64) {
        let mut due = Vec::new();
        for (op, creation) in &mut self.creations {
            for (username, entry) in &mut creation.unproven {
                if entry.again_at.is_some_and(|t| t <= now) {
                    entry.again_at = None;
                    due.push((*op, username.clone()));
                }
            }
        }
        for (op, username) in due {
            self.request(
                Request::Account {
                    username: username.clone(),
                },
                Pending::CreateAccount { op, username },
            );
        }
    }

    /// When the next unproven device list is asked for again.
    pub(super) fn unproven_wakeup(&self) -> Option<u64> {
        self.creations
            .values()
            .flat_map(|c| c.unproven.values().filter_map(|e| e.again_at))
            .min()
    }

    /// A device list for a creation.
    pub(super) fn on_create_account(
        &mut self,
        now: u64,
        op: OperationId,
        username: &str,
        outcome: std::result::Result<Response, Failure>,
    ) -> Result<()> {
        if !self.creations.contains_key(&op) {
            return Ok(());
        }
        let account = match outcome {
            Ok(Response::Account(account)) => account,
            Err(Failure::Refused(e)) if e.code == nightjar_api::ErrorCode::NotFound => {
                self.fail_creation(op, OperationError::NoAccount(username.to_owned()));
                return Ok(());
            }
            Err(f) => {
                self.fail_creation(op, OperationError::Server(f.to_string()));
                return Ok(());
            }
            Ok(_) => {
                let text = "unexpected answer from the server".to_owned();
                self.fail_creation(op, OperationError::Invalid(text));
                return Ok(());
            }
        };
        match self.accept_account(now, username, &account) {
            Ok(()) => {}
            Err(Error::NotYetProven(why)) => {
                // The account changed moments ago and the directory has not published it yet:
                // ask again in a second or two, a few times.
                let Some(creation) = self.creations.get_mut(&op) else {
                    return Ok(());
                };
                let entry = creation
                    .unproven
                    .entry(username.to_owned())
                    .or_insert(UnprovenList {
                        tries: 0,
                        again_at: None,
                    });
                entry.tries += 1;
                if entry.tries < UNPROVEN_TRIES {
                    entry.again_at = Some(now + 1000 * u64::from(entry.tries));
                    return Ok(());
                }
                self.fail_creation(
                    op,
                    OperationError::Invalid(format!("refused the keys of {username}: {why}")),
                );
                return Ok(());
            }
            Err(Error::Transparency(why)) => {
                self.fail_creation(
                    op,
                    OperationError::Invalid(format!("refused the keys of {username}: {why}")),
                );
                return Ok(());
            }
            Err(Error::IdentityChanged(name)) => {
                self.fail_creation(op, OperationError::IdentityChanged(name));
                return Ok(());
            }
            Err(Error::Engine(e)) => {
                self.fail_creation(
                    op,
                    OperationError::Invalid(format!(
                        "the device list of {username} is invalid: {e}"
                    )),
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let Some(creation) = self.creations.get_mut(&op) else {
            return Ok(());
        };
        creation.unproven.remove(username);
        creation.waiting.remove(username);
        if !creation.waiting.is_empty() || creation.claiming {
            return Ok(());
        }
        creation.claiming = true;
        let mine = matches!(creation.goal, Goal::Create { .. }).then(|| self.me.username.clone());
        let everyone: Vec<String> = creation.peers.iter().cloned().chain(mine).collect();
        creation.waiting = everyone.iter().cloned().collect();
        for account in everyone {
            self.request(
                Request::ClaimKeyPackages {
                    username: account.clone(),
                },
                Pending::CreateClaim {
                    op,
                    username: account,
                },
            );
        }
        Ok(())
    }

    /// Key packages for a creation; the last one makes the conversation.
    pub(super) fn on_create_claim(
        &mut self,
        now: u64,
        op: OperationId,
        username: &str,
        outcome: std::result::Result<Response, Failure>,
    ) -> Result<()> {
        let me = self.me.clone();
        let Some(creation) = self.creations.get_mut(&op) else {
            return Ok(());
        };
        match outcome {
            Ok(Response::Claimed(claimed)) => {
                creation.key_packages.extend(
                    claimed
                        .key_packages
                        .into_iter()
                        .filter(|k| {
                            !(username == me.username && k.device_id == me.device_id.to_string())
                        })
                        .map(|k| k.key_package.0),
                );
            }
            Err(f) => {
                self.fail_creation(op, OperationError::Server(f.to_string()));
                return Ok(());
            }
            Ok(_) => {
                let text = "unexpected answer from the server".to_owned();
                self.fail_creation(op, OperationError::Invalid(text));
                return Ok(());
            }
        }
        creation.waiting.remove(username);
        if !creation.waiting.is_empty() {
            return Ok(());
        }
        let Some(creation) = self.creations.remove(&op) else {
            return Ok(());
        };
        let key_packages = creation.key_packages;
        let result = match creation.goal {
            Goal::Create { kind, name } => {
                let metadata = name.map(|n| GroupMetadata {
                    name: n,
                    avatar: None,
                });
                let members: Vec<&str> = creation.peers.iter().map(String::as_str).collect();
                self.atomic(|engine, store| {
                    let (conversation, bundle) = engine.create_conversation(
                        now,
                        kind,
                        &members,
                        metadata.as_ref(),
                        &key_packages,
                    )?;
                    enqueue_commit(engine, store, &bundle, now)?;
                    let row = conversation_row(engine, conversation)?;
                    store.upsert_conversation(&row, now)?;
                    Ok(conversation)
                })
            }
            Goal::Add { conversation } => {
                let peer = creation.peers.first().cloned().unwrap_or_default();
                self.atomic(|engine, store| {
                    let bundle = engine.add_member(conversation, &peer, &key_packages)?;
                    enqueue_commit(engine, store, &bundle, now)?;
                    Ok(conversation)
                })
            }
        };
        match result {
            Ok(conversation) => {
                self.notifications.push_back(Notification::Completed {
                    operation: op,
                    conversation,
                });
                self.notifications
                    .push_back(Notification::ConversationChanged(conversation));
            }
            Err(Error::Engine(e)) => {
                self.fail_creation_done(op, OperationError::Invalid(e.to_string()));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn fail_creation_done(&mut self, op: OperationId, reason: OperationError) {
        self.notifications.push_back(Notification::OperationFailed {
            operation: op,
            reason,
        });
    }
}
