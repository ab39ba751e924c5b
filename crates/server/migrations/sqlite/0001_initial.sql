-- Nightjar server schema, version 1 (SQLite).
-- Integers are 64-bit; times are milliseconds since the Unix epoch. The server stores only
-- public keys, signed device lists, OPAQUE password files and ciphertext.
-- AUTOINCREMENT keeps ids from ever being reused: queue ids are cursors clients resume from.

CREATE TABLE server_state (
    name TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);

CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    opaque_record BLOB NOT NULL,
    identity_key BLOB NOT NULL,
    device_list BLOB NOT NULL,
    device_list_version INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE devices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'pending')),
    signature_key BLOB NOT NULL,
    link_offer BLOB,
    sealed_identity BLOB,
    created_at_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    UNIQUE (account_id, device_id)
);
CREATE INDEX devices_pending ON devices (status, created_at_ms);

CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY NOT NULL,
    device_pk INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX sessions_device ON sessions (device_pk);
CREATE INDEX sessions_expiry ON sessions (expires_at_ms);

CREATE TABLE key_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_pk INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
    digest BLOB NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (device_pk, digest)
);
CREATE INDEX key_packages_claim ON key_packages (device_pk, last_resort, id);

CREATE TABLE conversations (
    id TEXT PRIMARY KEY NOT NULL,
    epoch INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    device_id TEXT NOT NULL,
    PRIMARY KEY (conversation_id, username, device_id)
);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT,
    sender_username TEXT NOT NULL,
    sender_device_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('application', 'commit', 'proposal', 'welcome')),
    payload BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_pk INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    message_id INTEGER NOT NULL REFERENCES messages (id),
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX queue_device ON queue (device_pk, id);
CREATE INDEX queue_message ON queue (message_id);
CREATE INDEX queue_created ON queue (created_at_ms);

CREATE TABLE idempotency (
    device_pk INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (device_pk, idempotency_key)
);
CREATE INDEX idempotency_created ON idempotency (created_at_ms);
