-- Key transparency: the verifiable directory (Meta's AKD) over this database.
-- `kt_nodes` holds AKD's tree nodes and its root record, keyed by AKD's binary id; `kt_values`
-- every value each username ever had, by epoch. `kt_epochs` is what the server signed and the
-- append-only proof from the epoch before, for auditors. An account's entry is due for
-- publication while `kt_published_version` is behind `device_list_version`.
CREATE TABLE kt_nodes (
    id BYTEA PRIMARY KEY,
    record BYTEA NOT NULL
);
CREATE TABLE kt_values (
    label BYTEA NOT NULL,
    epoch BIGINT NOT NULL,
    version BIGINT NOT NULL,
    value BYTEA NOT NULL,
    node_label BYTEA NOT NULL,
    node_label_len BIGINT NOT NULL,
    PRIMARY KEY (label, epoch)
);
CREATE TABLE kt_epochs (
    epoch BIGINT PRIMARY KEY,
    root BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    audit_proof BYTEA NOT NULL,
    published_at_ms BIGINT NOT NULL
);
ALTER TABLE accounts ADD COLUMN kt_published_version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX accounts_kt_due ON accounts (id) WHERE device_list_version <> kt_published_version;
