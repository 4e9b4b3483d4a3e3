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
    """What a run measured: ``calls`` counts the loop's calls, made while every agent had
    its session open (opening and closing sessions are timed, not counted)."""

    seconds: float
    calls: int = 0
    loop_started: float = 0.0
    loop_ended: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    containers_mib: float = 0.0
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
        elapsed = max(self.loop_ended - self.loop_started, 1e-9)
        per_call = {k: round(v * 1000 / max(self.calls, 1), 2) for k, v in self.cpu.items()}
        return {"calls": self.calls, "calls_per_s": round(self.calls / elapsed, 1),
                "loop_seconds": round(elapsed, 1), "cpu_ms_per_call": per_call,
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


class Start:
    """The loop starts when every agent has its session open, and lasts ``seconds``."""

    def __init__(self, agents: int, seconds: float) -> None:
        self.waiting, self.seconds = agents, seconds
        self.go = asyncio.Event()
        self.deadline = 0.0

    async def ready(self) -> float:
        """Wait for the others; returns the loop's deadline."""
        self.waiting -= 1
        if self.waiting == 0:
            self.deadline = time.monotonic() + self.seconds
            self.go.set()
        await self.go.wait()
        return self.deadline

    def gave_up(self) -> None:
        """An agent failed before its loop: do not keep the others waiting for it."""
        self.waiting -= 1
        if self.waiting == 0 and not self.go.is_set():
            self.deadline = time.monotonic() + self.seconds
            self.go.set()


async def _agent(url: str, spec: AgentSpec, start: Start, report: LoadReport) -> None:
    try:
        await _work(url, spec, start, report)
    finally:
        if not start.go.is_set() and start.waiting > 0:
            start.gave_up()


async def _work(url: str, spec: AgentSpec, start: Start, report: LoadReport) -> None:
    marker = f"MARK-{spec.name}"
    mine = f"{spec.name}.txt"
    in_loop = False

    async def call(c: Client[Any], tool: str, args: dict[str, Any]) -> Any:
        began = time.perf_counter()
        r = await c.call_tool(tool, args, raise_on_error=False)
        report.latency.setdefault(tool, []).append((time.perf_counter() - began) * 1000)
        report.calls += in_loop
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
        deadline = await start.ready()
        in_loop = True
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
        in_loop = False
        await call(c, "session_close", {"session": sid, "keep": False})


async def run_agents(url: str, specs: list[AgentSpec], seconds: float,
                     server_pid: int | None = None) -> LoadReport:
    """Open every agent's session, run their loops together for ``seconds``, close.

    With ``server_pid``, the CPU time each part of the machine spent during the loop is
    recorded: the server, this load generator, the sandboxes (their cgroups) and Docker's
    daemons.
    """
    report = LoadReport(seconds=seconds)
    start = Start(len(specs), seconds)

    async def account() -> None:
        await start.go.wait()
        ids = [] if server_pid is None else await asyncio.to_thread(sandbox_ids, server_pid)
        report.loop_started, before = time.monotonic(), cpu_seconds(server_pid, ids)
        await asyncio.sleep(max(0.0, start.deadline - time.monotonic()) / 2)
        if server_pid is not None:  # the sandboxes' memory, half-way through the loop
            report.containers_mib = await asyncio.to_thread(containers_mib, server_pid)
        await asyncio.sleep(max(0.0, start.deadline - time.monotonic()))
        report.loop_ended, after = time.monotonic(), cpu_seconds(server_pid, ids)
        report.cpu = {k: after[k] - before.get(k, 0.0) for k in after}

    accounting = asyncio.ensure_future(account())
    results = await asyncio.gather(*(_agent(url, s, start, report) for s in specs),
                                   return_exceptions=True)
    await accounting
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


_DAEMONS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-proxy")


def _proc_cpu(pid: int | str) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cgroup_cpu(container_id: str) -> float:
    """CPU seconds of one container's cgroup (v1 cpuacct or v2 cpu.stat)."""
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage",
                 f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat",
                 f"/sys/fs/cgroup/docker/{container_id}/cpu.stat"):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if path.endswith("cpuacct.usage"):
            return int(text) / 1e9
        return int(text.split("usage_usec", 1)[1].split()[0]) / 1e6
    return 0.0


def sandbox_ids(server_pid: int) -> list[str]:
    """The full ids of a server's sandbox containers."""
    import docker

    client = docker.from_env()
    try:
        found = client.containers.list(filters={"label": f"{LABEL_PID}={server_pid}"})
        return [c.id for c in found]
    finally:
        client.close()


def cpu_seconds(server_pid: int | None, sandboxes: list[str]) -> dict[str, float]:
    """CPU seconds so far of the server, this process, the server's sandboxes (their
    cgroups) and Docker's daemons."""
    if server_pid is None:
        return {}
    t = os.times()
    out = {"server": _proc_cpu(server_pid), "load generator": t.user + t.system,
           "sandboxes": sum(_cgroup_cpu(i) for i in sandboxes), "docker daemons": 0.0}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if Path(f"/proc/{name}/comm").read_text().strip() in _DAEMONS:
                out["docker daemons"] += _proc_cpu(name)
        except OSError:
            continue
    return out


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
            report = asyncio.run(run_agents(f"http://127.0.0.1:{port}/mcp", specs, seconds,
                                            server_pid=proc.pid))
            if spy is not None:
                spy.wait(60)
            rss = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    out = report.summary()
    out.update(agents=agents, server_rss_mib=round(rss, 1),
               containers_mib=round(report.containers_mib, 1))
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
        print(f"{out['agents']} agents, {out['calls']} calls in {out['loop_seconds']} s of "
              f"loop, {out['calls_per_s']} calls/s (target ≥ 300)")
        cpu = out["cpu_ms_per_call"]
        if cpu:
            cores = os.cpu_count() or 1
            total = sum(cpu.values())
            served = total - cpu["load generator"]
            print("CPU per call: " + ", ".join(f"{k} {v} ms" for k, v in cpu.items())
                  + f"; total {total:.2f} ms: {cores} cores allow "
                  f"{cores * 1000 / max(total, 1e-9):.0f} calls/s at that cost, "
                  f"{cores * 1000 / max(served, 1e-9):.0f} with the agents on other machines")
            print(f"  (agents that each wait for their reply see {out['agents']} / calls/s "
                  f"= {out['agents'] * 1000 / max(out['calls_per_s'], 1e-9):.0f} ms per call "
                  "on average: latency follows throughput)")
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
