//! Key transparency in the client: a peer's identity key and device list are accepted only
//! with the directory's lookup proof that they are the account's current entry, checked
//! against a root signed by the directory key this device pinned the first time, and no
//! older than (or forked from) the newest root it verified before.
//!
//! So a server that shows this device a key it does not publish in its directory is caught
//! here, and one that publishes a substituted key is caught by the account's own devices
//! (their history check) and by auditors, who see every published entry.
//!
//! Every message also states, inside the encryption, the sender's device-list version and the
//! newest root the sender verified ([`SenderState`]). A stated list newer than the one held is
//! fetched at once, and an alarm is raised if the server cannot prove it (a stale list kept
//! after a revocation). A stated root is compared with this device's root for that epoch,
//! fetched if it has none: two roots for one epoch mean the directory shows different views.

use std::collections::BTreeMap;

use nightjar_api::{AccountResponse, AccountTransparency, B64, EpochRoot};
use nightjar_core::content::{DirectoryView, SenderState};
use nightjar_core::identity::{DeviceList, SignedDeviceList};
use nightjar_core::transparency::{
    DirectoryEntry, DirectoryKeys, KtError, ProvenEntry, RootKey, SignedRoot, verify_append_only,
    verify_history, verify_lookup,
};

use super::{Machine, Notification, Pending, meta};
use crate::error::{Error, Result};
use crate::store::ClientStore;
use crate::transport::{Failure, Request, Response};

/// How often (at most) a sync checks this account's directory history.
pub(super) const HISTORY_EVERY_MS: u64 = 60_000;

/// Directory roots stated by senders for epochs this device has no root of its own for, at
/// most this many (the newest kept).
const STATED_ROOTS_KEPT: usize = 64;

/// Epochs asked for per page of the append-only check (each costs about a millisecond to
/// verify natively, two or three in the browser, for a small epoch).
const CHAIN_PAGE: u32 = 16;

/// Pages of the append-only check per sync: a device that was away for long catches up over
/// several syncs.
const CHAIN_PAGES_PER_SYNC: u32 = 16;

/// Bytes of append-only proofs checked per sync, at most (the last page may pass it). An epoch
/// of 1,000 new entries on a directory of 10k has a 240 KB proof that takes about 60 ms to
/// check natively: on a busy directory this, not the page count, bounds a sync's work.
const CHAIN_BYTES_PER_SYNC: usize = 4 << 20;

/// The check that the directory only grows: from the first root this device verified, every
/// later epoch's append-only proof, a page at a time.
#[derive(Debug, Default)]
pub(super) struct ChainCheck {
    /// Whether a page is being fetched.
    pub(super) fetching: bool,
    /// Pages this sync may still ask for.
    pub(super) pages_left: u32,
    /// Proof bytes this sync may still check.
    pub(super) bytes_left: usize,
}

impl ChainCheck {
    /// A new sync's allowance.
    pub(super) fn renew(&mut self) {
        self.pages_left = CHAIN_PAGES_PER_SYNC;
        self.bytes_left = CHAIN_BYTES_PER_SYNC;
    }
}

/// What senders stated in their messages that this device has yet to check.
#[derive(Debug, Default)]
pub(super) struct Statements {
    /// Per account, the newest device-list version its messages stated above the list held.
    lists: BTreeMap<String, u64>,
    /// Per epoch, the root a sender stated and who stated it.
    roots: BTreeMap<u64, StatedRoot>,
    /// The epoch whose signed root is being fetched.
    pub(super) fetching_root: Option<u64>,
}

/// A directory root a sender stated it verified.
#[derive(Debug, Clone)]
struct StatedRoot {
    root: [u8; 32],
    sender: String,
}

/// Why a device list was not accepted on the directory's word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unproven {
    /// The directory has not caught up (or gave no proof): ask again later.
    NotYet(String),
    /// The server showed something its directory contradicts: never accepted.
    Refused(String),
}

fn signed_root(view: &EpochRoot) -> std::result::Result<SignedRoot, KtError> {
    SignedRoot::from_slices(view.epoch, &view.root.0, &view.signature.0)
}

