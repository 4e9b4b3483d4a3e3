"""The call history through a real MCP client: restarts, export, clear, isolation, audit."""

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from tests.tools.conftest import call, err, ok

from coderx_mcp.config import Settings
from coderx_mcp.history import INTERRUPTED, Entry, HistoryStore, HistoryWriter, line
from coderx_mcp.keystore import open_store
from coderx_mcp.server import build_server

pytestmark = pytest.mark.docker


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coderx_mcp", "history", *args, "--db", str(db)],
                          text=True, capture_output=True, timeout=60)


async def test_history_survives_a_restart_with_outcomes(make_settings: Callable[..., Settings],
                                                        tool_workspace: Path) -> None:
    settings = make_settings()
    async with Client(build_server(settings)) as c:
        first = await ok(c, "run_command", command="echo hi; exit 3")
        await err(c, "read_file", path="missing.txt")
        await ok(c, "write_file", path="big.txt", content="x" * 5000)
    async with Client(build_server(settings)) as c:  # a new server on the same database
        got = await ok(c, "history", session=first["session"])
    entries = got["entries"]
    assert [e["tool"] for e in entries] == ["write_file", "read_file", "run_command"]
    write, read, run = entries
    assert (run["outcome"], run["exit_code"], run["args"]) == (
        "ok", 3, {"command": "echo hi; exit 3"})
    assert run["summary"].startswith("$ echo hi") and run["duration_ms"] > 0
    assert (read["outcome"], read["error_class"]) == ("error", "PathNotFound")
    assert write["args"]["content"].endswith("(5000 chars)")  # large values are cut
    assert all(e["principal"] == "local" for e in entries)


async def test_history_filters_and_export(client: Client[Any]) -> None:
    a = await ok(client, "run_command", command="true")
    await ok(client, "glob", pattern="*")
    before = time.time()
    await ok(client, "run_command", command="echo later")
    only = (await client.call_tool("history", {"tool": "run_command"})).structured_content
    assert only is not None
    assert [e["args"]["command"] for e in only["entries"]] == ["echo later", "true"]
    since = datetime.fromtimestamp(before, UTC).isoformat()
    recent = await ok(client, "history", since=since)
    assert [e["tool"] for e in recent["entries"]] == ["history", "run_command"]
    md = await ok(client, "history_export", session=a["session"])
    assert md["document"].startswith(f"# History of session {a['session']}")
    assert md["document"].count("| run_command |") == 2 and md["entries"] == 3
    js = await ok(client, "history_export", session=a["session"], format="json")
    assert [e["tool"] for e in json.loads(js["document"])] == ["run_command", "glob",
                                                               "run_command"]
    assert "ISO 8601" in await err(client, "history", since="yesterday")
    assert "no recorded calls" in await err(client, "history_export", session="s-unknown")


async def test_history_resources(client: Client[Any]) -> None:
    r = await ok(client, "run_command", command="true")
    sessions = json.loads((await client.read_resource("coderx://sessions"))[0].text)  # type: ignore[union-attr]
    assert [s["session"] for s in sessions] == [r["session"]] and sessions[0]["calls"] == 1
    hist = await client.read_resource(f"coderx://sessions/{r['session']}/history")
    assert [e["tool"] for e in json.loads(hist[0].text)] == ["run_command"]  # type: ignore[union-attr]


async def test_is07_other_principals_entries_stay_hidden(
        make_settings: Callable[..., Settings], tool_workspace: Path) -> None:
    settings = make_settings()
    assert settings.history_path is not None
    store = HistoryStore(settings.history_path)
    store.add([Entry(ts=time.time(), principal="principal:bob", session="s-bob", tool="run_command",
                     args={"command": "bob's"}, outcome="ok")])
    store.close()
    async with Client(build_server(settings)) as c:
        assert (await ok(c, "history"))["entries"] == []
        assert (await ok(c, "history", session="s-bob"))["entries"] == []
        listed = await c.read_resource("coderx://sessions")
        assert json.loads(listed[0].text) == []  # type: ignore[union-attr]
        assert "no recorded calls" in await err(c, "history_export", session="s-bob")
    assert settings.history_path.stat().st_mode & 0o777 == 0o600


