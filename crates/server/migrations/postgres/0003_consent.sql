-- Consent (PostgreSQL; the same schema as SQLite migration 0004): message requests, blocks,
-- reports and key-package claim quotas.
--
-- consent: what account `owner_id` decided about account `peer_id` (no row: never decided).
-- conversation_consent: per conversation and member account, whether that account accepted
--   the conversation ('accepted': it created it, sent in it, or was added by an account it
--   accepted) or not yet ('request'; `inviter_id` is the account whose Welcome added it).
-- message_requests: application messages and Welcomes queued from `sender_id` for
--   `recipient_id` while the recipient had accepted neither the sender nor the conversation.
-- reports: who reported whom, when, about which conversation, in the reporter's words.
-- key_package_claims: one-time key packages `claimer_id` claimed of `target_id` in the window
--   that started at `window_start_ms`.

CREATE TABLE consent (
    owner_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    peer_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('accepted', 'blocked')),
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (owner_id, peer_id)
);
CREATE INDEX consent_peer ON consent (peer_id, owner_id);

CREATE TABLE conversation_consent (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    inviter_id BIGINT,
    state TEXT NOT NULL CHECK (state IN ('request', 'accepted')),
    PRIMARY KEY (conversation_id, account_id)
);
CREATE INDEX conversation_consent_inviter ON conversation_consent (account_id, inviter_id);

CREATE TABLE message_requests (
    recipient_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    sender_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    messages BIGINT NOT NULL,
    PRIMARY KEY (recipient_id, sender_id)
);

CREATE TABLE reports (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reporter_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    reported_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    conversation_id TEXT,
    reason TEXT,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE key_package_claims (
    claimer_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    target_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    window_start_ms BIGINT NOT NULL,
    claims BIGINT NOT NULL,
    PRIMARY KEY (claimer_id, target_id)
);

-- Conversations from before consent existed stay as they were: every member accepted them.
INSERT INTO conversation_consent (conversation_id, account_id, inviter_id, state)
    SELECT DISTINCT m.conversation_id, a.id, CAST(NULL AS BIGINT), 'accepted'
    FROM conversation_members m JOIN accounts a ON a.username = m.username;
