-- Access tokens issued before this moment are refused (set by a password
-- reset: whoever knew the old password loses every session within a second).
ALTER TABLE users ADD COLUMN tokens_valid_after timestamptz;
