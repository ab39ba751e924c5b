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
ALTER TABLE messages ADD COLUMN franking_commitment BYTEA;
ALTER TABLE messages ADD COLUMN franking_tag BYTEA;

CREATE TABLE message_reports (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reporter_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL,
    sender_username TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    message BYTEA NOT NULL,
    franking_key BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    commitment BYTEA NOT NULL,
    tag BYTEA NOT NULL,
    franked_at_ms BIGINT NOT NULL,
    reason TEXT,
    created_at_ms BIGINT NOT NULL,
    reviewed_at_ms BIGINT,
    UNIQUE (reporter_id, commitment)
);
CREATE INDEX message_reports_unreviewed ON message_reports (id) WHERE reviewed_at_ms IS NULL;
