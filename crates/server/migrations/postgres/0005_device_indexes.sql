-- `devices_pending` exists for the pending-device sweep only: index just those rows (the same
-- index as on SQLite, where the full one misled the planner into walking every active device).
DROP INDEX devices_pending;
CREATE INDEX devices_pending ON devices (created_at_ms) WHERE status = 'pending';
