#!/usr/bin/env python3
"""Many agents on one HTTP server: N clients, N managed tokens, N sessions.

Half of the agents work in their own project (``bind``), the other half in ``worktree``
mode on one shared repository. Each loops write/read/edit/grep/run_command on its own
marker file and checks that it only ever sees its own markers and outputs, and that no
edit was lost (a counter edited once per loop must end at the number of loops).

    python bench/bench_load.py [--agents 20] [--seconds 60] [--json]

Prints aggregate calls/s, p50/p99 per tool, the server's RSS and the total memory of the
sandbox containers, against the targets of issue #9 (≥ 300 calls/s, file-tool p99 < 100 ms,
RSS < 300 MiB on the 2-core development VM). Exit status 1 on an error, a leak or a lost
edit. Needs Docker and an up-to-date sandbox image (``CODERX_IMAGE`` picks another tag).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastmcp import Client

from coderx_mcp.principals import PrincipalPolicy, TokenStore
from coderx_mcp.sandbox.instance import LABEL_PID

SANDBOX_UID = 1000
FILE_TOOLS = ("read_file", "write_file", "edit_file", "grep")


@dataclass
class AgentSpec:
    """One agent: its token, where it works and how."""

    name: str
    token: str
    workspace: Path
    mode: str  # bind or worktree


@dataclass
class LoadReport:
    """What a run measured."""

    seconds: float
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    lost_edits: list[str] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        per_tool = {}
        for tool, values in sorted(self.latency.items()):
            v = sorted(values)
            per_tool[tool] = {"n": len(v), "p50_ms": round(v[len(v) // 2], 1),
                              "p99_ms": round(v[min(len(v) - 1, int(len(v) * 0.99))], 1)}
        return {"calls": self.calls, "calls_per_s": round(self.calls / self.seconds, 1),
                "errors": self.errors[:10], "leaks": self.leaks[:10],
                "lost_edits": self.lost_edits[:10], "per_tool": per_tool}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def prepare(root: Path, agents: int, tokens: Path) -> list[AgentSpec]:
    """Projects, one shared repository and a managed token per agent (half in worktree
    mode on the repository, each token rooted where its agent works)."""
    store = TokenStore(tokens)
    repo = root / "shared-repo"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("shared\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "init")
    specs = []
    for i in range(agents):
        name = f"agent{i:02d}"
        if i % 2:
            ws, mode = repo, "worktree"
        else:
            ws, mode = root / name, "bind"
            ws.mkdir()
            (ws / "README.md").write_text(f"{name}\n")
        token = store.create(name, PrincipalPolicy(roots=(ws,)))
        specs.append(AgentSpec(name, token, ws, mode))
    subprocess.run(["chown", "-R", f"{SANDBOX_UID}:{SANDBOX_UID}", str(root)], check=True)
    return specs


def _text(result: Any) -> str:
    return "".join(getattr(x, "text", "") for x in result.content)


async def _agent(url: str, spec: AgentSpec, deadline: float, report: LoadReport) -> None:
    marker = f"MARK-{spec.name}"
    mine = f"{spec.name}.txt"

    async def call(c: Client[Any], tool: str, args: dict[str, Any]) -> Any:
        start = time.perf_counter()
        r = await c.call_tool(tool, args, raise_on_error=False)
        report.latency.setdefault(tool, []).append((time.perf_counter() - start) * 1000)
        report.calls += 1
        if r.is_error:
            report.errors.append(f"{spec.name} {tool}: {_text(r)[:200]}")
        return r

    async with Client(url, auth=spec.token, timeout=120) as c:
        args: dict[str, Any] = {"workspace": str(spec.workspace)}
        if spec.mode == "worktree":
            args["mode"] = "worktree"
        opened = await call(c, "session_open", args)
        sid = opened.structured_content["session"]
        await call(c, "write_file", {"path": mine, "content": f"{marker}\ncount=0\n",
                                     "session": sid})
        loops = 0
        while time.monotonic() < deadline:
            read = await call(c, "read_file", {"path": mine, "session": sid})
            text = _text(read)
            found = re.search(r"count=(\d+)", text)
            if found is None or int(found.group(1)) != loops:
                report.lost_edits.append(f"{spec.name}: expected count={loops}, read "
                                         f"{found.group(0) if found else 'nothing'}")
                return
            await call(c, "edit_file", {"path": mine, "old_string": f"count={loops}",
                                        "new_string": f"count={loops + 1}", "session": sid})
            loops += 1
            grep = await call(c, "grep", {"pattern": "MARK-", "session": sid,
                                          "output_mode": "content"})
            seen = set(re.findall(r"MARK-agent\d+", _text(grep)))
            if seen != {marker}:
                report.leaks.append(f"{spec.name} saw {sorted(seen)} in grep")
            ran = await call(c, "run_command", {"command": f"cat {mine}; ls", "session": sid})
            out = _text(ran)
            others = set(re.findall(r"agent\d+", out)) - {spec.name}
            if others:
                report.leaks.append(f"{spec.name} saw {sorted(others)} in run_command")
        await call(c, "session_close", {"session": sid, "keep": False})


async def run_agents(url: str, specs: list[AgentSpec], seconds: float) -> LoadReport:
    """Run every agent for ``seconds`` at once."""
    report = LoadReport(seconds=seconds)
    deadline = time.monotonic() + seconds
    results = await asyncio.gather(*(_agent(url, s, deadline, report) for s in specs),
                                   return_exceptions=True)
    report.errors += [f"{s.name}: {type(r).__name__}: {r}" for s, r in zip(specs, results,
                                                                             strict=True)
                      if isinstance(r, BaseException)]
    return report


def rss_mib(pid: int) -> float:
    """VmRSS of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def containers_mib(pid: int) -> float:
    """Memory of the sandbox containers of a server process (usage minus page cache)."""
    import docker
    import docker.errors

    client = docker.from_env()
    total = 0
    for c in client.containers.list(filters={"label": f"{LABEL_PID}={pid}"}):
        try:
            mem = c.stats(stream=False, one_shot=True)["memory_stats"]
        except (ValueError, docker.errors.NotFound):  # the container went meanwhile
            continue
        detail = mem.get("stats", {})
        total += mem.get("usage", 0) - detail.get("inactive_file", detail.get("cache", 0))
    client.close()
    return total / (1 << 20)


