"""Our fake runner: answers ``hello`` like the real one, then misbehaves on request.

Run as ``python fake_runner.py``; stdlib only. Ops besides ``hello``:

- ``endless_line``: writes ``A`` to stdout without a newline until the reader hangs up.
- ``stderr_flood`` (``lines``): writes that many short lines to stderr, then replies.
- ``forge`` (``value``): first a reply for an id nobody asked, then the real reply.
- ``die_mid_reply``: writes the first half of its reply line, then exits at once.
- ``garbage`` (``value``): first bytes that are not JSON, JSON that is not a reply object
  and a reply with a string id, then the real reply.
- ``silent``: never replies (the runner keeps reading).
- anything else: replies with ``{"echo": value}``.
"""

from __future__ import annotations

import json
import os
import sys


def reply(rid: object, result: dict[str, object]) -> None:
    os.write(1, json.dumps({"id": rid, "ok": True, "result": result}).encode() + b"\n")


def main() -> None:
    for line in sys.stdin.buffer:
        req = json.loads(line)
        op, rid = req["op"], req["id"]
        if op == "hello":
            reply(rid, {"protocol": 1, "pid": os.getpid()})
        elif op == "endless_line":
            block = b"A" * 65536
            try:
                while True:
                    os.write(1, block)
            except BrokenPipeError:
                return
        elif op == "stderr_flood":
            lines = int(req["lines"])
            block = b"".join(b"noise %d\n" % i for i in range(lines))
            sys.stderr.buffer.write(block)
            sys.stderr.buffer.flush()
            reply(rid, {"written": lines})
        elif op == "die_mid_reply":
            line = json.dumps({"id": rid, "ok": True, "result": {"echo": "x" * 100}}).encode()
            os.write(1, line[: len(line) // 2])
            os._exit(3)
        elif op == "garbage":
            os.write(1, b"\x00\xff\xfe not json at all\n[1, 2]\n\"text\"\n{\"id\": \"1\"}\n")
            reply(rid, {"echo": req.get("value")})
        elif op == "silent":
            continue
        elif op == "forge":
            reply(rid ^ 1, {"echo": "forged"})
            reply(rid, {"echo": req.get("value")})
        else:
            reply(rid, {"echo": req.get("value")})


if __name__ == "__main__":
    main()
