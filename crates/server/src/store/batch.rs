//! Group commit: sends that arrive together are stored in one durable transaction.
//!
//! A writer task takes the first waiting send, then whatever else is waiting (up to
//! [`GroupCommit::max_batch`], lingering up to [`GroupCommit::linger`] for more), and applies
//! them in one transaction, ordered by conversation so that writers on several nodes lock
//! conversations, then devices, in one global order. Each send is decided on its own
//! (`send.rs`): a refused or repeated one does not disturb the others. The envelopes of the
//! whole batch are then queued at once: the recipient device rows are locked in id order,
//! their queue ids advanced and the rows inserted with one statement (`UNNEST` on PostgreSQL,
//! multi-row `VALUES` on SQLite), so fan-out to many devices costs no round trip per device.
//! After the commit each waiter gets its answer, and the [`CommitSink`] gets every queued
//! envelope, in commit order.
//!
//! If something that can only happen with concurrent writers on other nodes occurs (a queue
//! filled up between the first look and the lock, a conversation created twice, a deadlock),
//! the transaction is rolled back and the batch runs again, with the sends already settled
//! (refused for a full queue, or failed) answered as such. A send whose statements fail is
//! answered with that error and the rest run again without it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};

use nightjar_api::{B64, DeviceAddress, Envelope, EnvelopeKind, FrankingStamp, SendResponse};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::backend::{QueueCounter, QueueRow};
use super::send::{Applied, Stored, Submission};
use super::{Backend, Column, Db, Param, SendOutcome, to_i64};
use crate::config::GroupCommit;
use crate::rules::delivery::Stamp;

/// How often a batch runs again for a concurrency reason before its sends fail.
pub(super) const MAX_RERUNS: u32 = 8;

/// A stored message as the push path needs it (no database read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueuedMessage {
    pub(crate) conversation_id: Option<String>,
    pub(crate) sender: DeviceAddress,
    pub(crate) kind: EnvelopeKind,
    pub(crate) payload: Vec<u8>,
    pub(crate) created_at_ms: u64,
    /// A franked application message's commitment and the server's tag (over
    /// `created_at_ms`).
    pub(crate) stamp: Option<Stamp>,
}

impl QueuedMessage {
    /// The envelope a device gets for it under queue id `id`.
    pub(crate) fn envelope(&self, id: u64) -> Envelope {
        Envelope {
            id,
            conversation_id: self.conversation_id.clone(),
            sender: self.sender.clone(),
            kind: self.kind,
            payload: B64(self.payload.clone()),
            server_time_ms: self.created_at_ms,
            franking: self.stamp.map(|s| FrankingStamp {
                commitment: B64(s.commitment.to_vec()),
                tag: B64(s.tag.to_vec()),
                time_ms: self.created_at_ms,
            }),
        }
    }
}

/// One committed message and the queue id it got in each recipient's queue.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) message: Arc<QueuedMessage>,
    /// `(device row id, queue id)`.
    pub(crate) recipients: Vec<(i64, u64)>,
}

/// Learns of every committed batch: the push path.
pub(crate) trait CommitSink: Send + Sync + fmt::Debug + 'static {
    /// Called by a writer after each commit with every envelope it queued. Must not block.
    fn queued(&self, queued: Vec<Queued>);

    /// Called by a writer after each commit with the number of sends it answered.
    fn committed(&self, _sends: usize) {}
}

/// A sink that drops everything (stores under test, benchmarks).
#[derive(Debug)]
pub(crate) struct NoSink;

impl CommitSink for NoSink {
    fn queued(&self, _: Vec<Queued>) {}
}

/// Where a job's answer goes.
pub(super) type Reply<O> = oneshot::Sender<Result<O, sqlx::Error>>;

/// A request waiting for a writer, and where its answer goes.
#[derive(Debug)]
pub(super) struct Job<R, O> {
    pub(super) request: R,
    pub(super) reply: Reply<O>,
}

