// A test processor: the first batch of each of two shards waits until the other shard's
// first batch is in processRecords too (or fails after 20 s), so it finishes only if
// shards are handled at once; then appends each record to $OUT as a JSON line.
'use strict';

const fs = require('fs');
const path = require('path');
const { run } = require(path.join(__dirname, '..', '..', '..', '..', 'clients', 'node', 'kinesumer-processor'));

const seen = new Set();
let arrive;
const bothHere = new Promise((resolve) => { arrive = resolve; });

run(async (records, checkpointer) => {
  const shard = checkpointer.shard.shardId;
  if (!seen.has(shard)) {
    seen.add(shard);
    if (seen.size === 2) arrive();
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('the other shard never came: shards handled one at a time')), 20000);
    });
    await Promise.race([bothHere, late]).finally(() => clearTimeout(timer));
  }
  const lines = records.map((r) => JSON.stringify({ data: r.data.toString(), pid: process.pid }) + '\n');
  fs.appendFileSync(process.env.OUT, lines.join(''));
});
