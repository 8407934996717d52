#!/usr/bin/env bash
# bench/export.sh -- export throughput and memory next to psql piped to the same compressor.
#
#   bench/export.sh TEAM_SLUG   (run by bench/run with the stack's stack.env loaded and the
#                                team's owner key in BENCH_EXPORT_KEY)
#
# 1. Seeds N traces (BENCH_EXPORT_ROWS, default 1000000) for the team straight into
#    ingest.traces / ingest.trace_keys with one INSERT ... SELECT generate_series (about 1 KB of
#    JSON each once exported: a system, a user and an assistant message with an e-mail address,
#    a phone number and an order number in the text; metadata; tags).
# 2. export_jsonl_gzip: POST /api/v1/exports {format: jsonl, compression: gzip, anonymize: true}
#    to the file store, timed by the job itself (result.seconds: first row to completed object);
#    rows/s and MB/s (uncompressed JSONL). Baseline, same run, same rows:
#    psql -c "COPY (SELECT record FROM ingest.export_traces ...) TO STDOUT" | gzip -1.
# 3. export_jsonl_zstd: the same with zstd (level 1 on both sides).
# 4. export_rss_1m: VmHWM (peak RSS) of the export service, which ran both exports.
# Figures are BENCH lines on stdout; the rest goes to stderr. The team's rows are deleted after.
set -euo pipefail

team=$1
api_key=${BENCH_EXPORT_KEY:?BENCH_EXPORT_KEY must hold the owner key}
rows=${BENCH_EXPORT_ROWS:-1000000}
url=${EVALBUS_EXPORT_URL:?load stack.env first}
db=${EVALBUS_DATABASE_URL:?load stack.env first}
run_dir=${EVALBUS_STACK_RUN_DIR:?load stack.env first}

log() { printf 'bench/export: %s\n' "$*" >&2; }
now() { date +%s.%N; }
psql_sys() { PGOPTIONS='-c evalbus.system=on' psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$db" "$@"; }

team_id=$(psql_sys -c "SELECT id FROM auth.teams WHERE slug = '$team'")
[[ $team_id =~ ^[0-9a-f-]{36}$ ]] || { log "team $team not found"; exit 1; }

# One partition holds every seeded row: the day of "now" (the writer makes day partitions).
day=$(date -u +%Y-%m-%d)
log "seeding $rows traces for team $team"
t0=$(now)
psql_sys <<SQL
SELECT pg_advisory_lock(7236002, 1) \gset
CREATE TABLE IF NOT EXISTS ingest.traces_p$(date -u +%Y%m%d) PARTITION OF ingest.traces
  FOR VALUES FROM ('$day 00:00:00+00') TO ('$(date -u -d "$day + 1 day" +%Y-%m-%d) 00:00:00+00');
CREATE TABLE IF NOT EXISTS ingest.observations_p$(date -u +%Y%m%d) PARTITION OF ingest.observations
  FOR VALUES FROM ('$day 00:00:00+00') TO ('$(date -u -d "$day + 1 day" +%Y-%m-%d) 00:00:00+00');
SELECT pg_advisory_unlock(7236002, 1) \gset
INSERT INTO ingest.trace_keys (team_id, id, part_time)
  SELECT '$team_id', 'bx-' || g, '$day 00:00:00+00'::timestamptz + (g % 80000) * interval '1 second'
  FROM generate_series(1, $rows) g;
INSERT INTO ingest.traces (team_id, part_time, id, project, name, model, provider, status,
  start_time, end_time, latency_ms, input_tokens, output_tokens, total_tokens, cost_usd,
  input, output, metadata, tags, source, stream_seq)
SELECT '$team_id', '$day 00:00:00+00'::timestamptz + (g % 80000) * interval '1 second', 'bx-' || g,
  'support-bot', 'answer', (ARRAY['gpt-4o', 'claude-sonnet-4', 'gpt-4o-mini'])[1 + g % 3],
  (ARRAY['openai', 'anthropic', 'openai'])[1 + g % 3], CASE WHEN g % 20 = 0 THEN 'error' ELSE 'ok' END,
  '$day 00:00:00+00'::timestamptz + (g % 80000) * interval '1 second',
  '$day 00:00:00+00'::timestamptz + (g % 80000) * interval '1 second' + interval '1.2 seconds', 1200,
  120 + g % 50, 40 + g % 30, 160 + g % 80, 0.0012,
  jsonb_build_object('messages', jsonb_build_array(
    jsonb_build_object('role', 'system', 'content', 'You are a helpful support agent for an online shop. Answer briefly and politely.'),
    jsonb_build_object('role', 'user', 'content', 'Hi, this is customer ' || g || ', my e-mail is user' || (g % 5000) ||
      '@example.com and my phone is +1 415 555 ' || lpad((g % 10000)::text, 4, '0') ||
      '. Where is my order #A-' || (10000 + g % 90000) || '? It was due on 2026-11-20.'))),
  jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'assistant', 'content',
    'Thanks for waiting! Order #A-' || (10000 + g % 90000) || ' left our warehouse yesterday with carrier DHL; ' ||
    'tracking shows delivery within two working days. Release 2.3.1 of the app shows live tracking.'))),
  jsonb_build_object('customer_tier', CASE WHEN g % 4 = 0 THEN 'gold' ELSE 'silver' END, 'region', 'eu-west'),
  ARRAY['prod', 'bench'], 'api', g