fn encode_root(r: &SignedRoot) -> String {
    format!(
        "{}:{}:{}",
        r.epoch,
        B64::encode(&r.root),
        B64::encode(&r.signature)
    )
}

fn decode_root(s: &str) -> Option<SignedRoot> {
    let mut parts = s.split(':');
    let epoch = parts.next()?.parse().ok()?;
    let root = B64::decode(parts.next()?)?.try_into().ok()?;
    let signature = B64::decode(parts.next()?)?.try_into().ok()?;
    Some(SignedRoot {
        epoch,
        root,
        signature,
    })
}

fn encode_keys(k: &DirectoryKeys) -> String {
    format!(
        "{}:{}",
        B64::encode(&k.root_key.0),
        B64::encode(&k.vrf_public_key)
    )
}

fn served_keys(t: &AccountTransparency) -> Option<DirectoryKeys> {
    Some(DirectoryKeys {
        root_key: RootKey(t.keys.root_key.0.as_slice().try_into().ok()?),
        vrf_public_key: t.keys.vrf_public_key.0.clone(),
    })
}

impl<S: ClientStore> Machine<S> {
    /// Whether peers' device lists need a directory proof (the default). Off only where no
    /// directory exists: simulations of the delivery service alone.
    pub fn set_require_transparency(&mut self, required: bool) {
        self.require_transparency = required;
    }

    /// The directory keys this device pinned, if any.
    pub fn pinned_directory_keys(&self) -> Result<Option<DirectoryKeys>> {
        let Some(text) = self.store.meta(meta::KT_KEYS)? else {
            return Ok(None);
        };
        let mut parts = text.split(':');
        let root = parts.next().and_then(B64::decode);
        let vrf = parts.next().and_then(B64::decode);
        Ok(match (root.and_then(|r| r.try_into().ok()), vrf) {
            (Some(root), Some(vrf)) => Some(DirectoryKeys {
                root_key: RootKey(root),
                vrf_public_key: vrf,
            }),
            _ => None,
        })
    }

    /// The newest directory root this device verified.
    pub fn verified_root(&self) -> Result<Option<SignedRoot>> {
        Ok(self
            .store
            .meta(meta::KT_ROOT)?
            .as_deref()
            .and_then(decode_root))
    }

    /// Whether `root` may follow the newest root this device verified (not older, and the
    /// same root for the same epoch).
    fn follows_verified(&self, root: &SignedRoot) -> Result<std::result::Result<(), KtError>> {
        Ok(match self.verified_root()? {
            Some(seen) => root.follows(&seen),
            None => Ok(()),
        })
    }

    /// Remembers `root` (verified) for its epoch, and as the newest root if it is newer (which
    /// every message this device sends then states). The first root verified starts the
    /// append-only check.
    fn remember_root(&mut self, root: &SignedRoot) -> Result<()> {
        let key = format!("{}{:020}", meta::KT_ROOT_AT, root.epoch);
        self.store.set_meta(&key, &B64::encode(&root.root))?;
        if self.store.meta(meta::KT_CHAIN)?.is_none() {
            self.store.set_meta(meta::KT_CHAIN, &encode_root(root))?;
        }
        if self
            .verified_root()?
            .is_none_or(|seen| root.epoch > seen.epoch)
        {
            self.store.set_meta(meta::KT_ROOT, &encode_root(root))?;
            self.engine.set_directory_view(DirectoryView {
                epoch: root.epoch,
                root: root.root,
            })?;
        }
        Ok(())
    }

    /// The root this device verified for `epoch`, if any.
    fn root_at(&self, epoch: u64) -> Result<Option<[u8; 32]>> {
        let key = format!("{}{epoch:020}", meta::KT_ROOT_AT);
        if let Some(text) = self.store.meta(&key)? {
            return Ok(B64::decode(&text).and_then(|b| b.try_into().ok()));
        }
        // Roots verified before roots were kept per epoch: only the newest is known.
        Ok(self
            .verified_root()?
            .filter(|r| r.epoch == epoch)
            .map(|r| r.root))
    }

