// A record processor for `kinesumer run -- node handler.js`.
//
// The member speaks a line protocol on this process's stdin and stdout
// (docs/processor-protocol.md); this module turns it into calls of
//
//     async function process(records, checkpointer) { ... }
//
// the shape KCL users know. Node.js standard library only.
//
//     const { run } = require('./kinesumer-processor');
//     run(async (records, checkpointer) => {
//       for (const r of records) console.error(r.partitionKey, r.data.toString());
//     });
//
// After `process` resolves, everything it was given is checkpointed (pass
// { autoCheckpoint: false } to call `checkpointer.checkpoint(record)` yourself). A
// rejection is reported to the member, whose error policy retries the records or gives
// up on them. Log to stderr (console.error), never to stdout.
//
// One process may serve many shards (the member's default: one child for all of its
// shards); `process` is then called for one shard's records at a time, and
// `checkpointer.shard` says which: keep per-shard state keyed by it.
'use strict';

const readline = require('readline');

const PROTOCOL = 1;

// A shard this process serves, with its checkpointer; every message to the member names it.
function shardOf(msg) {
  const shard = {
    stream: msg.stream,
    shardId: msg.shard_id,
    fencingToken: msg.fencing_token,
    start: msg.start,
    shared: msg.shared === true,
    send(message) {
      process.stdout.write(JSON.stringify({ ...message, stream: msg.stream, shard_id: msg.shard_id }) + '\n');
    },
  };
  shard.checkpointer = {
    shard,
    // Everything delivered so far, or `record` and everything before it.
    checkpoint(record) {
      if (record === undefined) {
        shard.send({ type: 'checkpoint' });
      } else {
        shard.send({
          type: 'checkpoint',
          sequence_number: record.sequenceNumber,
          sub_sequence_number: record.subSequenceNumber,
        });
      }
    },
  };
  return shard;
}

function toRecord(raw, fencingToken, millisBehindLatest) {
  return {
    data: Buffer.from(raw.data, raw.data_encoding === 'text' ? 'utf8' : 'base64'),
    partitionKey: raw.partition_key,
    sequenceNumber: raw.sequence_number,
    subSequenceNumber: raw.sub_sequence_number === undefined ? null : raw.sub_sequence_number,
    approximateArrival: raw.approximate_arrival || null,
    fencingToken,
    millisBehindLatest: millisBehindLatest === undefined ? null : millisBehindLatest,
  };
}

// The messages after which a shard's conversation is over.
const LAST = ['revoking', 'shard_ended', 'lost'];

// Serves the member until it closes stdin: every shard it is given, each with its own
// checkpointer (`checkpointer.shard` says which). Each shard's messages are handled in
// order; different shards' at once (an await in one shard's processRecords lets the
// others go on), as if each had a process of its own. Hooks (all optional, may be async):
// initialize(shard), revoking(checkpointer, deadlineMs) (Date.now() deadline: flush and
// checkpoint before it), shardEnded(checkpointer), lost(shard).
async function run(processRecords, hooks = {}) {
  const autoCheckpoint = hooks.autoCheckpoint !== false;

  async function handle(shard, msg) {
    switch (msg.type) {
      case 'initialize':
        if (hooks.initialize) await hooks.initialize(shard);
        break;
      case 'records': {
        const records = msg.records.map((r) => toRecord(r, msg.fencing_token, msg.millis_behind_latest));
        try {
          await processRecords(records, shard.checkpointer);
        } catch (e) {
          // Reported; the member's error policy decides.
          shard.send({ type: 'error', error: String(e && e.stack ? e.message : e) });
          return;
        }
        if (autoCheckpoint && records.length > 0) shard.checkpointer.checkpoint();
        break;
      }
      case 'revoking':
        if (hooks.revoking) await hooks.revoking(shard.checkpointer, Date.now() + msg.deadline_ms);
        break;
      case 'shard_ended':
        if (hooks.shardEnded) await hooks.shardEnded(shard.checkpointer);
        break;
      case 'lost':
        if (hooks.lost) await hooks.lost(shard);
        return; // not answered
      default:
        return; // a newer member's message this version does not know
    }
    shard.send({ type: 'ok' });
  }

  // Per shard: the shard, and the promise of its messages handled so far.
  const shards = new Map();
  const lines = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    const msg = JSON.parse(line);
    const key = `${msg.stream}/${msg.shard_id}`;
    if (msg.type === 'initialize') {
      const shard = shardOf(msg);
      if (msg.protocol !== PROTOCOL) {
        shard.send({ type: 'error', error: `protocol ${msg.protocol} not supported` });
        continue;
      }
      shards.set(key, { shard, done: Promise.resolve() });
    }
    const conversation = shards.get(key);
    if (conversation === undefined) continue; // about no shard this process serves
    conversation.done = conversation.done.then(() => handle(conversation.shard, msg));
    if (LAST.includes(msg.type)) shards.delete(key);
  }
  // Stdin closed: what was given is handled before this process ends.
  await Promise.all([...shards.values()].map((c) => c.done));
}

module.exports = { run, PROTOCOL };
