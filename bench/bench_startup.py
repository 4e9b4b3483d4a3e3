#!/usr/bin/env python3
"""Start-up: time from spawning a stdio MCP server to its answer to ``initialize``.

Hosts start the conversation before MCP servers finish connecting, so this is what a user
waits for. Contenders are started interleaved (round-robin, in a shuffled order each round)
so the machine's load falls on all of them alike:

    coderx     ``python -m coderx_mcp serve`` (Docker backend, warm pool off so no
               container outlives a round; sessions start after initialize anyway)
    fastmcp    a do-nothing FastMCP server (bench_mcp.py --serve fastmcp)
    node-fs    @modelcontextprotocol/server-filesystem, when bench/.npm has it

    python bench/bench_startup.py [-n ROUNDS] [--json]

Prints p50/p99 per contender and ours minus the do-nothing server (target: <= 0.2 s).
``--json`` writes bench/results/startup.json.
"""

import argparse
import json
import os
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
NODE_ENTRY = BENCH / ".npm" / "node_modules" / "@modelcontextprotocol" / "server-filesystem" \
    / "dist" / "index.js"
INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "bench", "version": "1"}}}) + "\n"


def contenders(ws: Path) -> dict[str, list[str]]:
    py = sys.executable
    out = {"coderx": [py, "-m", "coderx_mcp", "serve"],
           "fastmcp": [py, str(BENCH / "bench_mcp.py"), "--serve", "fastmcp"]}
    if NODE_ENTRY.exists() and shutil.which("node"):
        out["node-fs"] = ["node", str(NODE_ENTRY), str(ws)]
    return out


def once(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds from spawn to the initialize reply; the server is then told to stop."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(INIT.encode())
    p.stdin.flush()
    ready, _, _ = select.select([p.stdout], [], [], 60)
    line = p.stdout.readline() if ready else b""
    dt = time.perf_counter() - t0
    p.stdin.close()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    if b'"id":1' not in line.replace(b" ", b""):
        raise RuntimeError(f"{argv[:3]} gave no initialize reply: {line[:200]!r}")
    return dt


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def precompile() -> None:
    """Write the .pyc files of our packages, as installing a wheel does.

    FastMCP and the rest of site-packages were compiled when pip installed them; an editable
    checkout is compiled at import, and not even cached when PYTHONDONTWRITEBYTECODE is set
    (as on the development VM): without this, ours would pay ~70 ms of compiling per start
    that no installed copy pays.
    """
    import compileall
    import importlib.util

    for name in ("coderx_mcp", "coderx_agent"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            for where in spec.submodule_search_locations:
                compileall.compile_dir(where, quiet=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=15, help="rounds (each starts every contender)")
    ap.add_argument("--json", action="store_true", help="write bench/results/startup.json")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        if os.geteuid() == 0:
            os.chown(ws, 1000, 1000)  # a workspace the sandbox uid can use
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODERX_")}
        env.update(CODERX_WORKSPACE=str(ws), CODERX_POOL_SIZE="0", CODERX_LOG_LEVEL="error")
        if os.environ.get("CODERX_IMAGE"):
            env["CODERX_IMAGE"] = os.environ["CODERX_IMAGE"]
        runs = contenders(ws)
        times: dict[str, list[float]] = {name: [] for name in runs}
        precompile()
        for name in runs:  # one warm-up each (page cache, .pyc)
            once(runs[name], env, ws)
        for _ in range(opts.n):
            order = list(runs)
            random.shuffle(order)
            for name in order:
                times[name].append(once(runs[name], env, ws))
    print(f"spawn -> initialize reply, {opts.n} interleaved rounds")
    print(f"{'server':10} {'p50 s':>7} {'p99 s':>7} {'mean s':>7}")
    for name, xs in times.items():
        print(f"{name:10} {pct(xs, 0.5):7.3f} {pct(xs, 0.99):7.3f} {statistics.fmean(xs):7.3f}")
    gap = pct(times["coderx"], 0.5) - pct(times["fastmcp"], 0.5)
    print(f"coderx - fastmcp (p50): {gap:+.3f} s; target <= +0.200 s: "
          f"{'PASS' if gap <= 0.2 else 'FAIL'}")
    if opts.json:
        (BENCH / "results").mkdir(exist_ok=True)
        (BENCH / "results" / "startup.json").write_text(json.dumps(
            {"rounds": opts.n, "seconds": times, "gap_p50_s": gap}, indent=2) + "\n")


if __name__ == "__main__":
    main()
