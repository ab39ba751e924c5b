//! Acknowledgements in batches: the acks of many devices that arrive together are deleted in
//! one transaction (one fsync), by writer tasks fed like the send writers (`batch.rs`).
//!
//! Per batch: the devices are locked in id order (the same global order as the send path),
//! their acknowledged queue rows deleted with one statement per 1,000 rows, `queue_len`
//! lowered with one statement, and messages that no queue refers to any more deleted. An id
//! that is not (or no longer) in the device's queue is ignored, so an ack repeated after a
//! reconnect changes nothing.
//!
//! An ack batch commits atomically but without an fsync of its own (`Db::write_relaxed`):
//! a crash right after it may undo it, and the envelopes are then sent again, which delivery
//! allows (at least once; the client drops what it already processed). Messages themselves
//! are always committed durably.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder};

use super::backend::{MAX_IDS, QueueCounter};
use super::batch::{Job, MAX_RERUNS, Queue, gather};
use super::{Backend, Column, Db, Param};
use crate::config::GroupCommit;

/// One device's acknowledgement.
#[derive(Debug)]
pub(super) struct AckRequest {
    pub(super) device_pk: i64,
    /// Queue ids, as stored.
    pub(super) seqs: Vec<i64>,
}

/// An acknowledgement waiting for a writer; answered with the number of envelopes deleted.
type AckJob = Job<AckRequest, u64>;

