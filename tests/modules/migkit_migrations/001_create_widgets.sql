-- The first migkit migration: a table and an index, two statements in one
-- file (a migration may hold several; they run in one transaction).
CREATE TABLE widgets (
    id bigserial PRIMARY KEY,
    name text NOT NULL
);
CREATE INDEX widgets_name_idx ON widgets (name);
