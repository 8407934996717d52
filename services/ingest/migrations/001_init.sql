-- ingest schema: traces and observations (partitioned by day), reviews, scores.
-- Every row carries team_id, which leads every key and index. Row-level security (forced)
-- admits a row only when the transaction set evalbus.team_id to its team, or evalbus.system
-- (the writer and retention, which work across teams).
--
-- A trace's partition key part_time is fixed when the trace is first stored (its start time,
-- or the time it arrived when the start time is far off) and recorded in trace_keys, the one
-- table that enforces "one trace per (team, id)" across partitions.

CREATE FUNCTION ingest.visible(team uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT coalesce(current_setting('evalbus.system', true), '') = 'on'
      OR team::text = coalesce(current_setting('evalbus.team_id', true), '')
$$;

CREATE FUNCTION ingest.iso(ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE TABLE ingest.trace_keys (
  team_id   uuid NOT NULL,
  id        text NOT NULL,
  part_time timestamptz NOT NULL,
  PRIMARY KEY (team_id, id)
);
CREATE INDEX trace_keys_part_time_idx ON ingest.trace_keys (part_time);

CREATE TABLE ingest.traces (
  team_id        uuid NOT NULL,
  part_time      timestamptz NOT NULL,
  id             text NOT NULL,
  project        text NOT NULL,
  name           text,
  model          text,
  provider       text,
  status         text NOT NULL DEFAULT 'unset',
  status_message text,
  start_time     timestamptz,
  end_time       timestamptz,
  latency_ms     double precision,
  input_tokens   bigint,
  output_tokens  bigint,
  total_tokens   bigint,
  cost_usd       double precision,
  input          jsonb,
  output         jsonb,
  tool_calls     jsonb,
  metadata       jsonb NOT NULL DEFAULT '{}',
  tags           text[] NOT NULL DEFAULT '{}',
  session_id     text,
  user_id        text,
  environment    text,
  release        text,
  attributes     jsonb,
  source         text NOT NULL,
  review_state   text NOT NULL DEFAULT 'unreviewed',
  stream_seq     bigint NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, part_time, id)
) PARTITION BY RANGE (part_time);
-- the primary key (team_id, part_time, id) serves time-ordered listing (scanned backwards)
CREATE INDEX traces_team_project_idx ON ingest.traces (team_id, project, part_time DESC);
CREATE INDEX traces_team_model_idx ON ingest.traces (team_id, model, part_time DESC);
CREATE INDEX traces_team_review_idx ON ingest.traces (team_id, review_state, part_time DESC);
CREATE INDEX traces_tags_idx ON ingest.traces USING gin (tags);

CREATE TABLE ingest.observations (
  team_id        uuid NOT NULL,
  part_time      timestamptz NOT NULL,
  trace_id       text NOT NULL,
  id             text NOT NULL,
  parent_id      text,
  type           text NOT NULL,
  name           text,
  start_time     timestamptz,
  end_time       timestamptz,
  status         text NOT NULL DEFAULT 'unset',
  status_message text,
  model          text,
  provider       text,
  input_tokens   bigint,
  output_tokens  bigint,
  cost_usd       double precision,
  input          jsonb,
  output         jsonb,
  tool_calls     jsonb,
  attributes     jsonb,
  metadata       jsonb,
  stream_seq     bigint NOT NULL,
  PRIMARY KEY (team_id, part_time, trace_id, id)
) PARTITION BY RANGE (part_time);

CREATE TABLE ingest.reviews (
  team_id          uuid NOT NULL,
  id               bigint GENERATED ALWAYS AS IDENTITY,
  trace_id         text NOT NULL,
  decision         text NOT NULL CHECK (decision IN ('accept', 'reject', 'needs_review')),
  reason           text,
  score            double precision,
  notes            text,
  reviewer_user_id uuid,
  reviewer_key_id  uuid,
  created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (team_id, id)
);
CREATE INDEX reviews_trace_idx ON ingest.reviews (team_id, trace_id, id DESC);

CREATE TABLE ingest.scores (
  team_id        uuid NOT NULL,
  id             uuid NOT NULL DEFAULT gen_random_uuid(),
  trace_id       text NOT NULL,
  observation_id text,
  name           text NOT NULL,
  kind           text NOT NULL CHECK (kind IN ('numeric', 'boolean', 'categorical')),
  value_number   double precision,
  value_text     text,
  source         text NOT NULL CHECK (source IN ('human', 'api', 'llm_judge')),
  comment        text,
  created_by_user uuid,
  created_by_key uuid,
  created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (team_id, id)
);
CREATE INDEX scores_trace_idx ON ingest.scores (team_id, trace_id);
CREATE INDEX scores_name_idx ON ingest.scores (team_id, name, value_number);

-- Retention per project (days); projects without a row use the service's default.
CREATE TABLE ingest.project_settings (
  team_id        uuid NOT NULL,
  project        text NOT NULL,
  retention_days integer NOT NULL CHECK (retention_days BETWEEN 1 AND 36500),
  PRIMARY KEY (team_id, project)
);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['trace_keys', 'traces', 'observations', 'reviews', 'scores',
                           'project_settings'] LOOP
    EXECUTE format('ALTER TABLE ingest.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE ingest.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY team_isolation ON ingest.%I USING (ingest.visible(team_id))'
                   ' WITH CHECK (ingest.visible(team_id))', t);
  END LOOP;
END
$$;
