"""A test processor without the helper: appends each record as the member sent it
(`data` and `data_encoding`) to $OUT as a JSON line, and checkpoints each batch. Its
answers name the shard of the message they answer, as a child shared by shards must;
NAMELESS=1 leaves the shard out, as a child of one shard may."""

import json
import os
import sys

OUT = os.environ["OUT"]


def send(m):
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    m = json.loads(line)
    shard = {} if os.environ.get("NAMELESS") else {"stream": m["stream"], "shard_id": m["shard_id"]}
    if m["type"] == "records":
        with open(OUT, "a") as out:
            for r in m["records"]:
                out.write(json.dumps({"data": r["data"], "enc": r.get("data_encoding")}) + "\n")
        send({"type": "checkpoint", **shard})
    if m["type"] == "lost":
        continue
    send({"type": "ok", **shard})
