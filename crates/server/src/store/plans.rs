//! SQLite's query plans for the statements that run per message or per commit: each must
//! reach its rows through an index. SQLite keeps no statistics here, so an index that merely
//! *could* serve a filter can mislead it into walking a whole table (a status index once made
//! "this account's active devices" read every active device of the server).

use sqlx::Row as _;

use super::Backends;
use super::test_support::temp_store;

/// Statements as the store writes them (bound values are placeholders).
const STATEMENTS: &[&str] = &[
    // One account's devices (claims, device lists).
    "SELECT id, device_id FROM devices WHERE account_id = ?1 AND status = 'active' ORDER BY id",
    // Registered keys and queues of the devices a commit names.
    "SELECT a.username, d.device_id, d.signature_key FROM accounts a \
     JOIN devices d ON d.account_id = a.id \
     WHERE d.status = 'active' AND (a.username, d.device_id) IN (VALUES (?1, ?2), (?3, ?4))",
    "SELECT d.id, d.queue_len FROM accounts a JOIN devices d ON d.account_id = a.id \
     WHERE d.status = 'active' AND (a.username, d.device_id) IN (VALUES (?1, ?2), (?3, ?4))",
    // The send batch: senders, conversations, members with consent, idempotency keys.
    "SELECT id FROM devices WHERE status = 'active' AND id IN (?1, ?2) ORDER BY id",
    "SELECT id, epoch FROM conversations WHERE id IN (?1, ?2) ORDER BY id",
    "SELECT m.conversation_id, m.username, m.device_id, d.id, d.queue_len, d.status, a.id, \
     cc.state, s.column2, c.state FROM (SELECT value ->> 0 AS column1, value ->> 1 AS column2 \
     FROM json_each(?1)) AS s JOIN conversation_members m ON m.conversation_id = s.column1 \
     LEFT JOIN accounts a ON a.username = m.username \
     LEFT JOIN devices d ON d.account_id = a.id AND d.device_id = m.device_id \
     LEFT JOIN conversation_consent cc ON cc.conversation_id = m.conversation_id \
     AND cc.account_id = a.id \
     LEFT JOIN consent c ON c.owner_id = a.id AND c.peer_id = s.column2",
    "SELECT device_pk, idempotency_key, message_id, epoch FROM idempotency \
     WHERE (device_pk, idempotency_key) IN (VALUES (?1, ?2), (?3, ?4))",
    // Acknowledgements.
    "DELETE FROM queue WHERE (device_pk, seq) IN (VALUES (?1, ?2), (?3, ?4)) \
     RETURNING device_pk, seq, message_id",
    // The pending-device sweep still has its index.
    "DELETE FROM devices WHERE status = 'pending' AND created_at_ms < ?1",
    // Attachments: an account's quota at each new blob, and the blob sweep.
    "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT), COUNT(*) FILTER (WHERE state = 'uploading') \
     FROM blobs WHERE account_id = ?1 AND state <> 'deleting' AND expires_at_ms > ?2",
    "UPDATE blobs SET state = 'deleting' WHERE expires_at_ms <= ?1 AND state <> 'deleting'",
    "SELECT hash, parts FROM blobs WHERE state = 'deleting' LIMIT ?1",
];

/// Plan steps that read a stored table without an index.
fn table_scans(plan: &[String]) -> Vec<&String> {
    plan.iter()
        .filter(|step| {
            step.starts_with("SCAN")
                && !step.contains("VALUES CLAUSE")
                && !step.contains("CONSTANT ROW")
                && !step.contains("json_each")
                && !step.starts_with("SCAN s")
        })
        .collect()
}

#[tokio::test]
async fn hot_statements_reach_their_rows_through_indexes() {
    let (store, _dir) = temp_store().await;
    let Backends::Sqlite(db) = &store.backend else {
        panic!("temp_store opens SQLite");
    };
    for statement in STATEMENTS {
        // The statements are this file's constants.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {statement}"
        )))
        .fetch_all(db.reader())
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(3)).collect();
        let scans = table_scans(&plan);
        assert!(scans.is_empty(), "{statement}\nwalks a table: {plan:#?}");
        let status_only =
            plan.iter().any(|s| s.contains("devices_pending")) && !statement.contains("'pending'");
        assert!(
            !status_only,
            "{statement}\nuses the pending index: {plan:#?}"
        );
    }
}
