// ingest_purge.mjs -- how long a purge of stored records from a JetStream stream holds up the
// publishes to it: the stream watch's slices (services/ingest/stream_watch.c: 5,000 records,
// 5 ms apart) next to one purge of the same records at once, which is what the watch did before.
//
// On the stack's nats-server (EVALBUS_NATS_URL), in a scratch stream of its own (file storage,
// a 20 s duplicate window, as INGEST), made anew for each of the two rounds: N records of 2 KB
// with message ids, then a publisher sends one record every 2 ms and times each acknowledgement
// while the N records are purged; once at once (the baseline) and once in slices, each slice
// after a read of the stream's info as the watch makes. Prints the longest wait of a publish
// in each as a BENCH line (DESIGN.md section 8), and their 99th percentiles on stderr:
//   BENCH name=ingest_purge_stall value=<ms, sliced> unit=ms baseline=<ms, at once> ratio=...
// Usage: node bench/ingest_purge.mjs [records, default 200000]
import { createRequire } from 'node:module';

const require = createRequire(new URL('../tests/package.json', import.meta.url));
const { connect } = require('nats');

const SLICE = 5000; // the default stream-purge-slice (services/ingest/main.c)
const PAUSE_MS = 5; // PURGE_PAUSE_MS
const STREAM = 'BENCH_PURGE';
const N = Number(process.argv[2] ?? 200000);
if (!Number.isInteger(N) || N < SLICE) {
  console.error(`ingest_purge: records must be a whole number of at least ${SLICE}`);
  process.exit(2);
}
const url = process.env.EVALBUS_NATS_URL;
if (!url) {
  console.error('ingest_purge: EVALBUS_NATS_URL is not set (the stack\'s stack.env has it)');
  process.exit(2);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const body = new Uint8Array(2000).fill(97);

const nc = await connect({ servers: url.replace(/^nats:\/\//, '') });
const jsm = await nc.jetstreamManager();
const js = nc.jetstream();
let seq = 0;

async function fresh() {
  try { await jsm.streams.delete(STREAM); } catch { /* not there */ }
  await jsm.streams.add({ name: STREAM, subjects: ['bench.purge.>'], storage: 'file', duplicate_window: 20e9 });
}

async function fill() {
  for (let i = 0; i < N; i += 1000) {
    const acks = [];
    for (let k = 0; k < 1000 && i + k < N; k++) acks.push(js.publish(`bench.purge.fill`, body, { msgID: `r-${seq++}` }));
    await Promise.all(acks);
  }
}

// Runs purge() while a publisher times its acknowledgements; the longest wait and the 99th
// percentile, ms.
async function stall(purge) {
  let done = false;
  const waits = [];
  const publisher = (async () => {
    while (!done) {
      const t = performance.now();
      await js.publish('bench.purge.probe', body, { msgID: `p-${seq++}` });
      waits.push(performance.now() - t);
      await sleep(2);
    }
  })();
  await sleep(200);
  const t = performance.now();
  await purge();
  const took = performance.now() - t;
  await sleep(200);
  done = true;
  await publisher;
  waits.sort((a, b) => a - b);
  return { worst: waits[waits.length - 1], p99: waits[Math.floor(0.99 * (waits.length - 1))], took, count: waits.length };
}

try {
  // the N records are positions 1..N of a fresh stream; the probes come after them
  await fresh();
  await fill();
  const once = await stall(() => jsm.streams.purge(STREAM, { seq: N + 1 }));

  await fresh();
  await fill();
  const sliced = await stall(async () => {
    for (let from = 1; from <= N; from += SLICE) {
      if (from > 1) await sleep(PAUSE_MS);
      await jsm.streams.info(STREAM); // the watch's check that the stream is the same
      await jsm.streams.purge(STREAM, { seq: Math.min(from + SLICE, N + 1) });
    }
  });

  const ms = (x) => x.toFixed(1);
  console.error(`ingest_purge: ${N} records of 2 KB: one purge ${once.took.toFixed(0)} ms, publishes meanwhile: longest ${ms(once.worst)} ms, p99 ${ms(once.p99)} ms (${once.count}); ` +
    `in slices of ${SLICE}, ${PAUSE_MS} ms apart: ${sliced.took.toFixed(0)} ms in all, publishes meanwhile: longest ${ms(sliced.worst)} ms, p99 ${ms(sliced.p99)} ms (${sliced.count})`);
  console.log(`BENCH name=ingest_purge_stall value=${sliced.worst.toFixed(1)} unit=ms baseline=${once.worst.toFixed(1)} ratio=${(sliced.worst / once.worst).toFixed(3)}`);
} finally {
  try { await jsm.streams.delete(STREAM); } catch { /* gone */ }
  await nc.close();
}
