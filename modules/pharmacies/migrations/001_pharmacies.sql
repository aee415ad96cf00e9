-- Pharmacies (the connector's Pharmacy), their API keys, and the foreign key
-- from auth's users.pharmacy_id, which auth leaves to this module so that it
-- can run without it.
CREATE TABLE pharmacies (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    webhook_url    text CHECK (length(webhook_url) <= 255),
    is_active      boolean NOT NULL DEFAULT true,
    address        text NOT NULL DEFAULT '' CHECK (length(address) <= 255),
    phone          text NOT NULL DEFAULT '' CHECK (length(phone) <= 32),
    -- DGDA drug licence number, optional.
    license_number text NOT NULL DEFAULT '' CHECK (length(license_number) <= 100),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Only a keyed hash of each key is stored (hex of BLAKE2b with the server's
-- pepper); `prefix` (8 characters after "rxk_") finds the row and names the
-- key in lists and logs. Revoked keys keep their row for the audit trail.
CREATE TABLE api_keys (
    id           bigserial PRIMARY KEY,
    pharmacy_id  bigint NOT NULL REFERENCES pharmacies (id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '' CHECK (length(name) <= 100),
    prefix       text NOT NULL,
    key_hash     text NOT NULL,
    created_by   bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE UNIQUE INDEX api_keys_prefix ON api_keys (prefix);
CREATE INDEX api_keys_pharmacy ON api_keys (pharmacy_id);

ALTER TABLE users ADD CONSTRAINT users_pharmacy_id_fkey
    FOREIGN KEY (pharmacy_id) REFERENCES pharmacies (id) ON DELETE SET NULL;
CREATE INDEX users_pharmacy ON users (pharmacy_id);
