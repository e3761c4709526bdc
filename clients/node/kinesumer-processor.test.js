// Unit tests of kinesumer-processor: a handler run in a process of its own, fed protocol
// lines on stdin; what it answers on stdout is checked. Run: node --test clients/node
'use strict';

const { test } = require('node:test');
const assert = require('node:assert');
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const helper = path.join(__dirname, 'kinesumer-processor');

const init = (shard, protocol = 1) => ({
  type: 'initialize', protocol, stream: 's', shard_id: shard, shared: true, fencing_token: 7,
  start: { kind: 'trim_horizon' },
});
const records = (shard, ...data) => ({
  type: 'records', stream: 's', shard_id: shard, fencing_token: 7, millis_behind_latest: 0,
  records: data.map((d, i) => ({
    sequence_number: String(i + 1), sub_sequence_number: null, partition_key: 'k', data: d,
    data_encoding: 'text', approximate_arrival: null,
  })),
});
const message = (type, shard, fields = {}) => ({ ...fields, type, stream: 's', shard_id: shard });

// Runs `body` (a script with `run` in scope) on `messages`; the objects it wrote to stdout
// as [type, shard, sequence_number], and its stderr.
function serve(body, messages) {
  const script = `const { run } = require(${JSON.stringify(helper)});\n${body}`;
  const done = spawnSync(process.execPath, ['-e', script], {
    input: messages.map((m) => `${JSON.stringify(m)}\n`).join(''),
    encoding: 'utf8',
    timeout: 30000,
  });
  const out = done.stdout.split('\n').filter((l) => l).map((l) => JSON.parse(l));
  return { out, said: out.map((o) => [o.type, o.shard_id, o.sequence_number]), err: done.stderr };
}

test('each answer names its shard and a batch is checkpointed after process', () => {
  const { said, err } = serve(`run(async (records, checkpointer) => {
    console.error(checkpointer.shard.shardId, records.map((r) => r.data.toString()).join(','));
  });`, [init('a'), init('b'), records('a', 'x', 'y'), records('b', 'z'),
    message('revoking', 'a', { deadline_ms: 1000 }), message('lost', 'b')]);
  const per = (s) => said.filter(([, shard]) => shard === s).map(([type]) => type);
  assert.deepStrictEqual(per('a'), ['ok', 'checkpoint', 'ok', 'ok']);
  assert.deepStrictEqual(per('b'), ['ok', 'checkpoint', 'ok']);
  assert.match(err, /a x,y/);
  assert.match(err, /b z/);
});

test('a rejected process is an error and no checkpoint', () => {
  const { out, said } = serve(`run(async () => { throw new Error('nope'); });`,
    [init('a'), records('a', 'x')]);
  assert.deepStrictEqual(said, [['ok', 'a', undefined], ['error', 'a', undefined]]);
  assert.strictEqual(out[1].error, 'nope');
});

test('a checkpoint at a record names it', () => {
  const { said } = serve(`run(async (records, checkpointer) => checkpointer.checkpoint(records[0]),
    { autoCheckpoint: false });`, [init('a'), records('a', 'x', 'y')]);
  assert.deepStrictEqual(said, [['ok', 'a', undefined], ['checkpoint', 'a', '1'], ['ok', 'a', undefined]]);
});

test('another protocol is refused and its shard not served', () => {
  const { out, said } = serve('run(async () => {});',
    [init('a', 2), records('a', 'x'), message('shiny-new', 'a')]);
  assert.deepStrictEqual(said, [['error', 'a', undefined]]);
  assert.match(out[0].error, /protocol 2 not supported/);
});

test('shards are handled at once, each in order', () => {
  // Shard a's first batch waits for shard b's: one shard at a time would wait for ever.
  const { said } = serve(`let arrive; const both = new Promise((r) => { arrive = r; });
    run(async (records) => {
      const d = records[0].data.toString();
      if (d === 'b1') arrive();
      if (d === 'a1') await both;
    });`, [init('a'), init('b'), records('a', 'a1'), records('a', 'a2'), records('b', 'b1')]);
  const per = (s) => said.filter(([, shard]) => shard === s).map(([type]) => type);
  assert.deepStrictEqual(per('a'), ['ok', 'checkpoint', 'ok', 'checkpoint', 'ok']);
  assert.deepStrictEqual(per('b'), ['ok', 'checkpoint', 'ok']);
});
