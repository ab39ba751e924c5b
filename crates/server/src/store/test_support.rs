//! Stores for unit tests: SQLite in a temporary directory always, and PostgreSQL in a fresh
//! schema (dropped afterwards) when `NIGHTJAR_TEST_POSTGRES_URL` names a server, e.g.
//! `postgres://postgres@127.0.0.1:5432/test`. Without it the PostgreSQL half of each test
//! prints why it was skipped.

use std::io::Write as _;
use std::ops::Deref;
use std::sync::Arc;

use nightjar_api::{DeviceAddress, EnvelopeKind};
use nightjar_core::ConversationId;

use super::test_schema::{POSTGRES_ENV, Schema};
use super::*;
use crate::rules::delivery::CheckedSend;

/// A store under test and what keeps its database alive.
pub(crate) struct TestStore {
    store: Store,
    _dir: tempfile::TempDir,
    schema: Option<Schema>,
}

impl Deref for TestStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl TestStore {
    /// Another store on the same database, as a second server node would open it.
    pub(crate) async fn another_node(&self, group_commit: GroupCommit) -> Store {
        let url = self.schema.as_ref().map(|s| s.url.as_str());
        Store::open(self._dir.path(), url, group_commit, Arc::new(NoSink))
            .await
            .unwrap()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            schema.drop_blocking();
        }
    }
}

/// A store in a fresh temporary directory.
pub(crate) async fn temp_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), None, GroupCommit::default(), Arc::new(NoSink))
        .await
        .unwrap();
    (store, dir)
}

/// One store per backend under test (SQLite first). `test` names the test in the "skipped"
/// line printed when PostgreSQL is not configured.
pub(crate) async fn each_backend(test: &str) -> Vec<TestStore> {
    each_backend_with(test, GroupCommit::default()).await
}

/// [`each_backend`] with a group-commit configuration.
pub(crate) async fn each_backend_with(test: &str, group_commit: GroupCommit) -> Vec<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(dir.path(), None, group_commit, Arc::new(NoSink))
        .await
        .unwrap();
    let mut stores = vec![TestStore {
        store: sqlite,
        _dir: dir,
        schema: None,
    }];
    match Schema::create_if_configured().await {
        Some(schema) => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(
                dir.path(),
                Some(&schema.url),
                group_commit,
                Arc::new(NoSink),
            )
            .await
            .unwrap();
            stores.push(TestStore {
                store,
                _dir: dir,
                schema: Some(schema),
            });
        }
        None => skipped(test),
    }
    stores
}

/// Says, past the test harness's output capture, that the PostgreSQL half of `test` did not
/// run and why.
pub(crate) fn skipped(test: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "{test} [postgres]: skipped: {POSTGRES_ENV} not set"
    );
}

/// Creates an account with one device, whose session token hash is made from `token`.
pub(crate) async fn account(store: &Store, name: &str, device: &str, token: u16) -> Sender {
    let mut hash = [1u8; 32];
    hash[..2].copy_from_slice(&token.to_be_bytes());
    store
        .create_account(NewAccount {
            username: name.into(),
            opaque_record: vec![1],
            identity_key: vec![2; 32],
            device_list: vec![3],
            device_id: device.into(),
            signature_key: vec![4; 32],
            key_packages: vec![],
            last_resort: (hash, vec![7]),
            token_hash: hash,
            expires_at_ms: u64::MAX / 2,
            now_ms: 1,
        })
        .await
        .unwrap()
        .unwrap();
    let session = store.session(&hash, 2).await.unwrap().unwrap();
    Sender {
        device_pk: session.device_pk,
        account_id: session.account_id,
        address: DeviceAddress {
            username: name.into(),
            device_id: device.into(),
        },
    }
}

/// A checked send to conversation `[1; 16]`.
pub(crate) fn checked(kind: EnvelopeKind, epoch: u64, members: &[&Sender]) -> CheckedSend {
    CheckedSend {
        conversation: ConversationId([1; 16]),
        kind,
        epoch,
        payload: format!("{kind:?}@{epoch}").into_bytes(),
        members: members.iter().map(|s| s.address.clone()).collect(),
        welcome: None,
        group_info: None,
        // The store trusts the validation the HTTP layer did; these tests exercise ordering.
        handshake: match kind {
            EnvelopeKind::Commit => crate::rules::delivery::Handshake::Commit {
                state: b"state".to_vec(),
            },
            EnvelopeKind::Proposal => crate::rules::delivery::Handshake::Proposal,
            _ => crate::rules::delivery::Handshake::None,
        },
        commitment: None,
        stamp: None,
    }
}

/// Sends `send` as `sender` with `key` at `now`, queues bounded by `max_queue`.
pub(crate) async fn submit(
    store: &Store,
    sender: &Sender,
    send: &CheckedSend,
    key: &str,
    now: u64,
    max_queue: u32,
) -> SendOutcome {
    store
        .send(Submission {
            sender: sender.clone(),
            send: send.clone(),
            idempotency_key: key.into(),
            now_ms: now,
            max_queue,
            quota: SendQuota::default(),
        })
        .await
        .unwrap()
}

/// Deletes a device row outright, as removing the device does (its queue, sessions and keys
/// go with it).
pub(crate) async fn delete_device_row(store: &Store, device_pk: i64) {
    dispatch!(store, db => {
        sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(device_pk)
            .execute(db.reader())
            .await
            .unwrap();
    });
}
