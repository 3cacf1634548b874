// BullMQ no-op two-stage pipeline benchmark, the counterpart of conftag's
// queue overhead benchmark.
//
//   node bench.mjs --redis-url redis://127.0.0.1:PORT --shards 2000 --workers 1 --rows-per-shard 32
//
// Model: N "shard" jobs are enqueued into queue `infer` with one addBulk call.
// W infer workers take them; each processor is a no-op that, as its last step,
// adds one job to queue `judge`. W judge workers take those, also no-ops.
// The clock runs from just before the addBulk until the N-th `judge` job has
// completed. The timed span covers queue overhead only; it does no real work.
//
// Concurrency: W consumers per stage are W separate `Worker` instances, each
// with concurrency 1. That mirrors conftag, where every worker process holds at
// most one shard lease at a time and has its own Redis connections. It is not
// one Worker with concurrency W, which shares one blocking connection and
// fetches jobs for all W slots. All 2W workers run in this one Node process, so
// they share its event loop and one CPU core.
//
// Rows per shard only goes into the job payload and the rows/s column
// (rows/s = shards/s * rows-per-shard). The processors never look at it.
//
// Each run uses its own key prefix (`conftag-bench-<ms>-<pid>`), so runs never
// collide. At the end the workers are closed, both queues are obliterated, and
// every connection is closed. If the run hits --timeout-s, it prints an error
// and exits 1.
//
// Prints one markdown table row:
//   | bullmq <version> | workers | shards | rows/shard | seconds | shards/s | rows/s |

import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { Queue, Worker } from 'bullmq';

const require = createRequire(import.meta.url);
const BULLMQ_VERSION = require('bullmq/package.json').version;

const { values: args } = parseArgs({
  options: {
    'redis-url': { type: 'string', default: 'redis://127.0.0.1:6379' },
    shards: { type: 'string', default: '2000' },
    workers: { type: 'string', default: '1' },
    'rows-per-shard': { type: 'string', default: '32' },
    'timeout-s': { type: 'string', default: '110' },
    header: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (args.help) {
  console.log(
    'usage: node bench.mjs --redis-url redis://127.0.0.1:PORT --shards 2000 --workers 1 ' +
      '--rows-per-shard 32 [--timeout-s 110] [--header]',
  );
  process.exit(0);
}

function posInt(name) {
  const n = Number(args[name]);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--${name} must be a positive integer, got ${JSON.stringify(args[name])}`);
    process.exit(2);
  }
  return n;
}

const redisUrl = args['redis-url'];
const shards = posInt('shards');
const workers = posInt('workers');
const rowsPerShard = posInt('rows-per-shard');
const timeoutMs = posInt('timeout-s') * 1000;

// Hard stop, whatever happens (Redis unreachable, cleanup stuck): the run is
// bounded by --timeout-s plus a little time for cleanup.
setTimeout(() => {
  console.error(`watchdog: still running ${timeoutMs / 1000 + 15}s after start, exiting`);
  process.exit(1);
}, timeoutMs + 15_000).unref();

const prefix = `conftag-bench-${Date.now()}-${process.pid}`;
// BullMQ wants maxRetriesPerRequest: null for its blocking connections. Every
// Queue and Worker gets its own connection built from these options.
const connection = { url: redisUrl, maxRetriesPerRequest: null };
// Jobs are removed once they complete, so Redis does not keep 2N job hashes.
const jobOpts = { removeOnComplete: true, removeOnFail: false };

const inferQueue = new Queue('infer', { connection, prefix, defaultJobOptions: jobOpts });
const judgeQueue = new Queue('judge', { connection, prefix, defaultJobOptions: jobOpts });

let judged = 0;
let failed = 0;
let resolveDone;
const done = new Promise((resolve) => {
  resolveDone = resolve;
});

const workerOpts = { connection, prefix, concurrency: 1 };
const allWorkers = [];
for (let i = 0; i < workers; i++) {
  // infer stage: no-op, then hand the shard on to `judge`.
  const inferWorker = new Worker(
    'infer',
    async (job) => {
      await judgeQueue.add('judge', job.data);
    },
    workerOpts,
  );
  // judge stage: no-op.
  const judgeWorker = new Worker('judge', async () => {}, workerOpts);
  judgeWorker.on('completed', () => {
    judged += 1;
    if (judged === shards) resolveDone();
  });
  for (const w of [inferWorker, judgeWorker]) {
    w.on('failed', (job, err) => {
      failed += 1;
      console.error(`job ${job?.id} on ${w.name} failed: ${err?.message ?? err}`);
    });
    w.on('error', (err) => console.error(`worker ${w.name} error: ${err?.message ?? err}`));
  }
  allWorkers.push(inferWorker, judgeWorker);
}

let exitCode = 0;
let timer;
try {
  await Promise.all([
    inferQueue.waitUntilReady(),
    judgeQueue.waitUntilReady(),
    ...allWorkers.map((w) => w.waitUntilReady()),
  ]);

  const jobs = [];
  for (let i = 0; i < shards; i++) {
    jobs.push({ name: 'infer', data: { shard: i, rows: rowsPerShard } });
  }

  const timedOut = new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });

  const t0 = process.hrtime.bigint();
  await inferQueue.addBulk(jobs);
  const outcome = await Promise.race([done.then(() => 'done'), timedOut]);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;

  if (outcome !== 'done') {
    console.error(
      `timed out after ${timeoutMs / 1000}s: ${judged}/${shards} shards judged, ${failed} failed jobs`,
    );
    exitCode = 1;
  } else {
    if (args.header) {
      console.log('| queue | workers | shards | rows/shard | seconds | shards/s | rows/s |');
      console.log('|---|---:|---:|---:|---:|---:|---:|');
    }
    const shardsPerS = shards / seconds;
    console.log(
      `| bullmq ${BULLMQ_VERSION} | ${workers} | ${shards} | ${rowsPerShard} | ` +
        `${seconds.toFixed(3)} | ${shardsPerS.toFixed(1)} | ${(shardsPerS * rowsPerShard).toFixed(0)} |`,
    );
    if (failed > 0) {
      console.error(`${failed} jobs failed along the way (and were retried or lost)`);
      exitCode = 1;
    }
  }
} catch (err) {
  console.error(`bench failed: ${err?.stack ?? err}`);
  exitCode = 1;
} finally {
  clearTimeout(timer);
  // Workers first (force: do not wait on jobs still active after a timeout),
  // then wipe this run's keys, then close the queues' connections.
  await Promise.allSettled(allWorkers.map((w) => w.close(true)));
  for (const q of [inferQueue, judgeQueue]) {
    try {
      await q.obliterate({ force: true });
    } catch (err) {
      console.error(`obliterate ${q.name} failed: ${err?.message ?? err}`);
    }
  }
  await Promise.allSettled([inferQueue.close(), judgeQueue.close()]);
}

process.exit(exitCode);
