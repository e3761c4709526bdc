"""A test processor: appends each record it processes to $OUT as a JSON line.

CRASH_ON=DATA exits (status 3) at that record the first time it sees it; MODE=never-
checkpoint answers ok without ever checkpointing."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "clients", "python"))
import kinesumer_processor  # noqa: E402

OUT = os.environ["OUT"]
CRASH_ON = os.environ.get("CRASH_ON")


def process(records, checkpointer):
    with open(OUT, "a") as out:
        for r in records:
            data = r.data.decode()
            if data == CRASH_ON and not os.path.exists(OUT + ".crashed"):
                open(OUT + ".crashed", "w").close()
                out.flush()
                os._exit(3)
            line = {"data": data, "token": r.fencing_token, "behind": r.millis_behind_latest, "pid": os.getpid()}
            out.write(json.dumps(line) + "\n")


kinesumer_processor.run(process, auto_checkpoint=os.environ.get("MODE") != "never-checkpoint")