    /// Checks `signed`, served as `username`'s list, against the directory proof that came
    /// with it; on success remembers the (newer) root.
    pub(crate) fn prove_list(
        &mut self,
        username: &str,
        signed: &SignedDeviceList,
        transparency: Option<&AccountTransparency>,
    ) -> Result<std::result::Result<(), Unproven>> {
        if !self.require_transparency {
            return Ok(Ok(()));
        }
        let Some(t) = transparency else {
            return Ok(Err(Unproven::NotYet(format!(
                "the server gave no directory proof for {username}'s keys"
            ))));
        };
        let Some(keys) = served_keys(t) else {
            return Ok(Err(Unproven::Refused(
                "the server's directory keys are malformed".into(),
            )));
        };
        let keys = match self.pinned_directory_keys()? {
            Some(pinned) if pinned != keys => {
                return Ok(Err(Unproven::Refused(
                    "the server's key-transparency directory now signs with another key than \
                     the one this device pinned"
                        .into(),
                )));
            }
            Some(pinned) => pinned,
            None => {
                self.store.set_meta(meta::KT_KEYS, &encode_keys(&keys))?;
                keys
            }
        };
        let root = match signed_root(&t.lookup.root) {
            Ok(root) => root,
            Err(e) => return Ok(Err(Unproven::Refused(e.to_string()))),
        };
        if let Err(e) = self.follows_verified(&root)? {
            return Ok(Err(Unproven::Refused(e.to_string())));
        }
        let proven = match verify_lookup(&keys, &root, username, &t.lookup.proof.0) {
            Ok(proven) => proven,
            Err(e) => return Ok(Err(Unproven::Refused(e.to_string()))),
        };
        if let Err(unproven) = compare(username, signed, &proven) {
            return Ok(Err(unproven));
        }
        self.remember_root(&root)?;
        Ok(Ok(()))
    }

    /// Accepts the answer to a request for `username`'s account: its device list, if the
    /// directory proves it (an answer about another account is refused).
    pub fn accept_account(
        &mut self,
        now: u64,
        username: &str,
        account: &AccountResponse,
    ) -> Result<()> {
        if account.username != username {
            return Err(Error::Transparency(format!(
                "the server answered for {} when asked for {username}",
                account.username
            )));
        }
        let signed = SignedDeviceList::decode(&account.device_list.0)?;
        match self.prove_list(&account.username, &signed, account.transparency.as_deref())? {
            Ok(()) => self.accept_list(now, &account.username, &signed),
            Err(Unproven::NotYet(why)) => Err(Error::NotYetProven(why)),
            Err(Unproven::Refused(why)) => Err(Error::Transparency(why)),
        }
    }
}

impl<S: ClientStore> Machine<S> {
    /// Checks what `sender` (an account) stated in a message it encrypted: a newer device list
    /// than this device holds is fetched (with its proof), and a directory root is compared
    /// with this device's own root for the same epoch, fetched from the server if needed.
    pub(crate) fn check_sender_state(&mut self, sender: &str, state: &SenderState) -> Result<()> {
        if !self.require_transparency {
            return Ok(());
        }
        let held = self.engine.device_list(sender).map_or(0, |l| l.version);
        if state.list_version > held {
            let stated = self.statements.lists.entry(sender.to_owned()).or_default();
            *stated = (*stated).max(state.list_version);
            self.fetch_account(sender);
        }
        let Some(view) = state.directory else {
            return Ok(());
        };
        match self.root_at(view.epoch)? {
            Some(mine) if mine != view.root => self.fork_alarm(view.epoch, sender),
            Some(_) => Ok(()),
            None => {
                self.statements.roots.insert(
                    view.epoch,
                    StatedRoot {
                        root: view.root,
                        sender: sender.to_owned(),
                    },
                );
                while self.statements.roots.len() > STATED_ROOTS_KEPT {
                    self.statements.roots.pop_first();
                }
                self.fetch_stated_root();
                Ok(())
            }
        }
    }

    fn fork_alarm(&mut self, epoch: u64, sender: &str) -> Result<()> {
        self.alarm(
            &format!("fork/{epoch}"),
            format!(
                "the key-transparency directory shows this device a different root for epoch \
                 {epoch} than the one {sender}'s device verified: the server is showing \
                 different people different directories (a fork), so keys it serves may be \
                 substituted"
            ),
        )
    }