/// The handle on writer tasks that answer requests `R` with `O` in batches: sends
/// ([`run`]) and acknowledgements (`acks.rs`).
#[derive(Debug)]
pub(super) struct Batcher<R, O> {
    jobs: StdMutex<Option<mpsc::Sender<Job<R, O>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<R, O> Batcher<R, O> {
    /// A handle and the queue its writer tasks take requests from.
    pub(super) fn new(config: GroupCommit) -> (Self, Queue<R, O>) {
        let (jobs, queue) = mpsc::channel(config.max_batch.max(1) * 4);
        let batcher = Self {
            jobs: StdMutex::new(Some(jobs)),
            tasks: Mutex::new(Vec::new()),
        };
        (batcher, Arc::new(Mutex::new(queue)))
    }

    /// Records a writer task so [`Self::stop`] can wait for it.
    pub(super) fn attach(&mut self, task: JoinHandle<()>) {
        self.tasks.get_mut().push(task);
    }

    /// Hands a request to the writers and waits for its answer.
    pub(super) async fn submit(&self, request: R) -> Result<O, sqlx::Error> {
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(sqlx::Error::PoolClosed)?;
        let (reply, answer) = oneshot::channel();
        jobs.send(Job { request, reply })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    /// Takes no more requests and waits until the writers answered those they have.
    pub(super) async fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        for task in self.tasks.lock().await.drain(..) {
            let _ = task.await;
        }
    }
}

/// The queue writers take requests from; a writer holds it while it gathers a batch.
pub(super) type Queue<R, O> = Arc<Mutex<mpsc::Receiver<Job<R, O>>>>;

/// Waits for the first request, then takes whatever else is waiting (up to
/// [`GroupCommit::max_batch`], lingering up to [`GroupCommit::linger`] for more). `None` once
/// every handle on the queue is gone.
pub(super) async fn gather<R, O>(
    queue: &Queue<R, O>,
    config: GroupCommit,
) -> Option<Vec<Job<R, O>>> {
    let max = config.max_batch.max(1);
    let mut queue = queue.lock().await;
    let first = queue.recv().await?;
    let mut jobs = vec![first];
    while jobs.len() < max {
        match queue.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    if jobs.len() < max && !config.linger.is_zero() {
        let deadline = tokio::time::Instant::now() + config.linger;
        while jobs.len() < max {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) | Err(_) => break,
            }
        }
    }
    Some(jobs)
}

/// A send waiting for the writer.
pub(super) type SendJob = Job<Submission, SendOutcome>;

/// A send writer task: batches until every handle on the queue is gone. Several may share a
/// queue (PostgreSQL): while one commits, the next gathers.
pub(super) async fn run<DB>(
    db: Arc<Db<DB>>,
    queue: Queue<Submission, SendOutcome>,
    config: GroupCommit,
    sink: Arc<dyn CommitSink>,
) where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    bool: Column<DB>,
    String: Column<DB>,
    Vec<u8>: Column<DB>,
    for<'s> &'s str: Param<'s, DB>,
    for<'s> &'s [u8]: Param<'s, DB>,
    for<'s> Option<&'s str>: Param<'s, DB>,
    for<'s> Option<&'s [u8]>: Param<'s, DB>,
{
    while let Some(jobs) = gather(&queue, config).await {
        db.commit_batch(jobs, &*sink).await;
    }
}

/// Why a batch attempt did not commit.
enum Retry {
    /// Run the batch again (a concurrent writer interfered), after `.0` if it was an error.
    Again(Option<sqlx::Error>),
    /// This send failed; answer it with the error and run the others again.
    Failed(usize, sqlx::Error),
    /// These sends found a queue full once the devices were locked; run the others again.
    Full(Vec<usize>),
    /// The batch cannot commit; fail every unsettled send.
    Fatal(sqlx::Error),
}

/// A stored send once queued: its index in the batch, its answer, every recipient, and per
/// message `(message id, (device, queue id) of each recipient)`.
type Done = (usize, SendResponse, Vec<i64>, Vec<(i64, Vec<(i64, u64)>)>);

