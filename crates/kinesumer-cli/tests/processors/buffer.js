// A test processor: keeps what each shard is given and writes it to $OUT (one JSON line
// per record) only when that shard is revoked or ended, checkpointing it then.
'use strict';

const fs = require('fs');
const path = require('path');
const { run } = require(path.join(__dirname, '..', '..', '..', '..', 'clients', 'node', 'kinesumer-processor'));

const buffers = new Map();

function flush(checkpointer) {
  const buffer = buffers.get(checkpointer.shard) || [];
  const lines = buffer.map((r) => JSON.stringify({ data: r.data.toString(), pid: process.pid }) + '\n');
  fs.appendFileSync(process.env.OUT, lines.join(''));
  if (buffer.length > 0) checkpointer.checkpoint(buffer[buffer.length - 1]);
  buffers.delete(checkpointer.shard);
}

run(async (records, checkpointer) => {
  const buffer = buffers.get(checkpointer.shard) || [];
  buffer.push(...records);
  buffers.set(checkpointer.shard, buffer);
}, {
  autoCheckpoint: false,
  revoking: async (checkpointer) => flush(checkpointer),
  shardEnded: async (checkpointer) => flush(checkpointer),
});
