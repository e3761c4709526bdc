"""An example processor for `kinesumer run -- python3 clients/python/example_handler.py`:
prints each record to stderr (the member prefixes it with its stream and shard)."""

import sys

import kinesumer_processor


def process(records, checkpointer):
    for r in records:
        print(r.sequence_number, r.partition_key, r.data.decode("utf-8", "replace"),
              file=sys.stderr)


if __name__ == "__main__":
    kinesumer_processor.run(process)
