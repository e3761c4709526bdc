// A test processor: keeps what it is given and writes it to $OUT (one JSON line per
// record) only when its shard is revoked or ended, checkpointing then.
'use strict';

const fs = require('fs');
const path = require('path');
const { run } = require(path.join(__dirname, '..', '..', '..', '..', 'clients', 'node', 'kinesumer-processor'));

let buffer = [];

function flush(checkpointer) {
  const lines = buffer.map((r) => JSON.stringify({ data: r.data.toString(), pid: process.pid }) + '\n');
  fs.appendFileSync(process.env.OUT, lines.join(''));
  if (buffer.length > 0) checkpointer.checkpoint(buffer[buffer.length - 1]);
  buffer = [];
}

run(async (records) => { buffer.push(...records); }, {
  autoCheckpoint: false,
  revoking: async (checkpointer) => flush(checkpointer),
  shardEnded: async (checkpointer) => flush(checkpointer),
});
