"""A test processor (concurrent=True): the first batch of each of two shards waits until
the other shard's first batch is in `process` too, so it finishes only if shards are
handled at once; then appends each record to $OUT as a JSON line."""

import json
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "clients", "python"))
import kinesumer_processor  # noqa: E402

OUT = os.environ["OUT"]
both = threading.Barrier(2, timeout=20)
seen = set()
lock = threading.Lock()


def process(records, checkpointer):
    with lock:
        first = checkpointer.shard.shard_id not in seen
        seen.add(checkpointer.shard.shard_id)
    if first:
        both.wait()  # BrokenBarrierError unless the other shard's batch is here too
    with lock, open(OUT, "a") as out:
        for r in records:
            out.write(json.dumps({"data": r.data.decode(), "pid": os.getpid()}) + "\n")


kinesumer_processor.run(process, concurrent=True)
