"""A test processor: appends each record it processes to $OUT as a JSON line.

CRASH_ON=DATA exits (status 3) at that record the first time it sees it; HANG_ON=DATA
stops answering there the first time; MODE=never-checkpoint answers ok without ever
checkpointing."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "clients", "python"))
import kinesumer_processor  # noqa: E402

OUT = os.environ["OUT"]
CRASH_ON = os.environ.get("CRASH_ON")
HANG_ON = os.environ.get("HANG_ON")


def first_time(marker):
    """True the first time any child of this test asks."""
    try:
        open(OUT + marker, "x").close()
        return True
    except FileExistsError:
        return False


def process(records, checkpointer):
    with open(OUT, "a") as out:
        for r in records:
            data = r.data.decode()
            if data == CRASH_ON and first_time(".crashed"):
                out.flush()
                os._exit(3)
            if data == HANG_ON and first_time(".hung"):
                out.flush()
                time.sleep(3600)
            line = {"data": data, "token": r.fencing_token, "behind": r.millis_behind_latest, "pid": os.getpid()}
            out.write(json.dumps(line) + "\n")


kinesumer_processor.run(process, auto_checkpoint=os.environ.get("MODE") != "never-checkpoint")
