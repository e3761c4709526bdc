"""A record processor for `kinesumer run -- python3 handler.py`.

The member speaks a line protocol on this process's stdin and stdout
(docs/processor-protocol.md); this module turns it into calls of

    def process(records, checkpointer): ...

the shape KCL users know. Standard library only; Python 3.8+.

    import kinesumer_processor

    def process(records, checkpointer):
        for r in records:
            print(r.partition_key, r.data, file=sys.stderr)  # stdout is the protocol's

    kinesumer_processor.run(process)

After `process` returns, everything it was given is checkpointed (pass
auto_checkpoint=False to call `checkpointer.checkpoint(record)` yourself). An
exception in `process` is reported to the member, whose error policy retries the
records or gives up on them. Print to stderr, never to stdout.

One process may serve many shards (the member's default: one child for all of its
shards); `process` is then called for one shard's records at a time, and
`checkpointer.shard` says which. Keep per-shard state keyed by
`checkpointer.shard.shard_id` (and `.stream`).
"""

import base64
import json
import sys
import time

PROTOCOL = 1


class Record:
    """One record: data (bytes), partition_key, sequence_number,
    sub_sequence_number, approximate_arrival (RFC 3339 or None), fencing_token,
    millis_behind_latest (how far behind the shard's tip its batch was read, or None)."""

    __slots__ = ("data", "partition_key", "sequence_number", "sub_sequence_number",
                 "approximate_arrival", "fencing_token", "millis_behind_latest")

    def __init__(self, raw, fencing_token, millis_behind_latest=None):
        if raw.get("data_encoding") == "text":
            self.data = raw["data"].encode()
        else:
            self.data = base64.b64decode(raw["data"])
        self.partition_key = raw["partition_key"]
        self.sequence_number = raw["sequence_number"]
        self.sub_sequence_number = raw.get("sub_sequence_number")
        self.approximate_arrival = raw.get("approximate_arrival")
        self.fencing_token = fencing_token
        self.millis_behind_latest = millis_behind_latest


class Shard:
    """A shard this process serves: stream, shard_id, fencing_token, start, and shared
    (whether this process serves every shard of its member, or only this one)."""

    def __init__(self, msg):
        self.stream = msg["stream"]
        self.shard_id = msg["shard_id"]
        self.fencing_token = msg["fencing_token"]
        self.start = msg["start"]
        self.shared = msg.get("shared", False)
        self.checkpointer = Checkpointer(self)

    def send(self, message):
        """Writes `message` to the member, naming this shard."""
        message.update(stream=self.stream, shard_id=self.shard_id)
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


class Checkpointer:
    """Marks one shard's records processed; the member commits them."""

    def __init__(self, shard):
        self.shard = shard

    def checkpoint(self, record=None):
        """Everything delivered so far, or `record` and everything before it."""
        if record is None:
            self.shard.send({"type": "checkpoint"})
        else:
            self.shard.send({"type": "checkpoint", "sequence_number": record.sequence_number,
                             "sub_sequence_number": record.sub_sequence_number})


def run(process, initialize=None, revoking=None, shard_ended=None, lost=None,
        auto_checkpoint=True):
    """Serves the member until it closes stdin: every shard it is given, each with its
    own Shard and Checkpointer (`checkpointer.shard`).

    initialize(shard), revoking(checkpointer, deadline) (deadline: a time.monotonic()
    value; flush and checkpoint before it), shard_ended(checkpointer) and lost(shard)
    are optional; without `revoking`, a revoked shard checkpoints what was processed."""
    shards = {}
    for line in sys.stdin:
        msg = json.loads(line)
        kind = msg["type"]
        key = (msg.get("stream"), msg.get("shard_id"))
        if kind == "initialize":
            shard = Shard(msg)
            if msg.get("protocol") != PROTOCOL:
                shard.send({"type": "error", "error": "protocol %r not supported" % msg.get("protocol")})
                continue
            shards[key] = shard
            if initialize:
                initialize(shard)
        elif kind == "records":
            shard = shards[key]
            behind = msg.get("millis_behind_latest")
            records = [Record(r, msg["fencing_token"], behind) for r in msg["records"]]
            try:
                process(records, shard.checkpointer)
            except Exception as e:  # reported; the member's error policy decides
                shard.send({"type": "error", "error": "%s: %s" % (type(e).__name__, e)})
                continue
            if auto_checkpoint and records:
                shard.checkpointer.checkpoint()
        elif kind == "revoking":
            shard = shards.pop(key)
            deadline = time.monotonic() + msg["deadline_ms"] / 1000.0
            if revoking:
                revoking(shard.checkpointer, deadline)
        elif kind == "shard_ended":
            shard = shards.pop(key)
            if shard_ended:
                shard_ended(shard.checkpointer)
        elif kind == "lost":
            shard = shards.pop(key, None)
            if lost and shard:
                lost(shard)
            continue  # not answered
        else:
            continue  # a newer member's message this version does not know
        shard.send({"type": "ok"})
