-- auth schema: teams, users, memberships, invitations, API keys, audit log.
-- Every team-owned row carries team_id, which leads its primary key and indexes. Row-level
-- security (forced, so it binds the owning role too) admits a row only when the transaction
-- has set evalbus.team_id to its team, or evalbus.system = 'on' (credential lookups and
-- operator commands). The audit log is append-only.

CREATE FUNCTION auth.visible(team uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT coalesce(current_setting('evalbus.system', true), '') = 'on'
      OR team::text = coalesce(current_setting('evalbus.team_id', true), '')
$$;

-- RFC 3339 text of a timestamp in UTC with milliseconds, as the API answers it.
CREATE FUNCTION auth.iso(ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

CREATE TABLE auth.teams (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  tier       text NOT NULL CHECK (tier IN ('free', 'pro', 'enterprise')),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth.users (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
  password_hash text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON auth.users (lower(email));

CREATE TABLE auth.memberships (
  team_id    uuid NOT NULL REFERENCES auth.teams (id) ON DELETE CASCADE,
  user_id    uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  role       text NOT NULL CHECK (role IN ('viewer', 'member', 'admin', 'owner')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, user_id)
);
CREATE INDEX memberships_user_idx ON auth.memberships (user_id);

CREATE TABLE auth.invitations (
  team_id     uuid NOT NULL REFERENCES auth.teams (id) ON DELETE CASCADE,
  id          uuid NOT NULL DEFAULT gen_random_uuid(),
  email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
  role        text NOT NULL CHECK (role IN ('viewer', 'member', 'admin', 'owner')),
  token_hash  text NOT NULL UNIQUE,
  created_by  uuid,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  accepted_at timestamptz,
  revoked_at  timestamptz,
  PRIMARY KEY (team_id, id)
);

CREATE TABLE auth.api_keys (
  team_id      uuid NOT NULL REFERENCES auth.teams (id) ON DELETE CASCADE,
  id           uuid NOT NULL DEFAULT gen_random_uuid(),
  name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  prefix       text NOT NULL UNIQUE,
  key_hash     text NOT NULL UNIQUE,
  role         text NOT NULL CHECK (role IN ('viewer', 'member', 'admin', 'owner')),
  scopes       text[] NOT NULL,
  project      text,
  created_by   uuid,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz,
  revoked_at   timestamptz,
  last_used_at timestamptz,
  PRIMARY KEY (team_id, id)
);
CREATE INDEX api_keys_team_created_idx ON auth.api_keys (team_id, created_at DESC);

CREATE TABLE auth.audit_log (
  team_id       uuid NOT NULL,
  id            bigint GENERATED ALWAYS AS IDENTITY,
  at            timestamptz NOT NULL DEFAULT clock_timestamp(),
  action        text NOT NULL,
  actor_user_id uuid,
  actor_key_id  uuid,
  target        text,
  detail        jsonb NOT NULL DEFAULT '{}',
  request_id    text,
  PRIMARY KEY (team_id, id)
);

CREATE FUNCTION auth.audit_log_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'auth.audit_log is append-only' USING ERRCODE = '42501';
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON auth.audit_log
  FOR EACH ROW EXECUTE FUNCTION auth.audit_log_immutable();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON auth.audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION auth.audit_log_immutable();

ALTER TABLE auth.teams ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.teams FORCE ROW LEVEL SECURITY;
CREATE POLICY team_isolation ON auth.teams USING (auth.visible(id)) WITH CHECK (auth.visible(id));

ALTER TABLE auth.memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY team_isolation ON auth.memberships
  USING (auth.visible(team_id)) WITH CHECK (auth.visible(team_id));

ALTER TABLE auth.invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY team_isolation ON auth.invitations
  USING (auth.visible(team_id)) WITH CHECK (auth.visible(team_id));

ALTER TABLE auth.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY team_isolation ON auth.api_keys
  USING (auth.visible(team_id)) WITH CHECK (auth.visible(team_id));

ALTER TABLE auth.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY team_isolation ON auth.audit_log
  USING (auth.visible(team_id)) WITH CHECK (auth.visible(team_id));

-- A user row is visible to the teams it belongs to (and to system transactions).
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.users FORCE ROW LEVEL SECURITY;
CREATE POLICY member_visibility ON auth.users
  USING (coalesce(current_setting('evalbus.system', true), '') = 'on'
         OR EXISTS (SELECT 1 FROM auth.memberships m WHERE m.user_id = users.id))
  WITH CHECK (coalesce(current_setting('evalbus.system', true), '') = 'on');
