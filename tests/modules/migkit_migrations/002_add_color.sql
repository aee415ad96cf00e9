-- The second migkit migration: depends on the first having run.
ALTER TABLE widgets ADD COLUMN color text NOT NULL DEFAULT 'blue';
