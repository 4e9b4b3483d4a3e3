#!/usr/bin/env python3
"""History overhead per tool call, and run_tests against pytest run directly.

    history, caller's path    the History middleware's own work per call (entry, cut and
                              redacted arguments, queue append), timed around a call_next
                              that returns at once; target p50 <= 0.1 ms
    history, end to end       a do-nothing tool through the in-memory MCP client on two
                              servers, with and without the History middleware, interleaved
    run_tests vs pytest       wall time of run_tests (JUnit report, parsing, console tail)
                              and of `python3 -m pytest` through run_command in the same
                              session on the same project, interleaved; counts compared;
                              target ratio <= 1.10

The project is a real one nobody here wrote: the sdist of more-itertools (downloaded once
with `pip download --no-binary :all: --no-deps` into bench/.cache/). Usage::

    python bench/bench_checks.py [--quick] [--rounds N]

The machine's load moves a whole pytest run by tens of percent from one run to the next;
the rounds are interleaved and the medians compared, so more rounds give a steadier ratio.

Exit status 1 if a target is missed or the counts differ.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import mcp.types as mt
import structlog
from fastmcp import Client, FastMCP
from fastmcp.server.middleware import MiddlewareContext
from fastmcp.tools.base import ToolResult

from coderx_mcp.config import Settings
from coderx_mcp.context import CallScope, entered
from coderx_mcp.grants import Grants
from coderx_mcp.history import HistoryStore, HistoryWriter
from coderx_mcp.server import build_server
from coderx_mcp.server.pipeline import default_middleware
from coderx_mcp.server.recording import History
from coderx_mcp.tools.common import Out, result, tool

PROJECT = "more-itertools"
CACHE = Path(__file__).parent / ".cache"
HISTORY_TARGET_MS = 0.1
RATIO_TARGET = 1.10


def pct(samples: list[float]) -> tuple[float, float]:
    """Median and 99th percentile."""
    return statistics.median(samples), statistics.quantiles(samples, n=100,
                                                             method="inclusive")[98]


def row(name: str, samples: list[float], unit: str = "ms", target: str = "",
        ok: bool | None = None) -> str:
    p50, p99 = pct(samples) if len(samples) > 1 else (samples[0], samples[0])
    verdict = "-" if ok is None else "PASS" if ok else "FAIL"
    return f"{name:<34} p50 {p50:9.4f} {unit}  p99 {p99:9.4f} {unit}  n={len(samples):<5} " \
           f"{target:<18} {verdict}"


def add_noop(mcp: FastMCP) -> None:
    @tool(mcp, out=Out, read_only=True, session=False)
    async def noop(text: str = "hello") -> ToolResult:
        """Do nothing."""
        return result(Out(session=""), "ok")


async def caller_path(tmp: Path, n: int) -> list[float]:
    """Milliseconds the History middleware adds around an instant call_next."""
    writer = HistoryWriter(HistoryStore(tmp / "direct.sqlite3"), 90, 1 << 30)
    writer.start()
    app: Any = type("A", (), {"history": writer, "grants": Grants()})()
    mw = History()
    ctx = MiddlewareContext(message=mt.CallToolRequestParams(
        name="run_command", arguments={"command": "pytest -q tests/ " + "x" * 300}),
        method="tools/call")
    reply = ToolResult(content="$ pytest -q\n3 passed", structured_content={"exit_code": 0})

    async def call_next(_c: Any) -> ToolResult:
        return reply

    out = []
    with entered(CallScope(app=app, owner="local", tool="run_command")):
        for i in range(n + 200):
            t0 = time.perf_counter()
            await mw.on_call_tool(ctx, call_next)
            dt = (time.perf_counter() - t0) * 1000
            if i >= 200:
                out.append(dt)
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the writer drain, as between real calls
    await writer.close()
    return out


async def end_to_end(settings: Settings, n: int) -> tuple[list[float], list[float]]:
    """noop round trips with and without History, interleaved."""
    with_h = build_server(settings)
    without = build_server(settings, middleware=[m for m in default_middleware()
                                                 if not isinstance(m, History)])
    for s in (with_h, without):
        add_noop(s)
    a: list[float] = []
    b: list[float] = []
    async with Client(with_h) as ca, Client(without) as cb:
        for i in range(n + 50):
            for c, samples in ((ca, a), (cb, b)) if i % 2 else ((cb, b), (ca, a)):
                t0 = time.perf_counter()
                await c.call_tool("noop", {"text": "x"})
                if i >= 50:
                    samples.append((time.perf_counter() - t0) * 1000)
    return a, b


def project(dest: Path) -> Path:
    """An unpacked copy of the project's sdist owned by the sandbox uid."""
    CACHE.mkdir(exist_ok=True)
    sdists = sorted(CACHE.glob("more_itertools-*.tar.gz"))
    if not sdists:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                        "--no-deps", "-d", str(CACHE), PROJECT], check=True)
        sdists = sorted(CACHE.glob("more_itertools-*.tar.gz"))
    with tarfile.open(sdists[-1]) as tar:
        tar.extractall(dest, filter="data")
    root = next(dest.glob("more_itertools-*"))
    for p in [root, *root.rglob("*")]:
        os.chown(p, 1000, 1000)
    return root


SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|xfailed|errors?)")


async def tests_vs_pytest(settings: Settings, rounds: int, path: str
                          ) -> tuple[list[float], list[float], dict[str, int], dict[str, int]]:
    ours: list[float] = []
    direct: list[float] = []
    ours_counts: dict[str, int] = {}
    direct_counts: dict[str, int] = {}
    cmd = f"python3 -m pytest -p no:cacheprovider {path}"  # run_tests' verbosity
    async with Client(build_server(settings)) as c:
        # Untimed: opens the session and compiles the project's bytecode once.
        await c.call_tool("run_command", {"command": cmd, "timeout": 600, "return_after": 600})
        for i in range(rounds):
            order = ("ours", "direct") if i % 2 == 0 else ("direct", "ours")
            for who in order:
                t0 = time.perf_counter()
                if who == "ours":
                    r = await c.call_tool("run_tests", {"path": path, "return_after": 600})
                    ours.append(time.perf_counter() - t0)
                    assert r.structured_content is not None
                    k = r.structured_content["counts"]
                    ours_counts = {w: k[w] for w in ("passed", "failed", "skipped", "xfailed",
                                                     "errors") if k[w]}
                else:
                    r = await c.call_tool("run_command", {"command": cmd, "timeout": 600,
                                                          "return_after": 600})
                    direct.append(time.perf_counter() - t0)
                    # The transcript (sent once, as text): pytest's summary, then the status.
                    text = "".join(getattr(b, "text", "") for b in r.content)
                    tail = text.strip().splitlines()[-2]
                    direct_counts = {w if w != "error" else "errors": int(n)
                                     for n, w in SUMMARY.findall(tail)}
    return ours, direct, ours_counts, direct_counts


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, one test file")
    ap.add_argument("--rounds", type=int, default=None, help="run_tests rounds per contender")
    opts = ap.parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    tmp = Path(tempfile.mkdtemp(prefix="coderx-bench-checks-"))
    ok = True
    try:
        root = project(tmp)
        settings = Settings(workspace=root, pool_size=0, history_path=tmp / "h.sqlite3")
        n = 2000 if opts.quick else 10000
        direct_ms = await caller_path(tmp, n)
        h_ok = pct(direct_ms)[0] <= HISTORY_TARGET_MS
        ok &= h_ok
        lines = [row("history, caller's path", direct_ms, target="p50 <= 0.1 ms", ok=h_ok)]
        a, b = await end_to_end(settings, 200 if opts.quick else 1000)
        lines += [row("noop with history (e2e)", a), row("noop without history (e2e)", b),
                  f"{'history, end-to-end difference':<34} p50 "
                  f"{pct(a)[0] - pct(b)[0]:9.4f} ms  (noise of the in-memory client included)"]
        path = "tests/test_recipes.py" if opts.quick else "."
        rounds = opts.rounds or (3 if opts.quick else 5)
        ours, direct, oc, dc = await tests_vs_pytest(settings, rounds, path)
        ratio = statistics.median(ours) / statistics.median(direct)
        r_ok = ratio <= RATIO_TARGET
        same = oc == dc
        ok &= r_ok and same
        lines += [f"project: {PROJECT}, path {path}, {rounds} interleaved rounds",
                  row("run_tests", ours, "s"),
                  row("pytest via run_command", direct, "s"),
                  f"{'run_tests / pytest (p50)':<34} {ratio:9.3f}x  target <= {RATIO_TARGET}x"
                  f"  {'PASS' if r_ok else 'FAIL'}",
                  f"{'counts':<34} run_tests {oc}  pytest {dc}  "
                  f"{'EQUAL' if same else 'DIFFERENT'}"]
        sys.stdout.write("\n".join(lines) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
