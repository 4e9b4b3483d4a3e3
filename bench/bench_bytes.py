#!/usr/bin/env python3
"""Bytes per tool call on the wire: how big each result is, and whether its payload is twice.

Builds the server as ``coderx-mcp serve`` does (Docker backend) on bench_mcp's scratch
workspace, calls read_file, grep, list_dir and run_command through FastMCP's in-process
client, and serialises each raw ``CallToolResult`` exactly as the JSON-RPC reply carries it
(``by_alias``, no nulls). For each call it prints the reply's bytes, the payload's own size
and how many times the payload's marker text occurs in the reply (1 = sent once).

    python bench/bench_bytes.py [--json]

Run it with another checkout's virtualenv to get that checkout's figures (the "before"
column of a change): ``~/.cache/coderx/ci-venv/bin/python bench/bench_bytes.py``.
``--json`` writes bench/results/bytes.json. The last line says PASS or FAIL against issue
#8's target (read_file of the 10 KB file at most ``READ_TARGET`` times its size on the
wire); FAIL exits with status 1.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_mcp import GREP_PATTERN, SANDBOX_UID, make_scratch  # noqa: E402

# Issue #8: read_file of a 10 KB file costs at most this many times its size on the wire.
READ_TARGET = 1.15

# (label, tool, arguments, a text that occurs once in each copy of the payload)
CALLS: list[tuple[str, str, dict[str, Any], str]] = [
    ("read_file 10 KB", "read_file", {"path": "read10k.txt"}, "   42 "),
    ("grep content", "grep", {"pattern": GREP_PATTERN, "output_mode": "content"}, "needle_0"),
    ("list_dir depth 2", "list_dir", {"depth": 2}, "pkg00"),
    ("run_command seq 1000", "run_command", {"command": "seq 1000"}, "998"),
]


async def measure(ws: Path, image: str | None) -> list[dict[str, Any]]:
    """Call each tool once (after a warm-up call) and size its reply."""
    from fastmcp import Client

    from coderx_mcp.config import Settings
    from coderx_mcp.logs import configure_logging
    from coderx_mcp.server import build_server

    # structlog's default prints to stdout; the table is this script's stdout.
    configure_logging("warning")
    extra: dict[str, Any] = {"image": image} if image else {}
    settings = Settings(workspace=ws, pool_size=0, data_dir=ws.parent / "data",
                        state_dir=ws.parent / "state", **extra)
    rows = []
    async with Client(build_server(settings)) as c:
        await c.call_tool_mcp("run_command", {"command": "true"})
        for label, tool, args, marker in CALLS:
            res = await c.call_tool_mcp(tool, args)
            wire = res.model_dump_json(by_alias=True, exclude_none=True)
            text = "".join(getattr(b, "text", "") for b in res.content)
            structured = json.dumps(res.structured_content) if res.structured_content else ""
            rows.append({"call": label, "wire_bytes": len(wire.encode()),
                         "text_bytes": len(text.encode()),
                         "structured_bytes": len(structured.encode()),
                         "payload_copies": (marker in text) + (marker in structured),
                         "error": text[:200] if res.is_error else None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="write bench/results/bytes.json")
    ap.add_argument("--image", help="sandbox image (default: the server's)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        ws.mkdir()
        make_scratch(ws)
        subprocess.run(["chown", "-R", f"{SANDBOX_UID}:{SANDBOX_UID}", str(ws)], check=False)
        size = (ws / "read10k.txt").stat().st_size
        rows = asyncio.run(measure(ws, opts.image or os.environ.get("CODERX_IMAGE")))
    print(f"{'call':24} {'wire B':>8} {'text B':>8} {'struct B':>9} {'copies':>6}")
    for r in rows:
        print(f"{r['call']:24} {r['wire_bytes']:>8} {r['text_bytes']:>8} "
              f"{r['structured_bytes']:>9} {r['payload_copies']:>6}"
              + (f"  ERROR {r['error']}" if r["error"] else ""))
    read = rows[0]["wire_bytes"]
    limit = int(size * READ_TARGET)
    passed = read <= limit and rows[0]["error"] is None
    if opts.json:
        (BENCH / "results").mkdir(exist_ok=True)
        (BENCH / "results" / "bytes.json").write_text(json.dumps(
            {"file_bytes": size, "target_ratio": READ_TARGET, "passed": passed, "rows": rows},
            indent=2) + "\n")
    print(f"{'PASS' if passed else 'FAIL'}: read_file 10 KB is {read} bytes on the wire = "
          f"{read / size:.3f}x the file ({size} bytes); target <= {READ_TARGET}x "
          f"(<= {limit} bytes)")
    if not passed:
        sys.exit(1)


if __name__ == "__main__":
    main()
