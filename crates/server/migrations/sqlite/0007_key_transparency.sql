-- Key transparency: the verifiable directory (Meta's AKD) over this database.
-- `kt_nodes` holds AKD's tree nodes and its root record, keyed by AKD's binary id; `kt_values`
-- every value each username ever had, by epoch. `kt_epochs` is what the server signed and the
-- append-only proof from the epoch before, for auditors. An account's entry is due for
-- publication while `kt_published_version` is behind `device_list_version`.
CREATE TABLE kt_nodes (
    id BLOB PRIMARY KEY,
    record BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE kt_values (
    label BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    version INTEGER NOT NULL,
    value BLOB NOT NULL,
    node_label BLOB NOT NULL,
    node_label_len INTEGER NOT NULL,
    PRIMARY KEY (label, epoch)
) WITHOUT ROWID;
CREATE TABLE kt_epochs (
    epoch INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    signature BLOB NOT NULL,
    audit_proof BLOB NOT NULL,
    published_at_ms INTEGER NOT NULL
);
ALTER TABLE accounts ADD COLUMN kt_published_version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX accounts_kt_due ON accounts (id) WHERE device_list_version <> kt_published_version;
