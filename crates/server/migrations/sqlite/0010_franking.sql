-- Message franking and reports (docs/reporting.md).
-- messages.franking_commitment, franking_tag: a franked application message's commitment (the
--   sender's, 32 bytes, which reveals nothing about the content without the key inside the
--   ciphertext) and the server's tag over it, the conversation and the message's
--   created_at_ms; NULL for other messages.
-- message_reports: verified reports of franked messages, for moderators: who reported, the
--   conversation, the sending device (proven by its signature), the revealed message with its
--   franking key, signature, commitment and tag (so the report can be verified again), the
--   stamp's time, the reporter's words, when it was reported and when a moderator reviewed it.
--   One report per reporter and message.
ALTER TABLE messages ADD COLUMN franking_commitment BLOB;
ALTER TABLE messages ADD COLUMN franking_tag BLOB;

CREATE TABLE message_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL,
    sender_username TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    message BLOB NOT NULL,
    franking_key BLOB NOT NULL,
    signature BLOB NOT NULL,
    commitment BLOB NOT NULL,
    tag BLOB NOT NULL,
    franked_at_ms INTEGER NOT NULL,
    reason TEXT,
    created_at_ms INTEGER NOT NULL,
    reviewed_at_ms INTEGER,
    UNIQUE (reporter_id, commitment)
);
CREATE INDEX message_reports_unreviewed ON message_reports (id) WHERE reviewed_at_ms IS NULL;