    /// Asks for the signed root of the oldest stated epoch not yet checked.
    fn fetch_stated_root(&mut self) {
        if self.statements.fetching_root.is_some() {
            return;
        }
        if let Some(&epoch) = self.statements.roots.keys().next() {
            self.statements.fetching_root = Some(epoch);
            self.request(
                Request::DirectoryRoot { epoch },
                Pending::DirectoryRoot { epoch },
            );
        }
    }

    /// The server's signed root for an epoch a sender stated: it must carry the pinned key's
    /// signature and equal the stated root. Then the next stated epoch is asked for, unless the
    /// server was out of reach (the next message stating a root asks again).
    pub(super) fn on_directory_root(
        &mut self,
        epoch: u64,
        outcome: std::result::Result<Response, Failure>,
    ) -> Result<()> {
        self.statements.fetching_root = None;
        if matches!(outcome, Err(Failure::Network(_))) {
            return Ok(());
        }
        self.compare_stated_root(epoch, outcome)?;
        self.fetch_stated_root();
        Ok(())
    }

    fn compare_stated_root(
        &mut self,
        epoch: u64,
        outcome: std::result::Result<Response, Failure>,
    ) -> Result<()> {
        let Some(stated) = self.statements.roots.remove(&epoch) else {
            return Ok(());
        };
        let Ok(Response::DirectoryRoot(answer)) = outcome else {
            // No such epoch here, though a member's device verified one.
            return self.fork_alarm(epoch, &stated.sender);
        };
        let Some(keys) = self.pinned_directory_keys()? else {
            return Ok(());
        };
        let checked = signed_root(&answer.root).and_then(|root| {
            root.verify(&keys.root_key)?;
            Ok(root)
        });
        match checked {
            Ok(root) if root.epoch == epoch && root.root != stated.root => {
                self.fork_alarm(epoch, &stated.sender)
            }
            Ok(root) if root.epoch == epoch => self.remember_root(&root),
            _ => self.alarm(
                &format!("root/{epoch}"),
                format!(
                    "the key-transparency directory's root for epoch {epoch} is not signed by \
                     the directory key this device pinned"
                ),
            ),
        }
    }

    /// After an answer for `username`'s account: if its messages stated a newer device list
    /// than the server could prove, the server is keeping a stale list (after a revocation,
    /// a removed device stays reachable through it).
    pub(crate) fn check_stated_list(&mut self, username: &str) -> Result<()> {
        let Some(stated) = self.statements.lists.remove(username) else {
            return Ok(());
        };
        let held = self.engine.device_list(username).map_or(0, |l| l.version);
        if held >= stated {
            return Ok(());
        }
        self.alarm(
            &format!("stale/{username}/{stated}"),
            format!(
                "{username}'s messages say their device list is at version {stated}, but the \
                 server proves only version {held}: it is withholding a newer list (a device \
                 {username} removed may still receive what you send)"
            ),
        )
    }

    /// Remembers a device list of this account that this device accepted (`list` is
    /// `signed`, already verified), so its directory history can be told apart from lists no
    /// device of the account made.
    pub(crate) fn record_own_list(
        &mut self,
        list: &DeviceList,
        signed: &SignedDeviceList,
    ) -> Result<()> {
        let entry = DirectoryEntry::for_list(list.identity_key, list.version, &signed.encode());
        let key = format!("{}{:020}", meta::KT_OWN_LIST, list.version);
        Ok(self.store.set_meta(&key, &B64::encode(&entry.list_hash))?)
    }

    /// Asks for this account's directory history, at most every [`HISTORY_EVERY_MS`].
    pub(crate) fn check_own_history(&mut self, now: u64) -> Result<()> {
        if !self.require_transparency || self.checking_history {
            return Ok(());
        }
        let last: u64 = self
            .store
            .meta(meta::KT_HISTORY_AT)?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if last != 0 && now.saturating_sub(last) < HISTORY_EVERY_MS {
            return Ok(());
        }
        self.checking_history = true;
        self.request(Request::OwnHistory, Pending::OwnHistory);
        Ok(())
    }

