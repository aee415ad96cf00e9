-- Users, refresh-token families and the audit trail of the auth module.
-- pharmacy_id is a plain bigint: the pharmacies module adds the foreign key,
-- because auth must run without it (DESIGN.md, module graph).
CREATE TABLE users (
    id                    bigserial PRIMARY KEY,
    username              text NOT NULL CHECK (length(username) BETWEEN 1 AND 150),
    email                 text NOT NULL DEFAULT '',
    phone                 text NOT NULL DEFAULT '',
    password_hash         text NOT NULL DEFAULT '',
    role                  text NOT NULL DEFAULT 'REGISTERED_USER'
                          CHECK (role IN ('SUPER_ADMIN', 'PHARMACY_ADMIN', 'DOCTOR', 'REGISTERED_USER')),
    status                text NOT NULL DEFAULT 'ACTIVE'
                          CHECK (status IN ('ACTIVE', 'INACTIVE', 'LOCKED', 'PENDING_VERIFICATION')),
    email_verified        boolean NOT NULL DEFAULT false,
    phone_verified        boolean NOT NULL DEFAULT false,
    failed_login_attempts integer NOT NULL DEFAULT 0,
    locked_until          timestamptz,
    pharmacy_id           bigint,
    gender                text NOT NULL DEFAULT '' CHECK (gender IN ('', 'MALE', 'FEMALE', 'OTHER')),
    date_of_birth         date,
    address               text NOT NULL DEFAULT '' CHECK (length(address) <= 500),
    profile_picture       text,
    last_login            timestamptz,
    deleted_at            timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
-- Soft-deleted rows keep their addresses: an address is never silently reused.
CREATE UNIQUE INDEX users_email_key ON users (lower(email)) WHERE email <> '';
CREATE UNIQUE INDEX users_phone_key ON users (phone) WHERE phone <> '';
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

-- One row per issued refresh token. A family is one login's chain of
-- rotations: reuse of a rotated token revokes the whole family.
CREATE TABLE refresh_tokens (
    jti        uuid PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family     uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

CREATE TABLE audit_logs (
    id         bigserial PRIMARY KEY,
    user_id    bigint REFERENCES users (id) ON DELETE SET NULL,
    action     text NOT NULL,
    ip         text NOT NULL DEFAULT '',
    user_agent text NOT NULL DEFAULT '',
    metadata   jsonb NOT NULL DEFAULT '{}',
    actor      bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_user ON audit_logs (user_id, created_at);
CREATE INDEX audit_logs_action ON audit_logs (action, created_at);
