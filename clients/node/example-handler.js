// An example processor for `kinesumer run -- node clients/node/example-handler.js`:
// prints each record to stderr (the member prefixes it with its stream and shard).
'use strict';

const { run } = require('./kinesumer-processor');

run(async (records) => {
  for (const r of records) {
    console.error(r.sequenceNumber, r.partitionKey, r.data.toString('utf8'));
  }
});
