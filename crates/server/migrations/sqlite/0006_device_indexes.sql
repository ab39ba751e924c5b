-- `devices_pending` covered every status, so SQLite (which keeps no statistics here) took it for
-- `status = 'active'` filters and walked every active device of the server, for instance to
-- list one account's devices. It exists for the pending-device sweep only: index just those.
DROP INDEX devices_pending;
CREATE INDEX devices_pending ON devices (created_at_ms) WHERE status = 'pending';