/// An ack writer task: batches until every handle on the queue is gone.
pub(super) async fn run<DB>(db: Arc<Db<DB>>, queue: Queue<AckRequest, u64>, config: GroupCommit)
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
{
    while let Some(jobs) = gather(&queue, config).await {
        db.commit_acks(jobs).await;
    }
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
{
    /// Deletes a batch of acknowledgements and answers each. A transient failure (deadlock)
    /// runs the batch again; if the batch still fails, each acknowledgement runs on its own,
    /// so one that fails does not fail the others.
    async fn commit_acks(&self, jobs: Vec<AckJob>) {
        let (requests, replies): (Vec<AckRequest>, Vec<_>) =
            jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        let mut reruns = 0;
        let outcome = loop {
            match self.delete_acked(&requests).await {
                Err(e) if DB::is_transient(&e) && reruns < MAX_RERUNS => reruns += 1,
                other => break other,
            }
        };
        match outcome {
            Ok(counts) => {
                for (reply, count) in replies.into_iter().zip(counts) {
                    let _ = reply.send(Ok(count));
                }
            }
            Err(e) if requests.len() == 1 => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, acks = requests.len(), "ack batch failed; one by one");
                for (request, reply) in requests.into_iter().zip(replies) {
                    let outcome = self
                        .delete_acked(std::slice::from_ref(&request))
                        .await
                        .map(|counts| counts.first().copied().unwrap_or(0));
                    let _ = reply.send(outcome);
                }
            }
        }
    }

    /// Deletes the acknowledged envelopes of every request in one transaction; returns how
    /// many each request deleted (an id listed twice counts once, for its first request).
    pub(super) async fn delete_acked(
        &self,
        requests: &[AckRequest],
    ) -> Result<Vec<u64>, sqlx::Error> {
        // Each row to delete once, and the first request that listed it (which it counts for).
        let mut rows: Vec<(i64, i64)> = Vec::new();
        let mut owner: HashMap<(i64, i64), usize> = HashMap::new();
        for (i, r) in requests.iter().enumerate() {
            for &seq in &r.seqs {
                if let Entry::Vacant(e) = owner.entry((r.device_pk, seq)) {
                    e.insert(i);
                    rows.push((r.device_pk, seq));
                }
            }
        }
        if rows.is_empty() {
            return Ok(vec![0; requests.len()]);
        }
        let mut devices: Vec<i64> = requests.iter().map(|r| r.device_pk).collect();
        devices.sort_unstable();
        devices.dedup();

        // A lost acknowledgement only means the envelope comes again: no fsync of its own.
        let mut w = self.write_relaxed().await?;
        // The device rows before their queue rows, in id order, like every queue writer.
        Self::lock_devices(&mut w.tx, &devices).await?;
        let deleted = DB::delete_queue_rows(&mut w.tx, &rows).await?;

        let mut per_device: HashMap<i64, i64> = HashMap::new();
        for (device_pk, _, _) in &deleted {
            *per_device.entry(*device_pk).or_default() += 1;
        }
        DB::adjust_queues(&mut w.tx, &QueueCounter::removals(per_device)).await?;

        let mut messages: Vec<i64> = deleted.iter().map(|(_, _, m)| *m).collect();
        messages.sort_unstable();
        messages.dedup();
        for chunk in messages.chunks(MAX_IDS) {
            let mut q = QueryBuilder::<DB>::new("DELETE FROM messages WHERE ");
            DB::push_id_filter(&mut q, "id", chunk);
            q.push(" AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.message_id = messages.id)");
            q.build().execute(&mut *w.tx).await?;
        }
        w.commit().await?;

        let mut counts = vec![0; requests.len()];
        for (device_pk, seq, _) in &deleted {
            if let Some(&i) = owner.get(&(*device_pk, *seq)) {
                counts[i] += 1;
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::future::join_all;
    use nightjar_api::EnvelopeKind;

    use super::super::test_support::{account, checked, each_backend_with, submit};
    use super::super::{SendOutcome, Store};
    use super::*;

    /// A linger long enough that acks made together land in one batch.
    const BATCHING: GroupCommit = GroupCommit {
        max_batch: 64,
        writers: 2,
        linger: Duration::from_millis(50),
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_of_many_devices_share_a_batch() {
        for store in each_backend_with("acks_of_many_devices_share_a_batch", BATCHING).await {
            acks_of_many_devices_share_a_batch_on(&store).await;
        }
    }

    async fn acks_of_many_devices_share_a_batch_on(store: &Store) {
        let alice = account(store, "alice", "000000000000000a", 1).await;
        let bob = account(store, "bob", "000000000000000b", 2).await;
        let carol = account(store, "carol", "000000000000000c", 3).await;
        let create = checked(EnvelopeKind::Commit, 0, &[&alice, &bob, &carol]);
        assert!(matches!(
            submit(store, &alice, &create, "create", 1, 100).await,
            SendOutcome::Accepted { .. }
        ));
        for i in 0..5 {
            let send = checked(EnvelopeKind::Application, 1, &[]);
            let key = format!("m{i}");
            let out = submit(store, &alice, &send, &key, 2, 100).await;
            assert!(matches!(out, SendOutcome::Accepted { .. }), "{out:?}");
        }
        // bob and carol each hold ids 1..=5 (the creating commit reaches nobody; a
        // Welcome would).
        assert_eq!(store.queue_depth().await.unwrap(), 10);

        // At once: bob acks 1-3 twice over, carol acks 1, 2 and ids she never had, alice
        // (whose queue is empty) acks carol's ids, and bob acks 4 again in a separate frame.
        let acks: Vec<(i64, Vec<u64>)> = vec![
            (bob.device_pk, vec![1, 2, 3, 3]),
            (carol.device_pk, vec![1, 2, 99, 1000]),
            (alice.device_pk, vec![3, 4, 5]),
            (bob.device_pk, vec![2, 4]),
        ];
        let counts = join_all(acks.iter().map(|(pk, ids)| store.ack(*pk, ids))).await;
        let counts: Vec<u64> = counts.into_iter().map(Result::unwrap).collect();
        assert_eq!(counts.iter().sum::<u64>(), 6, "{counts:?}");
        assert_eq!(counts[1], 2);
        assert_eq!(counts[2], 0);

        let ids = |pk| async move {
            store
                .inbox(pk, 0, 100)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<u64>>()
        };
        assert_eq!(ids(bob.device_pk).await, vec![5]);
        assert_eq!(ids(carol.device_pk).await, vec![3, 4, 5]);
        assert_eq!(store.queue_depth().await.unwrap(), 4);

        // Once every queue let go of a message, the message itself is gone; the counters
        // stay exact and repeated acks change nothing.
        assert_eq!(store.ack(bob.device_pk, &[5, 5]).await.unwrap(), 1);
        assert_eq!(store.stored_messages().await.unwrap(), 3);
        assert_eq!(store.ack(carol.device_pk, &[3, 4, 5]).await.unwrap(), 3);
        assert_eq!(store.ack(carol.device_pk, &[3, 4, 5]).await.unwrap(), 0);
        assert_eq!(store.queue_depth().await.unwrap(), 0);
        assert_eq!(store.stored_messages().await.unwrap(), 0);
    }
}
