#!/usr/bin/env python3
"""Sandbox latency and memory: the persistent runner against ``docker exec``, session start.

Everything is measured in one run on the real Docker backend (image ``coderx-sandbox:latest``):

    exec via runner     ``exec true`` through the session's runner (one JSON line each way)
    exec via docker     ``true`` through the Docker SDK's ``exec_run`` (a new exec per call:
                        create + start + attach, what a runner-less design pays every time)
    ratio               docker exec p50 / runner exec p50
    read via runner     ``read`` of a 1 KiB file
    open cold           ``SessionManager.open`` with the pool off: container + runner start
    open warm           ``open`` served by the warm pool (refilled between takes)
    20 sessions         server RSS growth per open session, memory of one idle container

Usage::

    python bench/bench_sandbox.py [--quick] [--json]

Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker
import structlog

from coderx_mcp.config import Settings
from coderx_mcp.sandbox.docker_backend import DockerBackend
from coderx_mcp.sandbox.instance import LABEL_SESSION, Instance
from coderx_mcp.sessions import Session, SessionManager

SANDBOX_UID = 1000


@dataclass
class Line:
    """One row of the result table."""

    name: str
    unit: str
    p50: float
    p99: float | None
    n: int
    target: str
    ok: bool | None  # None: informational, no target

    @property
    def verdict(self) -> str:
        return "-" if self.ok is None else "PASS" if self.ok else "FAIL"


def percentiles(samples: list[float]) -> tuple[float, float]:
    """Median and 99th percentile."""
    if len(samples) == 1:
        return samples[0], samples[0]
    return statistics.median(samples), statistics.quantiles(samples, n=100,
                                                             method="inclusive")[98]


async def timed(fn: Callable[[], Awaitable[Any]], n: int, warmup: int) -> list[float]:
    """Milliseconds per call of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def rss_kib() -> int:
    """This process's resident set size (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def container_memory_mib(client: docker.DockerClient, session: Session) -> float:
    """Memory of a session's container as ``docker stats`` shows it (usage minus page cache)."""
    found = client.containers.list(filters={"label": f"{LABEL_SESSION}={session.id}"})
    stats = found[0].stats(stream=False, one_shot=True)["memory_stats"]
    detail = stats.get("stats", {})
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return float(stats["usage"] - cache) / (1 << 20)


def make_settings(root: Path, pool_size: int) -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    return Settings(pool_size=pool_size, max_sessions=32, data_dir=root / "data", use_cwd=False,
                    workspace_roots=[root], state_dir=root / "state")


async def started(settings: Settings) -> SessionManager:
    manager = SessionManager(settings, DockerBackend(settings, Instance.current()))
    await manager.start()
    return manager


async def bench_calls(root: Path, client: docker.DockerClient, quick: bool) -> list[Line]:
    runner_n, docker_n = (100, 20) if quick else (300, 50)
    manager = await started(make_settings(root, 0))
    try:
        ws = root / "ws"
        ws.mkdir()
        if os.geteuid() == 0:
            os.chown(ws, SANDBOX_UID, SANDBOX_UID)
        session = await manager.open("bench", workspace=str(ws))
        await session.call("write", path="small.txt", data="eA==" * 342)  # 1 KiB
        runner = await timed(lambda: session.call("exec", command="true", timeout=10),
                             runner_n, 20)
        read = await timed(lambda: session.call("read", path="small.txt"), runner_n, 20)
        container = client.containers.get(session.sandbox.ident)

        async def docker_exec() -> None:
            result = await asyncio.to_thread(container.exec_run, ["true"],
                                             user=f"{SANDBOX_UID}:{SANDBOX_UID}")
            assert result.exit_code == 0

        dock = await timed(docker_exec, docker_n, 3)
    finally:
        await manager.shutdown()
    r50, r99 = percentiles(runner)
    d50, d99 = percentiles(dock)
    f50, f99 = percentiles(read)
    return [
        Line("exec `true` via runner", "ms", r50, r99, runner_n, "p50 <= 2 ms", r50 <= 2.0),
        Line("exec `true` via docker SDK exec_run", "ms", d50, d99, docker_n, "(reference)",
             None),
        Line("docker exec / runner exec (p50)", "x", d50 / r50, None, 1, ">= 25x",
             d50 / r50 >= 25),
        Line("read 1 KiB file via runner", "ms", f50, f99, runner_n, "p50 <= 0.5 ms",
             f50 <= 0.5),
    ]


