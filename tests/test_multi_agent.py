"""Many principals on one HTTP server: managed tokens, per-principal roots and quotas,
ownership of sessions and outputs, bounded requests, health. Real server subprocesses,
real tokens made by the CLI, real Docker sandboxes."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from tests.conftest import CLI, MCP_HEADERS, MakeServer, child_env, chown_tree, facts

pytestmark = pytest.mark.docker
HEAVY_CLIENT = """
import asyncio, json, sys
from fastmcp import Client

async def main():
    async with Client(sys.argv[1], auth=sys.argv[2]) as c:
        junk = {f"k{i}": i for i in range(180_000)}  # ~3 MB of unknown keys
        r = await c.call_tool("read_file", {"path": "x", **junk}, raise_on_error=False)
        print(json.dumps({"is_error": r.is_error, "text": r.content[0].text}))

asyncio.run(main())
"""


def project(root: Path, name: str, marker: str) -> Path:
    """A project directory the sandbox user owns, holding one marker file."""
    d = root / name
    d.mkdir(parents=True)
    (d / "marker.txt").write_text(marker + "\n")
    chown_tree(d)
    return d


def text(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def test_tokens_create_list_revoke_without_restart(
        make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server()
    alice = server.create("alice")
    assert alice.startswith("cx_") and len(alice) > 40
    path = server.tmp / "state" / "tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert alice not in path.read_text()
    again = server.tokens("create", "alice")
    assert again.returncode == 1 and "exists" in again.stderr
    await server.start()
    with pytest.raises(Exception):  # noqa: B017 - the client's own error for a 401
        async with Client(server.url, auth=alice) as c:
            assert facts(await c.call_tool("run_command", {"command": "echo hi"}))["stdout"] \
                == "hi\n"
            listed = server.tokens("list")
            assert listed.returncode == 0 and "alice" in listed.stdout
            assert alice not in listed.stdout and "last used 20" in listed.stdout
            assert server.tokens("revoke", "alice").returncode == 0
            await c.call_tool("run_command", {"command": "echo again"})  # same connection
    assert "authentication failed" in server.log.read_text()
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    status, headers, _ = await asyncio.to_thread(
        server.request, "POST", "/mcp", body, {**MCP_HEADERS, "Authorization": f"Bearer {alice}"})
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    unknown = server.tokens("revoke", "nobody")
    assert unknown.returncode == 1 and "no token named 'nobody'" in unknown.stderr


async def test_ta06_failed_authentications_logged_without_token_and_rate_limited(
        make_server: MakeServer) -> None:
    server = make_server(CODERX_AUTH_FAILURES_PER_MINUTE="3")
    good = server.create("alice")
    await server.start()
    wrong = "cx_wrong-token-0123456789abcdefghijklmnop"
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    statuses = []
    for _ in range(4):
        status, _, _ = await asyncio.to_thread(
            server.request, "POST", "/mcp", body,
            {**MCP_HEADERS, "Authorization": f"Bearer {wrong}"})
        statuses.append(status)
    assert statuses == [401, 401, 401, 429]
    # The limited address is refused even with a good token until the minute has passed.
    status, headers, _ = await asyncio.to_thread(
        server.request, "POST", "/mcp", body, {**MCP_HEADERS, "Authorization": f"Bearer {good}"})
    assert status == 429 and headers["retry-after"] == "60"
    log = server.log.read_text()
    assert log.count("authentication failed") == 3 and "127.0.0.1" in log
    assert wrong not in log and good not in log
    assert not list((server.tmp / "data").glob("scratch/*"))  # nothing was created


async def test_principal_roots_and_ownership_of_sessions_and_outputs(
        make_server: MakeServer, tmp_path: Path) -> None:
    a_proj = project(tmp_path / "a", "proj", "alice-marker")
    b_proj = project(tmp_path / "b", "proj", "bob-marker")
    server = make_server(CODERX_ALLOW_NETWORK="true")  # the token, not the server, says no
    alice = server.create("alice", "--roots", str(a_proj), "--cpus", "0.5", "--memory", "256m",
                          "--no-network")
    bob = server.create("bob", "--roots", str(b_proj))
    await server.start()
    async with Client(server.url, auth=alice) as a, Client(server.url, auth=bob) as b:
        ra = await a.call_tool("read_file", {"path": "marker.txt"})
        rb = await b.call_tool("read_file", {"path": "marker.txt"})
        assert "alice-marker" in text(ra) and "bob-marker" in text(rb)
        info = (await a.call_tool("session_info", {})).structured_content
        assert info is not None
        assert info["info"]["limits"]["cpus"] == 0.5 and info["info"]["limits"]["memory"] == "256m"
        no_net = await a.call_tool("session_open", {"network": "bridge"}, raise_on_error=False)
        assert no_net.is_error and "your token does not allow network" in text(no_net)
        health = (await b.call_tool("health", {})).structured_content
        assert health is not None and health["workspace_roots"] == [str(b_proj)]
        assert health["open_sessions"] == 1 and str(a_proj) not in json.dumps(health)
        refused = await b.call_tool("session_open", {"workspace": str(a_proj)},
                                    raise_on_error=False)
        assert refused.is_error and "outside" in text(refused).lower(), text(refused)
        run = await a.call_tool("run_command", {"command": "seq 1 50000"})
        assert facts(run) is not None
        out_id, sid = facts(run)["output_id"], facts(run)["session"]
        assert out_id
        stolen = await b.call_tool("read_output", {"output_id": out_id},
                                   raise_on_error=False)
        assert stolen.is_error and "alice" not in text(stolen)
        foreign = await b.call_tool("read_output", {"output_id": out_id, "session": sid},
                                    raise_on_error=False)
        assert foreign.is_error and "no open session" in text(foreign)


async def test_one_principal_cannot_fill_the_server(make_server: MakeServer) -> None:
    # The reproduced bug: one principal held all 16 slots and locked everyone out.
    server = make_server(CODERX_MAX_SESSIONS="4", CODERX_RESERVED_SESSIONS="1",
                         CODERX_MAX_SESSIONS_PER_PRINCIPAL="10")
    greedy, other = server.create("greedy"), server.create("other")
    capped = server.create("capped", "--max-sessions", "1")
    await server.start()
    async with Client(server.url, auth=greedy) as g, Client(server.url, auth=other) as o, \
            Client(server.url, auth=capped) as c:
        await g.call_tool("session_open", {})
        await g.call_tool("session_open", {})
        await g.call_tool("session_open", {})
        full = await g.call_tool("session_open", {}, raise_on_error=False)
        assert full.is_error and "other principals" in text(full), text(full)
        ran = await o.call_tool("run_command", {"command": "echo mine"})
        assert facts(ran) is not None and facts(ran)["stdout"] == "mine\n"
        await g.call_tool("session_close", {"session": (await g.call_tool(
            "session_list", {})).structured_content["sessions"][0]["session"]})  # type: ignore[index]
        await c.call_tool("session_open", {})
        over = await c.call_tool("session_open", {}, raise_on_error=False)
        assert over.is_error and "your maximum" in text(over), text(over)


async def test_huge_arguments_refused_before_validation_and_body_capped(
        make_server: MakeServer) -> None:
    server = make_server(CODERX_MAX_REQUEST_BYTES=str(4 << 20))
    alice, bob = server.create("alice"), server.create("bob")
    await server.start()
    # The heavy client runs in its own process: encoding 3 MB of JSON would otherwise stall
    # this test's event loop and be mistaken for the server's delay.
    heavy = subprocess.Popen(  # noqa: ASYNC220 - polled below while the light calls run
        [sys.executable, "-c", HEAVY_CLIENT, server.url, alice], stdout=subprocess.PIPE,
        text=True)
    waits = []
    async with Client(server.url, auth=bob) as b:
        await b.call_tool("run_command", {"command": "true"})
        while heavy.poll() is None:
            start = time.perf_counter()
            await b.call_tool("glob", {"pattern": "*"})
            waits.append(time.perf_counter() - start)
    out = json.loads(heavy.communicate()[0])
    assert out["is_error"] and "more than 10000 keys" in out["text"], out
    assert waits and max(waits) < 1.0, f"another principal waited {max(waits):.2f} s"
    big = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "pad": "' + b"x" * (5 << 20) + b'"}'
    status, _, _ = await asyncio.to_thread(
        server.request, "POST", "/mcp", big, {**MCP_HEADERS, "Authorization": f"Bearer {alice}"})
    assert status == 413


async def test_healthz_status_for_anyone_details_for_a_token(
        make_server: MakeServer) -> None:
    server = make_server()
    admin = server.create("ops", "--admin")
    user = server.create("dev")
    await server.start()
    async with Client(server.url, auth=user) as c:
        await c.call_tool("run_command", {"command": "true"})
    status, _, body = await asyncio.to_thread(server.request, "GET", "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, headers, _ = await asyncio.to_thread(server.request, "GET", "/healthz?verbose")
    assert status == 401 and "www-authenticate" in headers
    status, _, body = await asyncio.to_thread(
        server.request, "GET", "/healthz?verbose", None, {"Authorization": f"Bearer {user}"})
    mine = json.loads(body)
    assert status == 200 and mine["sessions"] == 1 and mine["sessions_by_principal"] is None
    assert mine["image_current"] is True and mine["rss_bytes"] > 0
    assert mine["latency_ms"]["run_command"]["n"] == 1
    assert isinstance(mine["history_queue"], int)
    status, _, body = await asyncio.to_thread(
        server.request, "GET", "/healthz?verbose", None, {"Authorization": f"Bearer {admin}"})
    assert json.loads(body)["sessions_by_principal"] == {"dev": 1}


def test_tokens_cli_refuses_bad_input(tmp_path: Path) -> None:
    env = child_env(CODERX_STATE_DIR=str(tmp_path / "state"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "tokens", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    bad_name = run("create", "../evil")
    assert bad_name.returncode == 1 and "not a valid principal name" in bad_name.stderr
    missing = run("create", "x", "--roots", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "no such directory" in missing.stderr
    memory = run("create", "x", "--memory", "lots")
    assert memory.returncode == 1 and "--memory" in memory.stderr
    assert not (tmp_path / "state" / "tokens.json").exists()


async def test_json_logs_carry_principal_request_and_duration(make_server: MakeServer) -> None:
    server = make_server()
    token = server.create("alice")
    await server.start("--log-format", "json")
    async with Client(server.url, auth=token) as c:
        await c.call_tool("run_command", {"command": "echo secret-output"})
    server.stop()
    server.proc = None
    events = [json.loads(line) for line in server.log.read_text().splitlines()
              if line.startswith("{")]
    (end,) = [e for e in events if e.get("event") == "tool call ended"]
    assert end["tool"] == "run_command" and end["principal"] == "principal:alice"
    assert end["ok"] is True and end["duration_ms"] > 0 and end["request_id"]
    assert end.get("session_id", "").startswith("s-")
    assert any(e.get("event") == "tool call started" for e in events)
    assert token not in server.log.read_text()


async def test_a_principal_commands_in_flight_are_capped(make_server: MakeServer) -> None:
    server = make_server()
    one = server.create("one", "--max-commands", "1")
    other = server.create("other", "--max-commands", "1")
    await server.start()
    async with Client(server.url, auth=one) as a, Client(server.url, auth=other) as b:
        await a.call_tool("run_command", {"command": "true"})
        await b.call_tool("run_command", {"command": "true"})
        slow = asyncio.ensure_future(a.call_tool("run_command", {"command": "sleep 3"}))
        await asyncio.sleep(1.0)
        refused = await a.call_tool("run_command", {"command": "true"}, raise_on_error=False)
        assert refused.is_error and "1 commands running, your maximum" in text(refused)
        assert not (await b.call_tool("run_command", {"command": "true"})).is_error
        assert not (await a.call_tool("glob", {"pattern": "*"})).is_error  # files still go
        assert not (await slow).is_error
        assert not (await a.call_tool("run_command", {"command": "true"})).is_error
