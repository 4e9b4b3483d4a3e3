"""Our fake runner: answers ``hello`` like the real one, then misbehaves on request.

Run as ``python fake_runner.py``; stdlib only. Ops besides ``hello``:

- ``endless_line``: writes ``A`` to stdout without a newline until the reader hangs up.
- ``stderr_flood`` (``lines``): writes that many short lines to stderr, then replies.
- ``forge`` (``value``): first a reply for an id nobody asked, then the real reply.
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
        elif op == "forge":
            reply(rid ^ 1, {"echo": "forged"})
            reply(rid, {"echo": req.get("value")})
        else:
            reply(rid, {"echo": req.get("value")})


if __name__ == "__main__":
    main()
