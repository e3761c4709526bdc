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

One process serves all the member's shards (unless `run --child-per-shard`): `process`
gets one shard's records at a time, and `checkpointer.shard` says which; keep per-shard
state keyed by it. `run(process, concurrent=True)` handles each shard on a thread.
"""

import base64
import json
import queue
import sys
import threading
import time

PROTOCOL = 1

# One line at a time on stdout, whichever shard's thread writes it.
_STDOUT = threading.Lock()


class Record:
    """One record: data (bytes), partition_key, sequence_number,
    sub_sequence_number, approximate_arrival (RFC 3339 or None), fencing_token,
    millis_behind_latest (how far behind the shard's tip its batch was read, or None)."""

    __slots__ = ("data", "partition_key", "sequence_number", "sub_sequence_number",
                 "approximate_arrival", "fencing_token", "millis_behind_latest")

    def __init__(self, raw, fencing_token, millis_behind_latest=None):
        text = raw.get("data_encoding") == "text"
        self.data = raw["data"].encode() if text else base64.b64decode(raw["data"])
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
        """Writes `message` to the member, naming this shard (whole lines, any thread)."""
        line = json.dumps(dict(message, stream=self.stream, shard_id=self.shard_id)) + "\n"
        with _STDOUT:
            sys.stdout.write(line)
            sys.stdout.flush()


class Checkpointer:
    """Marks one shard's records processed; the member commits them."""

    def __init__(self, shard):
        self.shard = shard

    def checkpoint(self, record=None):
        """Everything delivered so far, or `record` and everything before it."""
        at = {} if record is None else {"sequence_number": record.sequence_number,
                                         "sub_sequence_number": record.sub_sequence_number}
        self.shard.send(dict(at, type="checkpoint"))


# The messages after which a shard's conversation is over.
_LAST = ("revoking", "shard_ended", "lost")


def run(process, initialize=None, revoking=None, shard_ended=None, lost=None,
        auto_checkpoint=True, concurrent=False):
    """Serves the member until it closes stdin: every shard it is given, each with its
    own Shard and Checkpointer (`checkpointer.shard`).

    initialize(shard), revoking(checkpointer, deadline) (deadline: a time.monotonic()
    value; flush and checkpoint before it), shard_ended(checkpointer) and lost(shard)
    are optional; without `revoking`, a revoked shard checkpoints what was processed.

    Shards are handled one at a time, unless concurrent=True: then each shard's messages
    are handled in order on a thread of its own, so a `process` waiting on I/O for one
    shard does not hold up the others (`process` and the hooks must then be safe to call
    from several threads at once)."""

    def handle(shard, msg):
        kind = msg["type"]
        if kind == "initialize":
            if initialize:
                initialize(shard)
        elif kind == "records":
            behind = msg.get("millis_behind_latest")
            records = [Record(r, msg["fencing_token"], behind) for r in msg["records"]]
            try:
                process(records, shard.checkpointer)
            except Exception as e:  # reported; the member's error policy decides
                shard.send({"type": "error", "error": "%s: %s" % (type(e).__name__, e)})
                return
            if auto_checkpoint and records:
                shard.checkpointer.checkpoint()
        elif kind == "revoking":
            if revoking:
                revoking(shard.checkpointer, time.monotonic() + msg["deadline_ms"] / 1000.0)
        elif kind == "shard_ended":
            if shard_ended:
                shard_ended(shard.checkpointer)
        elif kind == "lost":
            if lost:
                lost(shard)
            return  # not answered
        else:
            return  # a newer member's message this version does not know
        shard.send({"type": "ok"})

    def serve(shard, inbox):
        for msg in iter(inbox.get, None):
            handle(shard, msg)

    shards = {}  # (stream, shard_id): (Shard, its thread's inbox, or None)
    threads = []
    for line in sys.stdin:
        msg = json.loads(line)
        key = (msg.get("stream"), msg.get("shard_id"))
        if msg["type"] == "initialize":
            shard, inbox = Shard(msg), None
            if msg.get("protocol") != PROTOCOL:
                shard.send({"type": "error", "error": "protocol %r not supported" % msg.get("protocol")})
                continue
            if concurrent:
                inbox = queue.Queue()
                threads = [t for t in threads if t.is_alive()]
                threads.append(threading.Thread(target=serve, args=(shard, inbox), daemon=True))
                threads[-1].start()
            shards[key] = (shard, inbox)
        if key not in shards:
            continue  # about no shard this process serves: nothing to answer
        shard, inbox = shards[key]
        if inbox is None:
            handle(shard, msg)
        else:
            inbox.put(msg)
        if msg["type"] in _LAST:
            del shards[key]
            if inbox is not None:
                inbox.put(None)
    # Stdin closed: what the threads were given is handled before this process ends.
    for _, inbox in shards.values():
        if inbox is not None:
            inbox.put(None)
    for thread in threads:
        thread.join()
