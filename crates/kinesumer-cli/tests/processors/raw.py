"""A test processor without the helper: appends each record as the member sent it
(`data` and `data_encoding`) to $OUT as a JSON line, and checkpoints each batch."""

import json
import os
import sys

OUT = os.environ["OUT"]


def send(m):
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    m = json.loads(line)
    if m["type"] == "records":
        with open(OUT, "a") as out:
            for r in m["records"]:
                out.write(json.dumps({"data": r["data"], "enc": r.get("data_encoding")}) + "\n")
        send({"type": "checkpoint"})
    if m["type"] == "lost":
        break
    send({"type": "ok"})
