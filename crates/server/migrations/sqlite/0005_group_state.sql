-- The public MLS state of each conversation (ratchet tree of public keys, group context,
-- transcript hashes; no secret), against which the server validates every commit and proposal
-- (MLS PublicMessages) with OpenMLS's PublicGroup. Written in the transaction that advances the
-- conversation's epoch, so `group_states.epoch` always equals `conversations.epoch`.
CREATE TABLE group_states (
    conversation_id TEXT PRIMARY KEY NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    state BLOB NOT NULL
);

-- Validated standalone proposals (a member leaving), kept as their messages so the commit that
-- includes them by reference validates. Only those of the current epoch count; a commit deletes
-- the conversation's rows.
CREATE TABLE group_proposals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    message BLOB NOT NULL
);
CREATE INDEX group_proposals_conversation ON group_proposals (conversation_id, epoch);
