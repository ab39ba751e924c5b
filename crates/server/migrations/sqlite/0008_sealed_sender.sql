-- Sealed sender. `sealed_keys`: the public half of each conversation epoch's sealed-sender key,
-- as member devices registered it (one row per registering device and epoch, so a hostile
-- member cannot crowd out the right key; kept for the last few epochs). `sealed_submissions`:
-- the idempotency keys of sealed sends, by conversation, since the server does not know the
-- sending device.
CREATE TABLE sealed_keys (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    device_pk INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    public_key BLOB NOT NULL,
    PRIMARY KEY (conversation_id, epoch, device_pk)
) WITHOUT ROWID;
CREATE INDEX sealed_keys_device ON sealed_keys (device_pk);
CREATE TABLE sealed_submissions (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    submission_id TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, submission_id)
) WITHOUT ROWID;
CREATE INDEX sealed_submissions_created ON sealed_submissions (created_at_ms);