    fn alarm(&mut self, id: &str, text: String) -> Result<()> {
        let key = format!("{}{id}", meta::KT_ALARMED);
        if self.store.meta(&key)?.is_some() {
            return Ok(());
        }
        self.store.set_meta(&key, "1")?;
        self.notifications
            .push_back(Notification::TransparencyAlarm(text));
        Ok(())
    }

    /// Checks this account's directory history: every entry must carry this account's
    /// identity key, and a device list this device accepted must be the one the directory
    /// holds for its version. A newer list than this device knows is fetched (with its
    /// lookup proof) and accepted as usual.
    pub(crate) fn on_own_history(
        &mut self,
        now: u64,
        outcome: std::result::Result<Response, Failure>,
    ) -> Result<()> {
        self.checking_history = false;
        let proof = match outcome {
            Ok(Response::OwnHistory(proof)) => proof,
            // Not published yet, or the server is away: the next sync asks again.
            _ => return Ok(()),
        };
        let Some(keys) = self.pinned_directory_keys()? else {
            // Pinned at the first account answer; until then there is nothing to check against.
            return Ok(());
        };
        let me = self.me.username.clone();
        let root = match signed_root(&proof.root) {
            Ok(root) => root,
            Err(e) => {
                return self.alarm(
                    "malformed",
                    format!("this account's directory history: {e}"),
                );
            }
        };
        if let Err(e) = self.follows_verified(&root)? {
            return self.alarm(
                &format!("root/{}", root.epoch),
                format!("the key-transparency directory: {e}"),
            );
        }
        let history = match verify_history(&keys, &root, &me, &proof.proof.0) {
            Ok(history) => history,
            Err(e) => {
                return self.alarm(
                    &format!("proof/{}", root.epoch),
                    format!("the server's proof of this account's directory history is false: {e}"),
                );
            }
        };
        self.store.set_meta(meta::KT_HISTORY_AT, &now.to_string())?;
        self.remember_root(&root)?;
        let Some(own) = self.engine.identity_key(&me) else {
            return Ok(());
        };
        let known_max = self.engine.device_list(&me).map_or(0, |l| l.version);
        for item in &history {
            let id = format!("{}/{}", item.published, item.version);
            if item.entry.identity_key != own {
                self.alarm(
                    &id,
                    format!(
                        "the key-transparency directory shows another identity key for your \
                         account {me} (published in epoch {}): the server may be impersonating \
                         you to others. Your contacts see a changed safety number for you.",
                        item.published
                    ),
                )?;
                continue;
            }
            let key = format!("{}{:020}", meta::KT_OWN_LIST, item.entry.list_version);
            if let Some(known) = self.store.meta(&key)?
                && known != B64::encode(&item.entry.list_hash)
            {
                self.alarm(
                    &id,
                    format!(
                        "the key-transparency directory holds a device list version {} for \
                         your account {me} that differs from the one your devices made",
                        item.entry.list_version
                    ),
                )?;
            }
        }
        // A newer list (a device added or removed on another device of this account): fetch
        // it with its proof, which also lets the account's conversations catch up.
        if history
            .first()
            .is_some_and(|newest| newest.entry.list_version > known_max)
        {
            self.fetch_account(&me);
        }
        Ok(())
    }
}

impl<S: ClientStore> Machine<S> {
    /// The newest root up to which the directory is proven append-only.
    fn chain_head(&self) -> Result<Option<SignedRoot>> {
        Ok(self
            .store
            .meta(meta::KT_CHAIN)?
            .as_deref()
            .and_then(decode_root))
    }

    /// Asks for the next page of epochs after the append-only check's head, while that head
    /// is behind the newest root this device verified (and this sync's pages last).
    pub(super) fn check_chain(&mut self) -> Result<()> {
        if !self.require_transparency
            || self.chain.fetching
            || self.chain.pages_left == 0
            || self.chain.bytes_left == 0
        {
            return Ok(());
        }
        let (Some(head), Some(newest)) = (self.chain_head()?, self.verified_root()?) else {
            return Ok(());
        };
        if head.epoch >= newest.epoch {
            return Ok(());
        }
        let behind = u32::try_from(newest.epoch - head.epoch).unwrap_or(u32::MAX);
        self.chain.fetching = true;
        self.chain.pages_left -= 1;
        self.request(
            Request::DirectoryEpochs {
                after: head.epoch,
                limit: behind.min(CHAIN_PAGE),
            },
            Pending::DirectoryEpochs,
        );
        Ok(())
    }

