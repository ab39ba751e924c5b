-- Attachments: the opaque blob store (docs/attachments.md). A blob is keyed by the SHA-256 of
-- its capability (`hash`), never the capability itself, so a copy of the database names no
-- readable blob; its bytes are in the object store, one object per part at
-- `blobs/<hex hash>/<index>`. `state`: uploading (parts missing), complete (readable), deleting
-- (its objects are being deleted; the row goes once they are). `created_at_ms` is rounded down
-- (to the hour by default); `expires_at_ms` is when the blob goes: the upload's deadline while
-- it is incomplete, then the end of its lifetime. `fetches` counts the distinct devices that
-- confirmed the download; at `recipients` the blob is deleted.
-- `account_id` has no ON DELETE CASCADE: a blob's objects must be deleted with its row.
CREATE TABLE blobs (
    hash BLOB PRIMARY KEY NOT NULL,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    size INTEGER NOT NULL,
    part_size INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    recipients INTEGER NOT NULL,
    fetches INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('uploading', 'complete', 'deleting')),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX blobs_account ON blobs (account_id, state);
CREATE INDEX blobs_expiry ON blobs (expires_at_ms);
CREATE INDEX blobs_state ON blobs (state);
-- The parts an incomplete upload stored (deleted once the blob is complete).
CREATE TABLE blob_parts (
    blob_hash BLOB NOT NULL REFERENCES blobs (hash) ON DELETE CASCADE,
    part INTEGER NOT NULL,
    PRIMARY KEY (blob_hash, part)
) WITHOUT ROWID;
-- The devices that confirmed a download, so that each counts once.
CREATE TABLE blob_fetches (
    blob_hash BLOB NOT NULL REFERENCES blobs (hash) ON DELETE CASCADE,
    device_pk INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    PRIMARY KEY (blob_hash, device_pk)
) WITHOUT ROWID;
CREATE INDEX blob_fetches_device ON blob_fetches (device_pk);
