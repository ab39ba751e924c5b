-- Device authentication (issue 8): open logins are capped per client address group (an IPv4
-- address, an IPv6 /64) instead of server-wide, so one client cannot use up everybody's logins.
-- Rows from before this migration have no address and count only towards the server-wide cap.

ALTER TABLE pending_logins ADD COLUMN address TEXT NOT NULL DEFAULT '';
CREATE INDEX pending_logins_address ON pending_logins (address, expires_at_ms);
