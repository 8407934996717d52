-- The export view gains the trace's columns one by one, beside `record` (appended after the
-- columns it had; the view is made anew, so a database whose view differs in order takes it
-- too). A reader that builds the record itself from these columns (the export service does,
-- from a binary COPY) saves PostgreSQL the cost of json_build_object and of the timestamps'
-- text for every row; observations, reviews and scores are NULL when a trace has none (record
-- shows them as []). A column a query does not select is not computed, so SELECT record costs
-- what it did.

DROP VIEW IF EXISTS ingest.export_traces;
CREATE VIEW ingest.export_traces WITH (security_invoker = true) AS
SELECT
  t.team_id, t.part_time, t.id, t.project, t.model, t.provider, t.status, t.review_state,
  t.tags, t.start_time, t.input, t.created_at,
  json_build_object(
    'id', t.id, 'project', t.project, 'name', t.name, 'model', t.model,
    'provider', t.provider, 'status', t.status, 'status_message', t.status_message,
    'start_time', ingest.iso(t.start_time), 'end_time', ingest.iso(t.end_time),
    'latency_ms', t.latency_ms,
    'usage', json_build_object('input_tokens', t.input_tokens, 'output_tokens', t.output_tokens,
                               'total_tokens', t.total_tokens),
    'cost_usd', t.cost_usd, 'input', t.input, 'output', t.output, 'tool_calls', t.tool_calls,
    'metadata', t.metadata, 'tags', array_to_json(t.tags), 'session_id', t.session_id,
    'user_id', t.user_id, 'environment', t.environment, 'release', t.release,
    'review_state', t.review_state, 'source', t.source, 'attributes', t.attributes,
    'observations', coalesce((
      SELECT json_agg(json_build_object(
        'id', o.id, 'parent_id', o.parent_id, 'type', o.type, 'name', o.name,
        'start_time', ingest.iso(o.start_time), 'end_time', ingest.iso(o.end_time),
        'status', o.status, 'status_message', o.status_message, 'model', o.model,
        'provider', o.provider,
        'usage', json_build_object('input_tokens', o.input_tokens,
                                   'output_tokens', o.output_tokens),
        'cost_usd', o.cost_usd, 'input', o.input, 'output', o.output,
        'tool_calls', o.tool_calls, 'metadata', o.metadata, 'attributes', o.attributes)
        ORDER BY o.start_time NULLS LAST, o.id)
      FROM ingest.observations o
      WHERE o.team_id = t.team_id AND o.part_time = t.part_time AND o.trace_id = t.id),
      '[]'::json),
    'reviews', coalesce((
      SELECT json_agg(json_build_object(
        'decision', r.decision, 'reason', r.reason, 'score', r.score, 'notes', r.notes,
        'created_at', ingest.iso(r.created_at)) ORDER BY r.id DESC)
      FROM ingest.reviews r WHERE r.team_id = t.team_id AND r.trace_id = t.id), '[]'::json),
    'scores', coalesce((
      SELECT json_agg(json_build_object(
        'name', s.name, 'kind', s.kind,
        'value', CASE s.kind WHEN 'categorical' THEN to_json(s.value_text)
                             WHEN 'boolean' THEN to_json(s.value_number <> 0)
                             ELSE to_json(s.value_number) END,
        'source', s.source, 'comment', s.comment, 'observation_id', s.observation_id,
        'created_at', ingest.iso(s.created_at)) ORDER BY s.created_at, s.id)
      FROM ingest.scores s WHERE s.team_id = t.team_id AND s.trace_id = t.id), '[]'::json)
  ) AS record,
  t.name, t.status_message, t.end_time, t.latency_ms, t.input_tokens, t.output_tokens,
  t.total_tokens, t.cost_usd, t.output, t.tool_calls, t.metadata, t.session_id, t.user_id,
  t.environment, t.release, t.source, t.attributes,
  (SELECT json_agg(json_build_object(
     'id', o.id, 'parent_id', o.parent_id, 'type', o.type, 'name', o.name,
     'start_time', ingest.iso(o.start_time), 'end_time', ingest.iso(o.end_time),
     'status', o.status, 'status_message', o.status_message, 'model', o.model,
     'provider', o.provider,
     'usage', json_build_object('input_tokens', o.input_tokens,
                                'output_tokens', o.output_tokens),
     'cost_usd', o.cost_usd, 'input', o.input, 'output', o.output,
     'tool_calls', o.tool_calls, 'metadata', o.metadata, 'attributes', o.attributes)
     ORDER BY o.start_time NULLS LAST, o.id)
   FROM ingest.observations o
   WHERE o.team_id = t.team_id AND o.part_time = t.part_time AND o.trace_id = t.id)
    AS observations,
  (SELECT json_agg(json_build_object(
     'decision', r.decision, 'reason', r.reason, 'score', r.score, 'notes', r.notes,
     'created_at', ingest.iso(r.created_at)) ORDER BY r.id DESC)
   FROM ingest.reviews r WHERE r.team_id = t.team_id AND r.trace_id = t.id) AS reviews,
  (SELECT json_agg(json_build_object(
     'name', s.name, 'kind', s.kind,
     'value', CASE s.kind WHEN 'categorical' THEN to_json(s.value_text)
                          WHEN 'boolean' THEN to_json(s.value_number <> 0)
                          ELSE to_json(s.value_number) END,
     'source', s.source, 'comment', s.comment, 'observation_id', s.observation_id,
     'created_at', ingest.iso(s.created_at)) ORDER BY s.created_at, s.id)
   FROM ingest.scores s WHERE s.team_id = t.team_id AND s.trace_id = t.id) AS scores
FROM ingest.traces t;

COMMENT ON VIEW ingest.export_traces IS
  'Read-only interface for the export service: one row per trace; record = the trace as JSON '
  '(GET /api/v1/traces/{id} shape with observations, reviews, scores), and the same data column '
  'by column after it (observations, reviews, scores NULL when none). Set evalbus.team_id.';
