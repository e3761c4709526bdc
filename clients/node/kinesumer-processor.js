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
'use strict';

const readline = require('readline');

const PROTOCOL = 1;

function send(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

const checkpointer = {
  // Everything delivered so far, or `record` and everything before it.
  checkpoint(record) {
    if (record === undefined) {
      send({ type: 'checkpoint' });
    } else {
      send({
        type: 'checkpoint',
        sequence_number: record.sequenceNumber,
        sub_sequence_number: record.subSequenceNumber,
      });
    }
  },
};

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

// Serves the member until it closes stdin. Hooks (all optional, may be async):
// initialize(shard), revoking(checkpointer, deadlineMs) (Date.now() deadline: flush and
// checkpoint before it), shardEnded(checkpointer), lost().
async function run(processRecords, hooks = {}) {
  const autoCheckpoint = hooks.autoCheckpoint !== false;
  const lines = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    const msg = JSON.parse(line);
    switch (msg.type) {
      case 'initialize':
        if (msg.protocol !== PROTOCOL) {
          send({ type: 'error', error: `protocol ${msg.protocol} not supported` });
          continue;
        }
        if (hooks.initialize) {
          await hooks.initialize({
            stream: msg.stream,
            shardId: msg.shard_id,
            fencingToken: msg.fencing_token,
            start: msg.start,
          });
        }
        break;
      case 'records': {
        const records = msg.records.map((r) => toRecord(r, msg.fencing_token, msg.millis_behind_latest));
        try {
          await processRecords(records, checkpointer);
        } catch (e) {
          // Reported; the member's error policy decides.
          send({ type: 'error', error: String(e && e.stack ? e.message : e) });
          continue;
        }
        if (autoCheckpoint && records.length > 0) checkpointer.checkpoint();
        break;
      }
      case 'revoking':
        if (hooks.revoking) await hooks.revoking(checkpointer, Date.now() + msg.deadline_ms);
        break;
      case 'shard_ended':
        if (hooks.shardEnded) await hooks.shardEnded(checkpointer);
        break;
      case 'lost':
        if (hooks.lost) await hooks.lost();
        return;
      default:
        continue; // a newer member's message this version does not know
    }
    send({ type: 'ok' });
  }
}

module.exports = { run, PROTOCOL };