    /// A page of epochs: each must follow the head, carry the pinned key's signature, come
    /// with a proof that its tree is the head's tree plus new entries only, and agree with
    /// any root this device verified for the same epoch. The head moves past each that does;
    /// the first that does not raises an alarm and stops the check there.
    pub(super) fn on_directory_epochs(
        &mut self,
        outcome: std::result::Result<Response, Failure>,
    ) -> Result<()> {
        self.chain.fetching = false;
        let Ok(Response::DirectoryEpochs(page)) = outcome else {
            // Out of reach or refused: the next sync asks again.
            return Ok(());
        };
        let (Some(keys), Some(mut head), Some(newest)) = (
            self.pinned_directory_keys()?,
            self.chain_head()?,
            self.verified_root()?,
        ) else {
            return Ok(());
        };
        if page.epochs.is_empty() && head.epoch < newest.epoch {
            return self.alarm(
                &format!("chain/{}", head.epoch),
                format!(
                    "the key-transparency directory signed epoch {} but the server does not show \
                     the epochs after {}: it cannot prove that it only added to the directory",
                    newest.epoch, head.epoch
                ),
            );
        }
        // No more than was asked for: a server cannot make a device verify without end.
        for answer in page.epochs.iter().take(CHAIN_PAGE as usize) {
            let epoch = head.epoch.saturating_add(1);
            let checked = signed_root(&answer.root).and_then(|root| {
                if root.epoch != epoch {
                    return Err(KtError::BadProof(format!(
                        "the server answered epoch {} for epoch {epoch}",
                        root.epoch
                    )));
                }
                root.verify(&keys.root_key)?;
                verify_append_only(&head, &root, &answer.audit_proof.0)?;
                Ok(root)
            });
            let root = match checked {
                Ok(root) => root,
                Err(e) => {
                    return self.alarm(
                        &format!("chain/{epoch}"),
                        format!(
                            "the key-transparency directory from epoch {} to {epoch} fails its \
                             append-only check ({e}): entries it published may have been \
                             changed or removed",
                            head.epoch
                        ),
                    );
                }
            };
            if let Some(mine) = self.root_at(epoch)?
                && mine != root.root
            {
                return self.alarm(
                    &format!("chain-fork/{epoch}"),
                    format!(
                        "the key-transparency directory's history has a different root for \
                         epoch {epoch} than the one this device verified: the server is showing \
                         different views of the directory (a fork)"
                    ),
                );
            }
            head = root;
            self.store.set_meta(meta::KT_CHAIN, &encode_root(&head))?;
            self.chain.bytes_left = self
                .chain
                .bytes_left
                .saturating_sub(answer.audit_proof.0.len());
        }
        self.check_chain()
    }
}

/// Whether the proven entry is exactly the served list.
fn compare(
    username: &str,
    signed: &SignedDeviceList,
    proven: &ProvenEntry,
) -> std::result::Result<(), Unproven> {
    let Ok(list) = signed.verify() else {
        return Err(Unproven::Refused(format!(
            "{username}'s device list does not verify"
        )));
    };
    let entry = &proven.entry;
    if entry.identity_key != list.identity_key {
        return Err(Unproven::Refused(format!(
            "the server showed an identity key for {username} that its key-transparency \
             directory does not hold"
        )));
    }
    if entry.list_version > list.version {
        return Err(Unproven::Refused(format!(
            "the server served {username}'s device list version {} while its directory holds \
             version {}: it is hiding a newer list",
            list.version, entry.list_version
        )));
    }
    if entry.list_version < list.version {
        return Err(Unproven::NotYet(format!(
            "the directory does not have {username}'s newest device list yet"
        )));
    }
    if !entry.matches(list.identity_key, list.version, &signed.encode()) {
        return Err(Unproven::Refused(format!(
            "the server served a device list of {username} that differs from the one its \
             directory holds for the same version"
        )));
    }
    Ok(())
}