async def bench_open(root: Path, quick: bool) -> list[Line]:
    n = 8 if quick else 20
    cold_mgr = await started(make_settings(root / "cold", 0))
    cold = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            s = await cold_mgr.open("bench")
            cold.append((time.perf_counter() - t0) * 1000)
            await cold_mgr.close(s.id, "bench")
    finally:
        await cold_mgr.shutdown()
    warm_mgr = await started(make_settings(root / "warm", 1))
    warm = []
    try:
        for _ in range(n):
            if not await warm_mgr.pool.wait_full(60):
                raise RuntimeError("the warm pool did not fill within 60 s")
            t0 = time.perf_counter()
            s = await warm_mgr.open("bench")
            warm.append((time.perf_counter() - t0) * 1000)
            await warm_mgr.close(s.id, "bench")
    finally:
        await warm_mgr.shutdown()
    c50, c99 = percentiles(cold)
    w50, w99 = percentiles(warm)
    return [
        Line("session open, cold (pool 0)", "ms", c50, c99, n, "p50 <= 400 ms", c50 <= 400),
        Line("session open, warm (pool 1)", "ms", w50, w99, n, "p50 <= 30 ms", w50 <= 30),
    ]


async def bench_memory(root: Path, client: docker.DockerClient, quick: bool) -> list[Line]:
    count = 20
    manager = await started(make_settings(root / "mem", 0))
    try:
        s = await manager.open("bench")  # first-use costs (client, imports) not counted
        await manager.close(s.id, "bench")
        before = rss_kib()
        sessions = await asyncio.gather(*(manager.open("bench") for _ in range(count)))
        await asyncio.gather(*(x.call("exec", command="true", timeout=10) for x in sessions))
        per_session = (rss_kib() - before) / count / 1024
        await asyncio.sleep(1.0)  # let the containers settle into idle
        sample = sessions[:5] if quick else sessions
        mem = await asyncio.gather(*(asyncio.to_thread(container_memory_mib, client, x)
                                     for x in sample))
    finally:
        await manager.shutdown()
    m50, m99 = percentiles(list(mem))
    return [
        Line(f"server RSS growth per session ({count} open)", "MiB", per_session, None, count,
             "(info)", None),
        Line("idle container memory (docker stats)", "MiB", m50, m99, len(mem), "(info)", None),
    ]


def render(lines: list[Line]) -> str:
    rows = [("measure", "p50", "p99", "n", "target", "result")]
    for ln in lines:
        fmt = "{:.2f}" if ln.p50 < 100 else "{:.0f}"
        p99 = "" if ln.p99 is None else fmt.format(ln.p99) + f" {ln.unit}"
        rows.append((ln.name, fmt.format(ln.p50) + f" {ln.unit}", p99, str(ln.n), ln.target,
                     ln.verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = []
    for i, r in enumerate(rows):
        text.append("  ".join(c.ljust(w) if j in (0, 4) else c.rjust(w)
                              for j, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 10 s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    client = docker.from_env()
    root = Path(tempfile.mkdtemp(prefix="coderx-bench-"))
    try:
        lines = await bench_calls(root, client, args.quick)
        lines += await bench_open(root, args.quick)
        lines += await bench_memory(root, client, args.quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        client.close()
    if args.json:
        print(json.dumps({"quick": args.quick, "docker_exec": "docker SDK exec_run",
                          "results": [asdict(ln) | {"result": ln.verdict} for ln in lines]},
                         indent=2))
    else:
        print(render(lines))
        print("\n(docker exec measured with the Docker SDK's exec_run, one new exec per call)")
    return 1 if any(ln.ok is False for ln in lines) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