async def _measure(url: str, pid: int, specs: list[AgentSpec], seconds: float
                   ) -> tuple[LoadReport, float]:
    """Run the agents; the containers' memory is sampled half-way through."""
    async def sample() -> float:
        await asyncio.sleep(seconds / 2)
        return await asyncio.to_thread(containers_mib, pid)

    sampler = asyncio.ensure_future(sample())
    report = await run_agents(url, specs, seconds)
    return report, await sampler


def _serve_and_run(agents: int, seconds: float, profile: Path | None = None
                   ) -> tuple[dict[str, Any], bool]:
    with tempfile.TemporaryDirectory(prefix="coderx-load-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # worktree git runs as the sandbox user, who must reach the repo
        state = root / "state"
        specs = prepare(root / "work", agents, state / "tokens.json")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "CODERX_STATE_DIR": str(state), "CODERX_DATA_DIR": str(root / "d"),
               "CODERX_MAX_SESSIONS": str(agents + 8), "CODERX_POOL_SIZE": "0",
               "CODERX_LOG_LEVEL": "warning"}
        proc = subprocess.Popen([sys.executable, "-m", "coderx_mcp", "serve", "--http",
                                 "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL)
        try:
            for _ in range(200):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            # py-spy (pip install py-spy) samples the server for the whole run: collapsed
            # stacks, one line each (flamegraph.pl or speedscope read them).
            spy = None if profile is None else subprocess.Popen(
                ["py-spy", "record", "--pid", str(proc.pid), "--duration", str(int(seconds)),
                 "--format", "raw", "--output", str(profile), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            report, containers = asyncio.run(_measure(f"http://127.0.0.1:{port}/mcp", proc.pid,
                                                      specs, seconds))
            if spy is not None:
                spy.wait(60)
            rss = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    out = report.summary()
    out.update(agents=agents, server_rss_mib=round(rss, 1), containers_mib=round(containers, 1))
    ok = not (report.errors or report.leaks or report.lost_edits)
    return out, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", type=Path,
                        help="write py-spy's collapsed stacks of the server to this file")
    a = parser.parse_args()
    out, ok = _serve_and_run(a.agents, a.seconds, a.profile)
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['agents']} agents, {out['calls']} calls, {out['calls_per_s']} calls/s "
              "(target ≥ 300)")
        for tool, t in out["per_tool"].items():
            target = " (target p99 < 100 ms)" if tool in FILE_TOOLS else ""
            print(f"  {tool:<14} n={t['n']:<6} p50 {t['p50_ms']:>7} ms  p99 {t['p99_ms']:>7} ms"
                  f"{target}")
        print(f"server RSS {out['server_rss_mib']} MiB (target < 300), containers "
              f"{out['containers_mib']} MiB")
        for kind in ("errors", "leaks", "lost_edits"):
            for line in out[kind]:
                print(f"{kind}: {line}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
