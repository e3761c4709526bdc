"""The processor of `scripts/demo --python`: appends each record to $OUT as a JSON line
(sequence number, partition key, data), as `kinesumer consume --format jsonl` writes it."""

import json
import os

import kinesumer_processor

OUT = os.environ["OUT"]


def process(records, checkpointer):
    with open(OUT, "a") as out:
        for r in records:
            line = {"sequence_number": r.sequence_number, "partition_key": r.partition_key,
                    "data": r.data.decode("utf-8", "replace")}
            out.write(json.dumps(line, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    kinesumer_processor.run(process)
