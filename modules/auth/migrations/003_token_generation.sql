-- Session generation. tokens_valid_after alone was compared with the JWT iat
-- in whole seconds, so an access token issued in the same second as a password
-- reset, a role change or a deactivation survived it (and moving the moment to
-- the next second refused tokens issued legitimately just after). Now every
-- statement that ends a user's sessions adds one to token_generation in the
-- same UPDATE that sets tokens_valid_after, and every statement that issues
-- tokens reads the generation in the statement that records the refresh token:
-- the tokens carry it (claim "gen"), and a token is valid while its generation
-- is not older than the user's. No clock is compared, so "issued before" means
-- "issued by a statement that did not see the revocation", to the transaction.
-- Tokens without the claim (signed before this migration) fall back to iat,
-- now refused when iat <= the whole second of tokens_valid_after (stricter
-- than before: see modules/auth/tokens.c).
ALTER TABLE users ADD COLUMN token_generation bigint NOT NULL DEFAULT 0;

-- tokens_valid_after set by hand (UPDATE users SET tokens_valid_after = now())
-- still ends the sessions: a change to it that does not move the generation
-- itself moves it by one.
CREATE FUNCTION users_token_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tokens_valid_after IS DISTINCT FROM OLD.tokens_valid_after
       AND NEW.token_generation = OLD.token_generation THEN
        NEW.token_generation := OLD.token_generation + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_token_generation BEFORE UPDATE OF tokens_valid_after ON users
    FOR EACH ROW EXECUTE FUNCTION users_token_generation();
