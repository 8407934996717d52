-- trace_keys loses its index on part_time. Every stored trace paid for it (one more btree entry
-- per key, about a fifth of what PostgreSQL spends on the key row), and only retention read it,
-- to delete the keys of a day whose partitions it drops; retention now finds those keys
-- through the day's traces partition and the primary key (team_id, id) instead.
-- DROP INDEX takes trace_keys' exclusive lock; waiting for it behind a long reader would hold up
-- every writer and lookup queued behind the wait, so it gives up after 5 s and the start-up
-- tries again (every 0.5 s for up to 60 s).
SET LOCAL lock_timeout = '5s';
DROP INDEX IF EXISTS ingest.trace_keys_part_time_idx;