FROM generate_series(1, $rows) g;
ANALYZE ingest.traces;
SQL
log "seeded in $(echo "$(now) - $t0" | bc) s"

# Runs one export through the API; prints "seconds rows uncompressed_bytes".
export_job() {
    local compression=$1 id state body
    body=$(curl -fsS -X POST -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' \
        -d "{\"format\":\"jsonl\",\"compression\":\"$compression\",\"filter\":{\"tags\":[\"bench\"]}}" \
        "$url/api/v1/exports")
    id=$(jq -r .id <<<"$body")
    for _ in $(seq 1 3600); do
        body=$(curl -fsS -H "Authorization: Bearer $api_key" "$url/api/v1/exports/$id")
        state=$(jq -r .state <<<"$body")
        [[ $state == queued || $state == running ]] || break
        sleep 0.5
    done
    [[ $state == succeeded ]] || { log "export $id ended $state: $(jq -c .error <<<"$body")"; return 1; }
    jq -r '"\(.result.seconds) \(.result.rows) \(.result.uncompressed_bytes) \(.result.key)"' <<<"$body"
}

baseline() { # compressor command; prints seconds
    local t
    t=$(now)
    psql_sys -c "COPY (SELECT v.record FROM ingest.export_traces v WHERE v.team_id = '$team_id'
                 AND v.tags && ARRAY['bench'] ORDER BY v.part_time, v.id) TO STDOUT" | "$@" >/dev/null
    echo "$(now) - $t" | bc
}

figure() { # name compression compressor...
    local name=$1 compression=$2 secs n raw key bsecs rate mbs brate
    shift 2
    read -r secs n raw key < <(export_job "$compression")
    [[ $n == "$rows" ]] || { log "$name: exported $n rows, expected $rows"; return 1; }
    bsecs=$(baseline "$@")
    rate=$(echo "$n / $secs" | bc -l)
    brate=$(echo "$n / $bsecs" | bc -l)
    mbs=$(echo "$raw / 1048576 / $secs" | bc -l)
    log "$name: $n rows in $secs s ($(printf '%.0f' "$rate") rows/s, $(printf '%.1f' "$mbs") MB/s);" \
        "psql | $* in $(printf '%.2f' "$bsecs") s ($(printf '%.0f' "$brate") rows/s)"
    printf 'BENCH name=%s value=%.0f unit=rows/s baseline=%.0f ratio=%.2f\n' "$name" "$rate" "$brate" \
        "$(echo "$rate / $brate" | bc -l)"
    printf 'BENCH name=%s_mbps value=%.1f unit=MB/s baseline=- ratio=-\n' "$name" "$mbs"
    rm -f "${EVALBUS_OBJECT_STORE#file://}/$key"
}

rc=0
figure export_jsonl_gzip gzip gzip -1 || rc=1
figure export_jsonl_zstd zstd zstd -1 -q -c || rc=1
pid=$(cat "$run_dir/export.pid")
printf 'BENCH name=export_rss_1m value=%s unit=MiB baseline=- ratio=-\n' \
    "$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")"

log "deleting the seeded rows"
psql_sys -c "DELETE FROM ingest.traces WHERE team_id = '$team_id'; DELETE FROM ingest.trace_keys WHERE team_id = '$team_id'" >/dev/null
exit "$rc"
