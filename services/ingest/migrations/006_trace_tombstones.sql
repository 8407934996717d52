-- trace_tombstones: the traces deleted (by id or by filter), each with the INGEST stream's last
-- position (sequence) at its deletion. Every record of the trace that the stream took before the
-- deletion is at or below that position, and the writer stores none of them (writer.c,
-- drop_deleted): records still on their way when the trace was deleted, and records delivered
-- again (a batch whose acknowledgement was lost, a writer consumer made again), do not bring a
-- deleted trace back. A record sent after the deletion comes later in the stream and is stored.
-- The stream keeps records 7 days; retention removes a tombstone 8 days after its deletion.
CREATE TABLE IF NOT EXISTS ingest.trace_tombstones (
  team_id     uuid NOT NULL,
  id          text NOT NULL,
  deleted_seq bigint NOT NULL,
  deleted_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, id)
);
ALTER TABLE ingest.trace_tombstones ENABLE ROW LEVEL SECURITY;
ALTER TABLE ingest.trace_tombstones FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS team_isolation ON ingest.trace_tombstones;
CREATE POLICY team_isolation ON ingest.trace_tombstones USING (ingest.visible(team_id))
  WITH CHECK (ingest.visible(team_id));
