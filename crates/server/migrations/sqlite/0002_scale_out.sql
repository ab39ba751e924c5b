-- Queue ids become per device: `devices.queue_seq` is the last id handed out to the device and
-- `devices.queue_len` counts its queued envelopes (the queue limit is checked without counting
-- rows). The same schema runs on PostgreSQL, where several nodes write concurrently and the id
-- is advanced with the device row locked, so ids are committed in increasing order per device.
-- Existing envelopes keep their ids, so clients resuming "after" an id miss nothing.

ALTER TABLE devices ADD COLUMN queue_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN queue_len INTEGER NOT NULL DEFAULT 0;

CREATE TABLE device_queue (
    device_pk INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages (id),
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (device_pk, seq)
) WITHOUT ROWID;

INSERT INTO device_queue (device_pk, seq, message_id, created_at_ms)
    SELECT device_pk, id, message_id, created_at_ms FROM queue;

UPDATE devices SET
    queue_seq = COALESCE((SELECT MAX(seq) FROM device_queue WHERE device_pk = devices.id), 0),
    queue_len = (SELECT COUNT(*) FROM device_queue WHERE device_pk = devices.id);

DROP TABLE queue;
ALTER TABLE device_queue RENAME TO queue;
CREATE INDEX queue_message ON queue (message_id);
CREATE INDEX queue_created ON queue (created_at_ms);

-- Logins between their two steps, so that any node can finish a login another node started.
-- `sealed` is the OPAQUE server state encrypted under a key that only the client holds (it is
-- part of the login id), so reading the database does not let anyone finish a login.
-- `account_id` is 0 and `username` NULL for an unknown username (the login fails at the end).
CREATE TABLE pending_logins (
    handle BLOB PRIMARY KEY NOT NULL,
    account_id INTEGER NOT NULL,
    username TEXT,
    sealed BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX pending_logins_expiry ON pending_logins (expires_at_ms);