/// A committed batch.
struct Committed {
    answered: Vec<(usize, SendOutcome)>,
    stored: Vec<Done>,
}

impl<DB> Db<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    bool: Column<DB>,
    String: Column<DB>,
    Vec<u8>: Column<DB>,
    for<'s> &'s str: Param<'s, DB>,
    for<'s> &'s [u8]: Param<'s, DB>,
    for<'s> Option<&'s str>: Param<'s, DB>,
    for<'s> Option<&'s [u8]>: Param<'s, DB>,
{
    /// Stores a batch of sends durably and answers every one of them.
    async fn commit_batch(&self, jobs: Vec<SendJob>, sink: &dyn CommitSink) {
        let (requests, replies): (Vec<Submission>, Vec<Reply<SendOutcome>>) =
            jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        let mut order: Vec<usize> = (0..requests.len()).collect();
        // Stable: sends to one conversation keep their arrival order.
        order.sort_by(|a, b| {
            requests[*a]
                .send
                .conversation
                .0
                .cmp(&requests[*b].send.conversation.0)
        });
        let mut settled: Vec<Option<Result<SendOutcome, sqlx::Error>>> =
            requests.iter().map(|_| None).collect();
        let mut reruns = 0;
        let committed = loop {
            match self.attempt(&requests, &order, &settled).await {
                Ok(committed) => break Ok(committed),
                Err(Retry::Failed(i, e)) => settled[i] = Some(Err(e)),
                Err(Retry::Full(sends)) => {
                    for i in sends {
                        settled[i] = Some(Ok(SendOutcome::QueueFull));
                    }
                }
                Err(Retry::Again(e)) if reruns < MAX_RERUNS => {
                    reruns += 1;
                    if let Some(e) = e {
                        tracing::debug!(error = %e, "batch runs again");
                    }
                }
                Err(Retry::Again(e)) => {
                    break Err(e.unwrap_or_else(|| {
                        sqlx::Error::Protocol("concurrent writers kept interfering".into())
                    }));
                }
                Err(Retry::Fatal(e)) => break Err(e),
            }
        };
        let committed = match committed {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, sends = requests.len(), "batch failed");
                let text = e.to_string();
                for (i, reply) in replies.into_iter().enumerate() {
                    let outcome = settled[i].take().unwrap_or_else(|| {
                        Err(sqlx::Error::Protocol(format!("the batch failed: {text}")))
                    });
                    let _ = reply.send(outcome);
                }
                return;
            }
        };
        for (i, outcome) in committed.answered {
            settled[i] = Some(Ok(outcome));
        }
        let mut requests: Vec<Option<Submission>> = requests.into_iter().map(Some).collect();
        let mut queued = Vec::new();
        for (i, response, recipients, messages) in committed.stored {
            let count: usize = messages.iter().map(|(_, r)| r.len()).sum();
            settled[i] = Some(Ok(SendOutcome::Accepted {
                response,
                recipients,
                queued: u64::try_from(count).unwrap_or(0),
            }));
            if let Some(request) = requests[i].take() {
                queued.extend(queued_messages(request, messages));
            }
        }
        for (i, reply) in replies.into_iter().enumerate() {
            let outcome = settled[i].take().unwrap_or(Err(sqlx::Error::WorkerCrashed));
            let _ = reply.send(outcome);
        }
        sink.committed(settled.len());
        if !queued.is_empty() {
            sink.queued(queued);
        }
    }

    /// One try at committing the unsettled sends of a batch.
    async fn attempt(
        &self,
        requests: &[Submission],
        order: &[usize],
        settled: &[Option<Result<SendOutcome, sqlx::Error>>],
    ) -> Result<Committed, Retry> {
        let again = |e: sqlx::Error| {
            if DB::is_transient(&e) {
                Retry::Again(Some(e))
            } else {
                Retry::Fatal(e)
            }
        };
        let mut w = self.write().await.map_err(again)?;
        let mut pending: HashMap<i64, i64> = HashMap::new();
        let mut answered = Vec::new();
        let mut stored: Vec<(usize, Stored)> = Vec::new();
        let unsettled = order.iter().filter(|&&i| settled[i].is_none());
        let mut prefetched = Self::prefetch(&mut w.tx, unsettled.clone().map(|&i| &requests[i]))
            .await
            .map_err(again)?;
        for &i in unsettled {
            match Self::apply(&mut w.tx, &requests[i], &mut pending, &mut prefetched).await {
                Ok(Applied::Answered(outcome)) => answered.push((i, outcome)),
                Ok(Applied::Stored(s)) => stored.push((i, s)),
                Ok(Applied::Rerun) => return Err(Retry::Again(None)),
                Err(e) if DB::is_transient(&e) => return Err(Retry::Again(Some(e))),
                Err(e) => return Err(Retry::Failed(i, e)),
            }
        }
        Self::store_messages(&mut w.tx, &prefetched)
            .await
            .map_err(again)?;
        // The same key, another conversation, committed by another node meanwhile.
        if !Self::store_keys(&mut w.tx, &prefetched)
            .await
            .map_err(again)?
        {
            return Err(Retry::Again(None));
        }
        let consent_at = unsettled_now(requests, order, settled);
        Self::store_consent(&mut w.tx, &prefetched.consent, consent_at)
            .await
            .map_err(again)?;

        // Queue the envelopes: devices locked in id order, the limit checked again now that
        // no other writer can add to these queues, ids handed out in order.
        let mut devices: Vec<i64> = pending.keys().copied().collect();
        devices.sort_unstable();
        let locked = Self::lock_devices(&mut w.tx, &devices)
            .await
            .map_err(again)?;
        let mut heads: HashMap<i64, (i64, i64, i64)> = locked
            .into_iter()
            .map(|(pk, seq, len)| (pk, (seq, len, 0)))
            .collect();
        let mut full = Vec::new();
        let mut rows = Vec::new();
        let mut done = Vec::with_capacity(stored.len());
        for (i, s) in stored {
            let request = &requests[i];
            let limit = i64::from(request.max_queue);
            if s.everyone
                .iter()
                .any(|pk| heads.get(pk).is_some_and(|(_, len, _)| *len >= limit))
            {
                full.push(i);
                continue;
            }
            let now = to_i64(super::stored_time(request.now_ms));
            let mut messages = Vec::with_capacity(s.messages.len());
            for (message_id, recipients) in s.messages {
                let mut ids = Vec::with_capacity(recipients.len());
                for pk in recipients {
                    // A device removed meanwhile has no queue any more.
                    let Some((seq, len, added)) = heads.get_mut(&pk) else {
                        continue;
                    };
                    *seq += 1;
                    *len += 1;
                    *added += 1;
                    rows.push(QueueRow {
                        device_pk: pk,
                        seq: *seq,
                        message_id,
                        created_at_ms: now,
                    });
                    ids.push((pk, super::to_u64(*seq)));
                }
                messages.push((message_id, ids));
            }
            done.push((i, s.response, s.everyone, messages));
        }
        if !full.is_empty() {
            return Err(Retry::Full(full));
        }
        DB::insert_queue(&mut w.tx, &rows).await.map_err(again)?;
        let mut counters: Vec<QueueCounter> = heads
            .into_iter()
            .filter(|(_, (_, _, added))| *added > 0)
            .map(|(device_pk, (seq, _, delta))| QueueCounter {
                device_pk,
                seq,
                delta,
            })
            .collect();
        counters.sort_unstable_by_key(|c| c.device_pk);
        DB::adjust_queues(&mut w.tx, &counters)
            .await
            .map_err(again)?;
        w.commit().await.map_err(again)?;
        Ok(Committed {
            answered,
            stored: done,
        })
    }
}

