-- Helpers for the audit rows rbac writes inside the statements that change a
-- user (role, status, pharmacy, delete, restore): identifiers in audit
-- metadata are masked exactly as the auth module masks them (util.c,
-- auth_mask), so a reader of the audit log never sees a full address.
CREATE FUNCTION rbac_mask_email(e text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN e IS NULL OR e = '' THEN NULL
    WHEN strpos(e, '@') > 0
      THEN left(e, CASE WHEN strpos(e, '@') > 1 THEN 1 ELSE 0 END) || '***' || substr(e, strpos(e, '@'))
    ELSE left(e, 1) || '***'
  END
$$;

CREATE FUNCTION rbac_mask_phone(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN p IS NULL OR p = '' THEN NULL
    WHEN length(p) > 7 THEN left(p, 4) || '*****' || right(p, 3)
    ELSE '*****'
  END
$$;

-- {"email": masked, "phone": masked, "actor": id} without the absent ones.
CREATE FUNCTION rbac_audit_meta(email text, phone text, actor bigint) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_strip_nulls(jsonb_build_object('email', rbac_mask_email(email),
                                              'phone', rbac_mask_phone(phone)))
         || jsonb_build_object('actor', actor)
$$;

CREATE INDEX IF NOT EXISTS audit_logs_created ON audit_logs (created_at, id);