async def test_grants_are_audited_and_history_is_redacted(
        make_settings: Callable[..., Settings], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODERX_KEY_PASSPHRASE", "pp")
    secret = "hist-secret-value-777"
    open_store(tmp_path / "k.enc").set("TOKEN", secret)
    async with Client(build_server(make_settings(key_file=tmp_path / "k.enc"))) as c:
        await ok(c, "keys_grant", names=["TOKEN"])
        await call(c, "run_command", command=f"echo {secret}")
        await ok(c, "keys_revoke", names=["TOKEN"])
        got = await ok(c, "history", limit=10)
    text = json.dumps(got)
    assert secret not in text and "[redacted:TOKEN]" in text
    audits = [e["summary"] for e in got["entries"] if e["kind"] == "audit"]
    assert audits == ["revoked TOKEN", "granted TOKEN"]


async def test_cli_history_list_show_export_clear(client: Client[Any],
                                                  make_settings: Callable[..., Settings]) -> None:
    r = await ok(client, "run_command", command="echo cli")
    await ok(client, "history")  # flushes the queue
    db = make_settings().history_path
    sid = r["session"]
    assert sid in _cli(db, "list").stdout
    shown = _cli(db, "show", sid).stdout
    assert "[local]" in shown and "run_command" in shown
    exported = json.loads(_cli(db, "export", sid, "--format", "json").stdout)
    assert exported[0]["args"] == {"command": "echo cli"}
    assert "before" in _cli(db, "clear", "--before", "not-a-date").stderr
    kept = _cli(db, "clear", "--before", "2000-01-01")
    assert "deleted 0" in kept.stderr
    gone = _cli(db, "clear", "--session", sid)
    assert gone.returncode == 0 and "deleted 1" in gone.stderr
    assert _cli(db, "show", sid).stdout == ""


def test_retention_by_age_and_size(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    now = time.time()
    old = [Entry(ts=now - 40 * 86400, principal="p", session="s", tool="t", outcome="ok")]
    new = [Entry(ts=now - i, principal="p", session="s", tool="t", outcome="ok",
                 summary="y" * 300) for i in range(3000)]
    store.add(old + new)
    assert store.prune(max_age_days=30, max_bytes=1 << 30) == 1
    store.prune(max_age_days=30, max_bytes=256 << 10)
    left = store.query("p", limit=10_000)
    assert 0 < len(left) < 3000 and left[0].ts == max(e.ts for e in new)
    store.close()


async def test_cr02_call_cut_short_by_a_dead_server_is_recorded_interrupted(
        tmp_path: Path) -> None:
    """A call's start is written when it outlives a batch; a server that dies before its
    end leaves that record, and the next server records the call as interrupted. Calls
    that end, and calls of servers still running, are left alone."""
    db = tmp_path / "h.sqlite3"
    first = HistoryWriter(HistoryStore(db), 30, 1 << 30, owner={"who": "dead"})
    call = Entry(ts=time.time(), principal="p", session=None, tool="run_command",
                 args={"command": "sleep 60"}, outcome="interrupted", summary=INTERRUPTED)
    first.started("k1", call, session=lambda: "s-1")
    first.started("k2", call.model_copy(update={"args": {"command": "true"}}))
    await first.flush()
    first.record(call.model_copy(update={"outcome": "ok", "args": {"command": "true"}}), "k2")
    await first.flush()  # k2 ended: its in-flight record goes; k1 stays (no close: a kill)
    live = HistoryWriter(HistoryStore(db), 30, 1 << 30, owner={"who": "live"})
    live.started("k3", call.model_copy(update={"args": {"command": "sleep 5"}}))
    await live.flush()

    after = HistoryWriter(HistoryStore(db), 30, 1 << 30,
                          gone=lambda owner: owner.get("who") == "dead")
    after.start()
    for _ in range(100):  # the writer records them first thing, off the caller's path
        entries = after.store.query("p")
        if len(entries) == 2:
            break
        await asyncio.sleep(0.05)
    assert [(e.args["command"], e.outcome, e.session) for e in entries] == [
        ("sleep 60", "interrupted", "s-1"), ("true", "ok", None)]
    assert "INTERRUPTED" in line(entries[0])
    await after.close()
    again = HistoryStore(db)
    assert again.recover(lambda owner: True) == 1  # only the live server's call was left
    again.close()
