-- export schema: export jobs, the parts of their uploads, per-team pseudonymization keys and
-- patterns, and export schedules. Every row carries team_id, which leads every key; row-level
-- security (forced) admits a row only when the transaction set evalbus.team_id to its team, or
-- evalbus.system (workers and the scheduler, which start from a job id or a due schedule).

CREATE FUNCTION export.visible(team uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT coalesce(current_setting('evalbus.system', true), '') = 'on'
      OR team::text = coalesce(current_setting('evalbus.team_id', true), '')
$$;

CREATE TABLE export.jobs (
  team_id          uuid NOT NULL,
  id               uuid NOT NULL,
  team_slug        text NOT NULL,
  state            text NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  format           text NOT NULL,
  compression      text NOT NULL CHECK (compression IN ('gzip', 'zstd', 'none')),
  anonymize        boolean NOT NULL,
  filter           jsonb NOT NULL DEFAULT '{}',
  fields           jsonb NOT NULL DEFAULT '{}',
  destination      text,
  schedule_id      uuid,
  created_by_user  uuid,
  created_by_key   uuid,
  created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
  started_at       timestamptz,
  finished_at      timestamptz,
  heartbeat_at     timestamptz,
  attempts         integer NOT NULL DEFAULT 0,
  cancel_requested boolean NOT NULL DEFAULT false,
  rows_done        bigint NOT NULL DEFAULT 0,
  bytes_done       bigint NOT NULL DEFAULT 0,
  total_rows       bigint,
  rate_rows        double precision,
  object_key       text,
  upload_id        text,
  result           jsonb,
  error            jsonb,
  PRIMARY KEY (team_id, id)
);
CREATE INDEX jobs_list_idx ON export.jobs (team_id, created_at DESC, id DESC);
CREATE INDEX jobs_active_idx ON export.jobs (team_id) WHERE state IN ('queued', 'running');

-- Uploaded parts of the job's current attempt (what an abort or a takeover must clean up).
CREATE TABLE export.job_parts (
  team_id  uuid NOT NULL,
  job_id   uuid NOT NULL,
  part_no  integer NOT NULL,
  etag     text NOT NULL,
  bytes    bigint NOT NULL,
  PRIMARY KEY (team_id, job_id, part_no)
);

-- The secret under which a team's pseudonymization tokens are computed (HMAC-SHA256).
CREATE TABLE export.team_keys (
  team_id    uuid PRIMARY KEY,
  key        bytea NOT NULL CHECK (length(key) >= 16),
  created_at timestamptz NOT NULL DEFAULT now()
);

-- A team's own redaction patterns (PCRE2), applied after the built-in ones.
CREATE TABLE export.team_patterns (
  team_id    uuid NOT NULL,
  label      text NOT NULL CHECK (label ~ '^[A-Z][A-Z0-9_]{0,23}$'),
  regex      text NOT NULL CHECK (length(regex) BETWEEN 1 AND 1024),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, label)
);

CREATE TABLE export.schedules (
  team_id        uuid NOT NULL,
  id             uuid NOT NULL,
  team_slug      text NOT NULL,
  every          text NOT NULL CHECK (every IN ('hourly', 'daily', 'weekly')),
  spec           jsonb NOT NULL,
  enabled        boolean NOT NULL DEFAULT true,
  next_run_at    timestamptz NOT NULL,
  watermark      timestamptz,
  last_job_id    uuid,
  created_by_user uuid,
  created_by_key uuid,
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, id)
);
CREATE INDEX schedules_due_idx ON export.schedules (next_run_at) WHERE enabled;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['jobs', 'job_parts', 'team_keys', 'team_patterns', 'schedules'] LOOP
    EXECUTE format('ALTER TABLE export.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE export.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY team_isolation ON export.%I USING (export.visible(team_id))'
                   ' WITH CHECK (export.visible(team_id))', t);
  END LOOP;
END
$$;
