-- Nightjar server schema, version 1 (PostgreSQL): the same tables and meaning as the SQLite
-- schema after its migration 0002. Integers are 64-bit; times are milliseconds since the Unix
-- epoch. The server stores only public keys, signed device lists, OPAQUE password files and
-- ciphertext. Identity columns never reuse a value.

CREATE TABLE server_state (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE accounts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    opaque_record BYTEA NOT NULL,
    identity_key BYTEA NOT NULL,
    device_list BYTEA NOT NULL,
    device_list_version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- queue_seq: the last queue id handed out to the device; queue_len: envelopes queued for it.
-- Both change only with the row locked, in the transaction that inserts or deletes envelopes.
CREATE TABLE devices (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'pending')),
    signature_key BYTEA NOT NULL,
    link_offer BYTEA,
    sealed_identity BYTEA,
    created_at_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    queue_seq BIGINT NOT NULL DEFAULT 0,
    queue_len BIGINT NOT NULL DEFAULT 0,
    UNIQUE (account_id, device_id)
);
CREATE INDEX devices_pending ON devices (status, created_at_ms);

CREATE TABLE sessions (
    token_hash BYTEA PRIMARY KEY,
    device_pk BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX sessions_device ON sessions (device_pk);
CREATE INDEX sessions_expiry ON sessions (expires_at_ms);

CREATE TABLE key_packages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_pk BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    last_resort BOOLEAN NOT NULL,
    digest BYTEA NOT NULL,
    data BYTEA NOT NULL,
    UNIQUE (device_pk, digest)
);
CREATE INDEX key_packages_claim ON key_packages (device_pk, last_resort, id);

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    device_id TEXT NOT NULL,
    PRIMARY KEY (conversation_id, username, device_id)
);

CREATE TABLE messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id TEXT,
    sender_username TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('application', 'commit', 'proposal', 'welcome')),
    payload BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX messages_created ON messages (created_at_ms);

CREATE TABLE queue (
    device_pk BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    message_id BIGINT NOT NULL REFERENCES messages (id),
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (device_pk, seq)
);
CREATE INDEX queue_message ON queue (message_id);
CREATE INDEX queue_created ON queue (created_at_ms);

CREATE TABLE idempotency (
    device_pk BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    message_id BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (device_pk, idempotency_key)
);
CREATE INDEX idempotency_created ON idempotency (created_at_ms);

-- Logins between their two steps, so that any node can finish a login another node started.
-- `sealed` is the OPAQUE server state encrypted under a key that only the client holds (it is
-- part of the login id), so reading the database does not let anyone finish a login.
-- `account_id` is 0 and `username` NULL for an unknown username (the login fails at the end).
CREATE TABLE pending_logins (
    handle BYTEA PRIMARY KEY,
    account_id BIGINT NOT NULL,
    username TEXT,
    sealed BYTEA NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX pending_logins_expiry ON pending_logins (expires_at_ms);