/// The time consent changes of a batch are stamped with: its latest send's.
fn unsettled_now(
    requests: &[Submission],
    order: &[usize],
    settled: &[Option<Result<SendOutcome, sqlx::Error>>],
) -> i64 {
    order
        .iter()
        .filter(|&&i| settled[i].is_none())
        .map(|&i| to_i64(requests[i].now_ms))
        .max()
        .unwrap_or(0)
}

/// The push path's view of a committed send: its message and, for a commit, its Welcome.
fn queued_messages(request: Submission, messages: Vec<(i64, Vec<(i64, u64)>)>) -> Vec<Queued> {
    let Submission { sender, send, .. } = request;
    let created_at_ms = super::stored_time(request.now_ms);
    let mut welcome = send.welcome.map(|(payload, _)| payload);
    let mut bodies = vec![QueuedMessage {
        conversation_id: Some(send.conversation.to_string()),
        sender: sender.address.clone(),
        kind: send.kind,
        payload: send.payload,
        created_at_ms,
        stamp: send.stamp,
    }];
    if let Some(payload) = welcome.take() {
        bodies.push(QueuedMessage {
            conversation_id: None,
            sender: sender.address,
            kind: EnvelopeKind::Welcome,
            payload,
            created_at_ms,
            stamp: None,
        });
    }
    messages
        .into_iter()
        .zip(bodies)
        .filter(|((_, recipients), _)| !recipients.is_empty())
        .map(|((_, recipients), body)| Queued {
            message: Arc::new(body),
            recipients,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use futures_util::future::join_all;
    use nightjar_api::EnvelopeKind;

    use super::super::test_support::{
        account, checked, delete_device_row, each_backend_with, submit,
    };
    use super::super::{Sender, Store};
    use super::*;
    use crate::rules::delivery::{CheckedSend, Refusal};

    /// Long enough a linger that everything submitted together lands in one batch.
    const BATCHING: GroupCommit = GroupCommit {
        max_batch: 64,
        writers: 2,
        linger: Duration::from_millis(50),
    };

    fn text(epoch: u64, body: &str) -> CheckedSend {
        let mut send = checked(EnvelopeKind::Application, epoch, &[]);
        send.payload = body.as_bytes().to_vec();
        send
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_keeps_every_rule() {
        for store in each_backend_with("a_batch_keeps_every_rule", BATCHING).await {
            a_batch_keeps_every_rule_on(&store).await;
        }
    }

    async fn a_batch_keeps_every_rule_on(store: &Store) {
        let alice = account(store, "alice", "000000000000000a", 1).await;
        let bob = account(store, "bob", "000000000000000b", 2).await;
        let carol = account(store, "carol", "000000000000000c", 3).await;
        let create = checked(EnvelopeKind::Commit, 0, &[&alice, &bob]);
        assert!(matches!(
            submit(store, &alice, &create, "create", 1, 100).await,
            SendOutcome::Accepted { .. }
        ));

        // One batch: a send and two retries of it, two commits racing for epoch 1, a
        // stranger, and more messages than bob's queue (4) takes.
        let dup = text(1, "dup");
        let commit_a = checked(EnvelopeKind::Commit, 1, &[&alice, &bob]);
        let commit_b = checked(EnvelopeKind::Commit, 1, &[&alice, &bob]);
        let messages: Vec<CheckedSend> = (0..4).map(|i| text(1, &format!("m{i}"))).collect();
        let mut sends: Vec<(&Sender, &CheckedSend, String)> = vec![
            (&alice, &dup, "dup".into()),
            (&alice, &dup, "dup".into()),
            (&alice, &dup, "dup".into()),
            (&alice, &commit_a, "commit-a".into()),
            (&bob, &commit_b, "commit-b".into()),
            (&carol, &dup, "stranger".into()),
        ];
        for (i, m) in messages.iter().enumerate() {
            sends.push((&alice, m, format!("m{i}")));
        }
        let outcomes = join_all(
            sends
                .iter()
                .map(|(sender, send, key)| submit(store, sender, send, key, 2, 4)),
        )
        .await;
        let SendOutcome::Accepted { response, .. } = &outcomes[0] else {
            panic!("{outcomes:?}")
        };
        assert_eq!(outcomes[1], SendOutcome::Repeated(response.clone()));
        assert_eq!(outcomes[2], SendOutcome::Repeated(response.clone()));
        assert!(
            matches!(&outcomes[3], SendOutcome::Accepted { response, .. } if response.epoch == 2)
        );
        assert_eq!(
            outcomes[4],
            SendOutcome::Refused(Refusal::EpochConflict { current: 2 })
        );
        assert_eq!(outcomes[5], SendOutcome::Refused(Refusal::NotAMember));
        assert!(matches!(outcomes[6], SendOutcome::Accepted { .. }));
        assert!(matches!(outcomes[7], SendOutcome::Accepted { .. }));
        assert_eq!(outcomes[8], SendOutcome::QueueFull);
        assert_eq!(outcomes[9], SendOutcome::QueueFull);

        let inbox = store.inbox(bob.device_pk, 0, 100).await.unwrap();
        let bodies: Vec<(u64, Vec<u8>)> =
            inbox.iter().map(|e| (e.id, e.payload.0.clone())).collect();
        assert_eq!(
            bodies,
            vec![
                (1, b"dup".to_vec()),
                (2, commit_a.payload.clone()),
                (3, b"m0".to_vec()),
                (4, b"m1".to_vec()),
            ]
        );
        assert!(
            store
                .inbox(alice.device_pk, 0, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.queue_depth().await.unwrap(), 4);
        let (epoch, _) = store
            .conversation(&create.conversation.to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(epoch, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removed_sender_is_refused_alone() {
        for store in each_backend_with("a_removed_sender_is_refused_alone", BATCHING).await {
            let alice = account(&store, "alice", "000000000000000a", 1).await;
            let bob = account(&store, "bob", "000000000000000b", 2).await;
            let carol = account(&store, "carol", "000000000000000c", 3).await;
            let create = checked(EnvelopeKind::Commit, 0, &[&alice, &bob, &carol]);
            assert!(matches!(
                submit(&store, &alice, &create, "create", 1, 100).await,
                SendOutcome::Accepted { .. }
            ));
            // carol's device goes after she authenticated: her send, in the same batch as
            // alice's, is refused and alice's still delivered.
            delete_device_row(&store, carol.device_pk).await;
            let (from_alice, from_carol) = (text(1, "from alice"), text(1, "from carol"));
            let (a, c) = tokio::join!(
                submit(&store, &alice, &from_alice, "a1", 2, 100),
                submit(&store, &carol, &from_carol, "c1", 2, 100),
            );
            assert!(matches!(a, SendOutcome::Accepted { .. }), "{a:?}");
            assert_eq!(c, SendOutcome::Refused(Refusal::NotAMember));
            let inbox = store.inbox(bob.device_pk, 0, 10).await.unwrap();
            let bodies: Vec<&[u8]> = inbox.iter().map(|e| e.payload.0.as_slice()).collect();
            assert_eq!(bodies, vec![&b"from alice"[..]]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_queue_in_order() {
        for store in each_backend_with("two_nodes_queue_in_order", BATCHING).await {
            let other = store.another_node(BATCHING).await;
            two_nodes_queue_in_order_on(&store, &other).await;
            other.close().await;
        }
    }

    /// Two writers on one database fill one queue at once: every envelope once, ids without
    /// gaps, in the order each writer committed them.
    async fn two_nodes_queue_in_order_on(one: &Store, two: &Store) {
        let alice = account(one, "alice", "000000000000000a", 1).await;
        let bob = account(one, "bob", "000000000000000b", 2).await;
        // Both nodes create the conversation at once: one wins, the other conflicts.
        let create = checked(EnvelopeKind::Commit, 0, &[&alice, &bob]);
        let (first, second) = tokio::join!(
            submit(one, &alice, &create, "create-1", 1, 1000),
            submit(two, &bob, &create, "create-2", 1, 1000),
        );
        let conflict = SendOutcome::Refused(Refusal::EpochConflict { current: 1 });
        match (&first, &second) {
            (SendOutcome::Accepted { .. }, c) | (c, SendOutcome::Accepted { .. }) => {
                assert_eq!(c, &conflict);
            }
            other => panic!("{other:?}"),
        }
        // One send retried on both nodes at once: stored once, the same answer twice.
        let hello = text(1, "hello");
        let (first, second) = tokio::join!(
            submit(one, &alice, &hello, "hello", 1, 1000),
            submit(two, &alice, &hello, "hello", 1, 1000),
        );
        match (&first, &second) {
            (SendOutcome::Accepted { response, .. }, SendOutcome::Repeated(r))
            | (SendOutcome::Repeated(r), SendOutcome::Accepted { response, .. }) => {
                assert_eq!(r, response);
            }
            other => panic!("{other:?}"),
        }
        // Start from an empty queue (alice's commit, if she won, and the hello).
        let earlier: Vec<u64> = one
            .inbox(bob.device_pk, 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert!(matches!(earlier.len(), 1 | 2), "{earlier:?}");
        let head = *earlier.last().unwrap();
        one.ack(bob.device_pk, &earlier).await.unwrap();

        let sends: Vec<(usize, CheckedSend)> =
            (0..60).map(|i| (i, text(1, &format!("m{i:02}")))).collect();
        let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
        let node = |i: usize| if i.is_multiple_of(2) { one } else { two };
        let outcomes = join_all(
            sends
                .iter()
                .map(|(i, send)| submit(node(*i), &alice, send, &keys[*i], 2, 1000)),
        )
        .await;
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, SendOutcome::Accepted { .. })),
            "{outcomes:?}"
        );
        let inbox = one.inbox(bob.device_pk, 0, 1000).await.unwrap();
        let ids: Vec<u64> = inbox.iter().map(|e| e.id).collect();
        assert_eq!(ids, (head + 1..=head + 60).collect::<Vec<u64>>());
        let bodies: BTreeSet<Vec<u8>> = inbox.iter().map(|e| e.payload.0.clone()).collect();
        assert_eq!(bodies.len(), 60);
        assert_eq!(two.queue_depth().await.unwrap(), 60);
        assert_eq!(
            two.queue_heads(&[bob.device_pk]).await.unwrap(),
            vec![(bob.device_pk, head + 60)]
        );
        // Acknowledging and expiring keep the counters exact.
        let acked = [head + 1, head + 2, head + 3, head + 60, head + 61];
        assert_eq!(two.ack(bob.device_pk, &acked).await.unwrap(), 4);
        assert_eq!(one.queue_depth().await.unwrap(), 56);
        let report = one
            .sweep(
                10 + crate::store::STORED_TIME_MS,
                crate::store::Lifetimes {
                    message_ttl_ms: 5,
                    pending_ttl_ms: 5,
                    claim_window_ms: 5,
                },
            )
            .await
            .unwrap();
        assert_eq!(report.envelopes, 56);
        assert_eq!(one.queue_depth().await.unwrap(), 0);
        assert_eq!(
            one.queue_heads(&[bob.device_pk]).await.unwrap(),
            vec![(bob.device_pk, head + 60)]
        );
    }
}

/// Not a benchmark (the load generator is that): a quick look at what group commit buys.
/// `cargo test -p nightjar-server --lib group_commit_throughput -- --ignored --nocapture`
#[cfg(test)]
mod throughput {
    use std::time::{Duration, Instant};

    use futures_util::future::join_all;
    use nightjar_api::EnvelopeKind;
    use nightjar_core::ConversationId;

    use super::super::test_support::{account, checked, each_backend_with, submit};
    use super::super::{Sender, Store};
    use super::*;

    const SENDERS: usize = 32;
    const EACH: usize = 50;

    async fn run(store: &Store) -> (f64, f64) {
        let mut pairs = Vec::new();
        for i in 0..SENDERS {
            let token = u16::try_from(2 * i + 1).unwrap();
            let a = account(
                store,
                &format!("a{i}"),
                &format!("{:016x}", 2 * i + 1),
                token,
            )
            .await;
            let b = account(
                store,
                &format!("b{i}"),
                &format!("{:016x}", 2 * i + 2),
                token + 1,
            )
            .await;
            let mut create = checked(EnvelopeKind::Commit, 0, &[&a, &b]);
            create.conversation = ConversationId([u8::try_from(i).unwrap(); 16]);
            assert!(matches!(
                submit(store, &a, &create, "create", 1, 100_000).await,
                SendOutcome::Accepted { .. }
            ));
            pairs.push((a, create.conversation));
        }
        let started = Instant::now();
        join_all(pairs.iter().map(|(a, conversation)| async move {
            for n in 0..EACH {
                let mut send = checked(EnvelopeKind::Application, 1, &[]);
                send.conversation = *conversation;
                let out = submit(store, a, &send, &format!("m{n}"), 2, 100_000).await;
                assert!(matches!(out, SendOutcome::Accepted { .. }));
            }
        }))
        .await;
        let pairwise = (SENDERS * EACH) as f64 / started.elapsed().as_secs_f64();

        // Fan-out: one conversation of 200 devices, 8 senders.
        let mut members: Vec<Sender> = Vec::new();
        for i in 0..200_u16 {
            let name = format!("g{i}");
            let device = format!("{:016x}", 1000 + i);
            members.push(account(store, &name, &device, 1000 + i).await);
        }
        let refs: Vec<&Sender> = members.iter().collect();
        let mut create = checked(EnvelopeKind::Commit, 0, &refs);
        create.conversation = ConversationId([0xee; 16]);
        assert!(matches!(
            submit(store, &members[0], &create, "create", 1, 100_000).await,
            SendOutcome::Accepted { .. }
        ));
        let started = Instant::now();
        join_all(members[..8].iter().map(|m| async move {
            for n in 0..25 {
                let mut send = checked(EnvelopeKind::Application, 1, &[]);
                send.conversation = ConversationId([0xee; 16]);
                let out = submit(store, m, &send, &format!("g{n}"), 2, 100_000).await;
                assert!(matches!(out, SendOutcome::Accepted { .. }));
            }
        }))
        .await;
        let fan_out = (8 * 25 * 199) as f64 / started.elapsed().as_secs_f64();
        (pairwise, fan_out)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "prints figures; run by hand"]
    async fn group_commit_throughput() {
        for (name, config) in [
            (
                "1 send per transaction",
                GroupCommit {
                    max_batch: 1,
                    writers: 1,
                    linger: Duration::ZERO,
                },
            ),
            (
                "1 send per tx, 4 writers",
                GroupCommit {
                    max_batch: 1,
                    ..GroupCommit::default()
                },
            ),
            (
                "group commit, 1 writer",
                GroupCommit {
                    writers: 1,
                    ..GroupCommit::default()
                },
            ),
            ("group commit (default)", GroupCommit::default()),
            (
                "group commit, 1 ms linger",
                GroupCommit {
                    linger: Duration::from_millis(1),
                    ..GroupCommit::default()
                },
            ),
        ] {
            for (i, store) in each_backend_with("group_commit_throughput", config)
                .await
                .iter()
                .enumerate()
            {
                let (pairwise, fan_out) = run(store).await;
                let backend = ["sqlite", "postgres"][i];
                println!(
                    "{backend:8} {name:28} {pairwise:7.0} sends/s ({SENDERS} senders), \
                     {fan_out:8.0} envelopes/s (200-device group)"
                );
            }
        }
    }
}
