-- traces.replaced_seq: the stream sequence of the JSON or NATS record that last replaced (or
-- made) the trace; 0 for a trace made by an OTLP fragment, which never moves it. Two writers
-- commit the records of one trace in any order, and the writer compares each record with it to
-- give the outcome of stream order (writer.c, upsert_traces). Rows stored before have none
-- (NULL) and keep the rules they were stored under. Adding a nullable column without a default
-- writes no row. ADD COLUMN takes the table's exclusive lock; as in 004 it gives up after 5 s
-- behind a long reader, and the start-up tries again.
SET LOCAL lock_timeout = '5s';
ALTER TABLE ingest.traces ADD COLUMN IF NOT EXISTS replaced_seq bigint;
