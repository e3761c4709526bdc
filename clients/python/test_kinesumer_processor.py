"""Unit tests of kinesumer_processor: a handler run in a process of its own, fed protocol
lines on stdin; what it answers on stdout is checked. Run: python3 -m unittest discover
-s clients/python"""

import json
import os
import subprocess
import sys
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def init(shard, protocol=1):
    return {"type": "initialize", "protocol": protocol, "stream": "s", "shard_id": shard,
            "shared": True, "fencing_token": 7, "start": {"kind": "trim_horizon"}}


def records(shard, *data):
    return {"type": "records", "stream": "s", "shard_id": shard, "fencing_token": 7,
            "millis_behind_latest": 0,
            "records": [{"sequence_number": str(i + 1), "sub_sequence_number": None,
                         "partition_key": "k", "data": d, "data_encoding": "text",
                         "approximate_arrival": None} for i, d in enumerate(data)]}


def message(kind, shard, **fields):
    return dict(fields, type=kind, stream="s", shard_id=shard)


def serve(handler, messages):
    """Runs `handler` (the body of a script that imports kinesumer_processor) on
    `messages`; returns the objects it wrote to stdout and its stderr."""
    script = "import sys\nsys.path.insert(0, %r)\nimport kinesumer_processor\n" % HERE
    script += textwrap.dedent(handler)
    stdin = "".join(json.dumps(m) + "\n" for m in messages)
    done = subprocess.run([sys.executable, "-c", script], input=stdin, capture_output=True,
                          text=True, timeout=30)
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def said(out):
    """(type, shard, sequence_number) of each answer."""
    return [(o["type"], o["shard_id"], o.get("sequence_number")) for o in out]


class Serving(unittest.TestCase):
    def test_each_answer_names_its_shard_and_a_batch_is_checkpointed_after_process(self):
        out, err = serve("""
            def process(records, checkpointer):
                print(checkpointer.shard.shard_id, [r.data for r in records], file=sys.stderr)
            kinesumer_processor.run(process)
        """, [init("a"), init("b"), records("a", "x", "y"), records("b", "z"),
              message("revoking", "a", deadline_ms=1000), message("lost", "b")])
        self.assertEqual(said(out), [
            ("ok", "a", None), ("ok", "b", None),
            ("checkpoint", "a", None), ("ok", "a", None),
            ("checkpoint", "b", None), ("ok", "b", None),
            ("ok", "a", None),
        ])
        self.assertIn("a [b'x', b'y']", err)
        self.assertIn("b [b'z']", err)

    def test_a_failing_process_is_an_error_and_no_checkpoint(self):
        out, _ = serve("""
            def process(records, checkpointer):
                raise ValueError("nope")
            kinesumer_processor.run(process)
        """, [init("a"), records("a", "x")])
        self.assertEqual(said(out), [("ok", "a", None), ("error", "a", None)])
        self.assertEqual(out[1]["error"], "ValueError: nope")

    def test_a_checkpoint_at_a_record_names_it(self):
        out, _ = serve("""
            def process(records, checkpointer):
                checkpointer.checkpoint(records[0])
            kinesumer_processor.run(process, auto_checkpoint=False)
        """, [init("a"), records("a", "x", "y")])
        self.assertEqual(said(out), [("ok", "a", None), ("checkpoint", "a", "1"), ("ok", "a", None)])

    def test_another_protocol_is_refused_and_its_shard_not_served(self):
        out, _ = serve("""
            kinesumer_processor.run(lambda records, checkpointer: None)
        """, [init("a", protocol=2), records("a", "x"), message("shiny-new", "a")])
        self.assertEqual(said(out), [("error", "a", None)])
        self.assertIn("protocol 2 not supported", out[0]["error"])

    def test_concurrent_shards_are_handled_at_once_each_in_order(self):
        # Shard a's first batch waits for shard b's: with one shard at a time it would
        # wait for ever (the barrier breaks after 10 s and the batch fails).
        out, _ = serve("""
            import threading
            both = threading.Barrier(2, timeout=10)
            def process(records, checkpointer):
                if records[0].data in (b"a1", b"b1"):
                    both.wait()
            kinesumer_processor.run(process, concurrent=True)
        """, [init("a"), init("b"), records("a", "a1"), records("a", "a2"), records("b", "b1")])
        per_shard = {s: [t for t, shard, _ in said(out) if shard == s] for s in "ab"}
        self.assertEqual(per_shard["a"], ["ok", "checkpoint", "ok", "checkpoint", "ok"])
        self.assertEqual(per_shard["b"], ["ok", "checkpoint", "ok"])


if __name__ == "__main__":
    unittest.main()
