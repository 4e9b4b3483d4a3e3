"""Shell tools through the real MCP client on a Docker-backed server."""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.client import CallToolResult
from tests.tools.conftest import call, err, facts, ok

from coderx_mcp.config import Settings
from coderx_mcp.server import build_server

pytestmark = pytest.mark.docker

CAP = 30000  # Settings.output_cap default








def text_of(r: CallToolResult) -> str:
    return r.content[0].text  # type: ignore[union-attr]


async def run(c: Client[Any], command: str, **args: Any) -> dict[str, Any]:
    return await ok(c, "run_command", command=command, **args)


async def processes(c: Client[Any], prefix: str, **args: Any) -> list[str]:
    """Command lines of the sandbox's processes that start with ``prefix``.

    The container's own ``sleep infinity`` (its PID 1 child) never matches ``sleep <n>``.
    """
    r = await run(c, "ps -eo args=", **args)
    return [ln for ln in r["stdout"].splitlines() if ln.startswith(prefix)]


# -- run_command basics ---------------------------------------------------------------


async def test_exit_code_and_streams_are_separate(client: Client[Any]) -> None:
    r = await call(client, "run_command", command="echo out; echo err >&2; exit 3")
    assert not r.is_error
    s = facts(r)
    assert s is not None
    assert (s["exit_code"], s["stdout"], s["stderr"]) == (3, "out\n", "err\n")
    assert s["signal"] is None and not s["timed_out"] and not s["backgrounded"]
    assert s["cwd"] == "/workspace" and s["output_id"]
    text = text_of(r)
    assert text.startswith("$ echo out; echo err >&2; exit 3\nout\n[stderr]\nerr\n")
    assert text.splitlines()[-1].startswith("exit 3 · ")
    assert text.endswith("cwd /workspace")
    assert (await run(client, "true"))["exit_code"] == 0


async def test_cd_and_export_persist_in_session_not_into_another(client: Client[Any]) -> None:
    await run(client, "mkdir -p sub && cd sub && export FOO=bar")
    r = await run(client, 'pwd; echo "[$FOO]"')
    assert r["stdout"] == "/workspace/sub\n[bar]\n" and r["cwd"] == "/workspace/sub"
    other = (await ok(client, "session_open"))["session"]
    r = await run(client, 'pwd; echo "[$FOO]"', session=other)
    assert r["stdout"] == "/workspace\n[]\n"


async def test_cwd_argument_and_bad_cwd(client: Client[Any]) -> None:
    await run(client, "mkdir -p a/b")
    assert (await run(client, "pwd", cwd="a/b"))["stdout"] == "/workspace/a/b\n"
    r = await run(client, "pwd", cwd="/workspace/missing")
    assert r["exit_code"] == 1 and "missing" in r["stderr"]


async def test_timeout_above_600_is_refused_clearly(client: Client[Any]) -> None:
    text = await err(client, "run_command", command="true", timeout=601)
    assert "timeout" in text and "600" in text


async def test_ce03_timeout_kills_the_process_group(client: Client[Any]) -> None:
    t0 = time.monotonic()
    r = await call(client, "run_command", command="echo begun; sleep 300 & sleep 300",
                   timeout=2)
    assert time.monotonic() - t0 < 5
    s = facts(r)
    assert s is not None and s["timed_out"] and s["exit_code"] is None
    assert s["stdout"] == "begun\n"
    assert "TIMED OUT after 2 s (process group killed)" in text_of(r)
    assert await processes(client, "sleep 300") == []
    assert (await run(client, "echo next"))["stdout"] == "next\n"


async def test_ce04_background_child_does_not_hold_the_call(client: Client[Any]) -> None:
    t0 = time.monotonic()
    r = await run(client, "sleep 1000 & echo started")
    assert time.monotonic() - t0 < 3
    assert r["stdout"] == "started\n" and r["exit_code"] == 0
    # Adopted as a background process (not killed, not holding the call); it ends with
    # process_kill or with the session.
    assert r["left_running"] and await processes(client, "sleep 1000") == ["sleep 1000"]
    await ok(client, "process_kill", output_id=r["output_id"])
    assert await processes(client, "sleep 1000") == []


async def test_ce05_stdin_is_empty(client: Client[Any]) -> None:
    await run(client, "true")  # the session is open: only the commands are timed
    t0 = time.monotonic()
    r = await run(client, "cat; echo cat=$?; grep foo; echo grep=$?; python3; echo py=$?")
    assert time.monotonic() - t0 < 2
    assert r["stdout"] == "cat=0\ngrep=1\npy=0\n"


async def test_ce06_pagers_editors_and_prompts_do_not_hang(client: Client[Any]) -> None:
    r = await run(client, "echo hi | ${PAGER:-less}; read -p name x; echo read=$?")
    assert r["stdout"] == "hi\nread=1\n"
    r = await run(client, "git init -q r && cd r && git -c user.name=a -c user.email=a@b "
                          "commit -q --allow-empty -m one && git log --oneline | wc -l && "
                          "git -c user.name=a -c user.email=a@b commit --allow-empty; "
                          "echo commit=$?", timeout=20)
    assert r["stdout"].splitlines() == ["1", "commit=1"] and r["duration_ms"] < 10_000


async def test_ce08_binary_output_is_valid_text(client: Client[Any]) -> None:
    r = await call(client, "run_command", command="head -c 65536 /dev/urandom")
    assert not r.is_error
    text_of(r).encode("utf-8")  # no lone surrogates: valid UTF-8 on the wire
    s = facts(r)
    assert s is not None and s["exit_code"] == 0 and s["stdout_bytes"] == 65536
    assert s["truncated"]  # 64 KiB is above the 30000-byte cap
    s["stdout"].encode("utf-8")


async def test_ce10_memory_bomb_says_out_of_memory(client: Client[Any]) -> None:
    r = await call(client, "run_command", command=(
        "python3 -c 'b = bytearray(1 << 30); b[::4096] = b\"x\" * len(b[::4096])'"), timeout=30)
    s = facts(r)
    assert s is not None and s["oom_killed"], text_of(r)
    assert "killed: out of memory" in text_of(r).splitlines()[-1]
    assert (await run(client, "echo alive"))["stdout"] == "alive\n"


# -- output flood and paging ---------------------------------------------------------------


async def test_ce07_50mb_output_is_capped_and_fully_pageable(client: Client[Any]) -> None:
    lines, width = 500_000, 100
    total = lines * (width + 1) - 1  # fold ends the last line without a newline
    r = await call(client, "run_command",
                   command="head -c 50000000 /dev/zero | tr '\\0' 'a' | fold -w 100", timeout=60)
    s = facts(r)
    assert s is not None and s["exit_code"] == 0, text_of(r)
    assert s["stdout_bytes"] == total and s["truncated"]
    assert len(text_of(r)) <= 2 * CAP
    oid = s["output_id"]
    assert f"read_output(output_id={oid!r})" in s["stdout"]
    seen = 0
    offset = 0
    while True:
        page = await ok(client, "read_output", output_id=oid, byte_offset=offset, limit=1 << 20)
        assert page["offset"] == offset and page["total_bytes"] == total
        seen += len(page["text"].encode())
        if page["eof"]:
            break
        offset = page["next_offset"]
    assert seen == total
    line = "a" * width + "\n"
    for k in (0, 1, 12345, lines - 2):
        page = await ok(client, "read_output", output_id=oid, byte_offset=k * (width + 1),
                        limit=width + 1)
        assert page["text"] == line
    last = await ok(client, "read_output", output_id=oid, tail=2)
    assert last["text"] == line + line[:-1] and last["next_offset"] == total and last["eof"]


async def test_read_output_head_tail_grep_and_streams(client: Client[Any]) -> None:
    oid = (await run(client, "seq 1 1000; echo oops >&2"))["output_id"]
    head = await ok(client, "read_output", output_id=oid, head=3)
    assert head["text"] == "1\n2\n3\n" and head["next_offset"] == 6 and not head["eof"]
    tail = await ok(client, "read_output", output_id=oid, tail=2)
    assert tail["text"] == "1000\noops\n" and tail["eof"]
    out = await ok(client, "read_output", output_id=oid, tail=1, stream="stdout")
    assert out["text"] == "1000\n"
    errs = await ok(client, "read_output", output_id=oid, stream="stderr")
    assert errs["text"] == "oops\n" and errs["eof"]
    r = await call(client, "read_output", output_id=oid, grep="^99")
    g = facts(r)
    assert g is not None and g["total_matches"] == 11
    assert [m["line"] for m in g["matches"]] == [99, *range(990, 1000)]
    assert text_of(r).startswith("99:99\n990:990\n")
    assert "regular expression" in await err(client, "read_output", output_id=oid, grep="(")
    assert "at most one" in await err(client, "read_output", output_id=oid, head=1, tail=1)
    page = await call(client, "read_output", output_id=oid, limit=4)
    assert f'read_output("{oid}", byte_offset=4)' in text_of(page)


async def test_read_output_grep_cannot_hang_the_session(client: Client[Any]) -> None:
    """Catastrophic backtracking in Python's re hung the runner for good; the search now
    runs in ripgrep (linear time, the grep tool's dialect) and the session stays usable."""
    oid = (await run(client, "printf '%s!\\n' $(printf 'a%.0s' $(seq 34)); echo aaa"))[
        "output_id"]
    started = time.monotonic()
    r = await call(client, "read_output", output_id=oid, grep="^(a+)+$")
    assert not r.is_error and time.monotonic() - started < 15
    assert text_of(r).startswith("2:aaa")
    rust = await call(client, "read_output", output_id=oid, grep=r"\Aa{3}\z")
    assert "2:aaa" in text_of(rust)
    assert "Rust regex" in await err(client, "read_output", output_id=oid, grep="(?<=a)b")
    assert (await run(client, "echo alive"))["stdout"] == "alive\n"


async def test_process_list_shows_only_the_models_commands(client: Client[Any]) -> None:
    """The server's own commands (git check-ignore, rg) are not the model's processes."""
    await run(client, "git init -q . && echo x > a.txt")
    await ok(client, "list_dir")
    await ok(client, "grep", pattern="x")
    listed = await ok(client, "process_list", include_commands=True)
    commands = [p["command"] for p in listed["processes"]]
    assert commands and all(c.startswith(("git init", "echo")) for c in commands), commands


@pytest.mark.parametrize("command", ["sleep 300 &", "nohup sleep 301 >/dev/null 2>&1 &",
                                     "(sleep 303 &)", "setsid sleep 304 &",
                                     "setsid -f sleep 305 >/dev/null 2>&1"])
async def test_leftover_children_are_adopted_not_killed(client: Client[Any],
                                                        command: str) -> None:
    """`cmd &` used to die silently when the command returned; now it keeps running as a
    background process of the session, named in the reply, listed, killable."""
    r = await call(client, "run_command", command=command)
    out = facts(r)
    oid = out["output_id"]
    assert out["exit_code"] == 0 and any("sleep 30" in p for p in out["left_running"]), out
    assert f"left running in the background as {oid}" in text_of(r)
    assert "sleep 30" in (await run(client, "ps -eo args"))["stdout"]
    listed = await ok(client, "process_list")
    assert [p["running"] for p in listed["processes"] if p["output_id"] == oid] == [True]
    await ok(client, "process_kill", output_id=oid)
    assert "sleep 30" not in (await run(client, "ps -eo args"))["stdout"]


async def test_leftover_subshell_is_named_by_the_command_not_the_wrapper(
        client: Client[Any]) -> None:
    """A background subshell never execs, so /proc shows the runner's wrapper script for it:
    the reply names the command the model ran instead (CI once saw a fork before its exec)."""
    command = "{ while :; do sleep 1; done; } &"
    out = facts(await call(client, "run_command", command=command))
    assert any(p.endswith(": " + command) for p in out["left_running"]), out
    assert not any("--noprofile" in p for p in out["left_running"]), out
    await ok(client, "process_kill", output_id=out["output_id"])


async def test_background_server_output_is_readable_and_unbuffered(client: Client[Any]) -> None:
    r = await run(client, "python3 -c 'import time; time.sleep(1); print(\"serving\"); "
                          "time.sleep(60)' &")
    oid = r["output_id"]
    seen = ""
    for _ in range(20):
        seen += (await ok(client, "process_output", output_id=oid, wait=1))["text"]
        if "serving" in seen:
            break
    assert "serving" in seen  # PYTHONUNBUFFERED=1: no waiting for the exit
    assert (await run(client, "echo $PYTHONUNBUFFERED"))["stdout"] == "1\n"
    await ok(client, "process_kill", output_id=oid)


async def test_cwd_argument_is_per_call(client: Client[Any]) -> None:
    await run(client, "mkdir -p sub && cd sub")
    there = await run(client, "pwd", cwd="/etc")
    assert there["stdout"] == "/etc\n"
    assert (await run(client, "pwd"))["stdout"] == "/workspace/sub\n"


async def test_model_cannot_give_itself_network(client: Client[Any]) -> None:
    """Network is the operator's decision (--allow-network), not a tool argument."""
    text = await err(client, "session_open", network="bridge")
    assert "--allow-network" in text and "operator" in text
    await ok(client, "run_command", command="true")  # the default session
    other = (await ok(client, "session_open"))["session"]
    listed = await call(client, "session_list")
    lines = text_of(listed).split("\n")
    default = facts(listed)["session"]
    assert default != other
    assert any(line.startswith(f"session {default}") and line.endswith("(your default)")
               for line in lines)
    assert "alive yes" in text_of(listed) and "True" not in text_of(listed)


async def test_sessions_do_not_vanish_silently(make_settings: Callable[..., Settings]) -> None:
    """Running work keeps a session alive; an expired one says so (when, why, what was
    reset) on its next call, and its id says "expired", not "not found"."""
    settings = make_settings(idle_timeout_s=1.5, reaper_interval_s=0.3)
    async with Client(build_server(settings)) as c:
        first = await run(c, "cd /tmp && export X=1")
        sid = first["session"]
        job = (await ok(c, "process_start", command="sleep 1000"))["output_id"]
        await asyncio.sleep(3)
        again = await run(c, 'echo "$X"')
        assert again["session"] == sid and again["stdout"] == "1\n"  # kept alive by the job
        await ok(c, "process_kill", output_id=job)
        await asyncio.sleep(3)
        text = await err(c, "run_command", command="pwd")
        assert f"session {sid} expired at" in text and "idle for more than 2 s" in text
        assert "cwd" in text and "background processes" in text and "repeat" in text
        fresh = await run(c, "pwd")
        assert fresh["session"] != sid and fresh["stdout"] == "/workspace\n"
        named = await err(c, "run_command", command="true", session=sid)
        assert "expired" in named and "not found" not in named and "no open" not in named


async def test_pip_install_editable_works_in_the_workspace(client: Client[Any]) -> None:
    """The obvious install path works: pip lands in the user site (the tool venv is
    read-only) and the image's python and pytest import the project."""
    await run(client, "mkdir -p demo && echo 'X = 42' > demo/__init__.py && printf '"
                      "[project]\\nname = \"demo\"\\nversion = \"0.1\"\\n[tool.setuptools]"
                      "\\npackages = [\"demo\"]\\n' > pyproject.toml")
    r = await run(client, "pip install --no-build-isolation -e .", timeout=300)
    assert r["exit_code"] == 0, r["stdout"] + r["stderr"]
    r = await run(client, "cd /tmp && python3 -c 'import demo; print(demo.X)' && "
                          "echo 'import demo' > /tmp/test_d.py && "
                          "echo 'def test_x(): assert demo.X == 42' >> /tmp/test_d.py && "
                          "pytest -q -p no:cacheprovider /tmp/test_d.py")
    assert r["stdout"].startswith("42\n") and r["exit_code"] == 0, r["stdout"] + r["stderr"]


async def test_no_network_fails_fast_with_a_clear_line(client: Client[Any]) -> None:
    t0 = time.monotonic()
    r = await call(client, "run_command", command="pip install requests", timeout=120)
    assert time.monotonic() - t0 < 8 and facts(r)["exit_code"] != 0
    assert "this session has no network" in text_of(r) and "--allow-network" in text_of(r)


async def test_unknown_output_id_points_to_process_list(client: Client[Any]) -> None:
    for tool in ("read_output", "process_output", "process_kill"):
        text = await err(client, tool, output_id="deadbeef")
        assert "deadbeef" in text and "process_list" in text


# -- backgrounding, progress, cancellation ---------------------------------------------------


async def test_command_outliving_return_after_continues_in_background(
        client: Client[Any]) -> None:
    t0 = time.monotonic()
    r = await call(client, "run_command", command="echo first; sleep 3; echo second",
                   return_after=1)
    assert time.monotonic() - t0 < 2.5
    s = facts(r)
    assert s is not None and s["backgrounded"] and s["exit_code"] is None
    assert s["stdout"] == "first\n" and s["next_offset"] == 6
    oid = s["output_id"]
    assert f"still running in the background as {oid}" in text_of(r)
    assert f'process_output("{oid}")' in text_of(r)
    listed = await ok(client, "process_list")
    assert [p["running"] for p in listed["processes"] if p["output_id"] == oid] == [True]
    t0 = time.monotonic()
    # No since_offset: the server remembers what was shown (run_command showed "first").
    out = await ok(client, "process_output", output_id=oid, wait=10)
    assert out["text"] == "second\n" and time.monotonic() - t0 < 4
    done = await ok(client, "process_output", output_id=oid, wait=10)
    if done["running"]:
        done = await ok(client, "process_output", output_id=oid, wait=10)
    assert done["text"] == "" and not done["running"] and done["exit_code"] == 0
    again = await ok(client, "process_output", output_id=oid, since_offset=0)
    assert again["text"] == "first\nsecond\n"


async def test_progress_notifications_carry_the_latest_output(client: Client[Any]) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    r = await client.call_tool(
        "run_command", {"command": "for i in 1 2 3; do echo tick$i; sleep 1; done"},
        progress_handler=on_progress, raise_on_error=False)
    assert not r.is_error and facts(r) is not None
    assert facts(r)["stdout"] == "tick1\ntick2\ntick3\n"
    assert seen, "no progress notification arrived"
    assert any(m and "tick" in m for _, _, m in seen), seen
    assert all(p >= 1 and t == 50 for p, t, _ in seen), seen


async def test_quick_command_sends_no_progress(client: Client[Any]) -> None:
    seen: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)

    await client.call_tool("run_command", {"command": "echo hi"}, progress_handler=on_progress)
    assert seen == []


async def test_ce17_cancelled_run_command_kills_its_processes(client: Client[Any]) -> None:
    await run(client, "true")  # the session exists before the timed part
    task = asyncio.create_task(
        client.call_tool("run_command", {"command": "sleep 60 & sleep 61"}))
    await asyncio.sleep(1.5)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 2
    left = await processes(client, "sleep 6")
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        left = await processes(client, "sleep 6")
    assert left == []
    assert (await run(client, "echo still usable"))["stdout"] == "still usable\n"


# -- background processes ---------------------------------------------------------------------


async def test_process_start_output_send_kill_list_round_trip(client: Client[Any]) -> None:
    started = await call(client, "process_start", command=(
        'python3 -u -c "import sys; [print(l.upper(), end=\'\', flush=True) for l in sys.stdin]"'))
    s = started.structured_content
    assert s is not None and s["pid"] > 0
    oid = s["output_id"]
    assert f'process_output("{oid}"' in text_of(started)
    sent = await ok(client, "process_send", output_id=oid, text="hello\n")
    assert sent["sent_bytes"] == 6
    out = await ok(client, "process_output", output_id=oid, wait=10)
    assert out["text"] == "HELLO\n" and out["running"] and out["next_offset"] == 6
    listed = await ok(client, "process_list")
    assert {p["output_id"]: p["running"] for p in listed["processes"]} == {oid: True}
    await ok(client, "process_send", output_id=oid, text="bye\n", eof=True)
    end = await ok(client, "process_output", output_id=oid, since_offset=6, wait=10)
    assert end["text"] == "BYE\n"
    if end["running"]:
        end = await ok(client, "process_output", output_id=oid, since_offset=10, wait=10)
    assert not end["running"] and end["exit_code"] == 0
    assert "not running" in await err(client, "process_send", output_id=oid, text="x")

    sleeper = (await ok(client, "process_start", command="echo up; sleep 100"))["output_id"]
    assert (await ok(client, "process_output", output_id=sleeper, wait=10))["text"] == "up\n"
    killed = await ok(client, "process_kill", output_id=sleeper)
    assert killed["was_running"] and killed["exit_code"] is None and killed["signal"]
    again = await ok(client, "process_kill", output_id=sleeper)
    assert not again["was_running"]
    listed = await ok(client, "process_list")
    assert {p["output_id"]: p["running"] for p in listed["processes"]} == {
        oid: False, sleeper: False}
    assert await processes(client, "sleep 100") == []
    page = await ok(client, "read_output", output_id=sleeper)
    assert page["text"] == "up\n"
    with_commands = await ok(client, "process_list", include_commands=True)
    assert len(with_commands["processes"]) > 2


async def test_process_start_timeout_kills_it(client: Client[Any]) -> None:
    oid = (await ok(client, "process_start", command="sleep 100", timeout=1))["output_id"]
    out = await ok(client, "process_output", output_id=oid, wait=5)
    assert not out["running"] and out["timed_out"]


# -- isolation and secrets --------------------------------------------------------------------


async def test_ce19_env_shows_no_host_secrets(
        monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SENTINEL-123")
    async with Client(build_server(make_settings())) as c:
        r = await run(c, "env")
    assert "SENTINEL" not in r["stdout"] and "OPENAI_API_KEY" not in r["stdout"]
    assert "PATH=" in r["stdout"]


async def test_ce02_not_root_and_sudo_fails(client: Client[Any]) -> None:
    r = await run(client, "id -u")
    assert r["stdout"].strip() not in ("", "0")
    for cmd in ("sudo id -u", "/usr/bin/sudo id -u", "env sudo id -u", "$(printf su)do id -u",
                "true\nsudo id -u"):
        r = await run(client, cmd)
        assert r["exit_code"] != 0, cmd
        assert r["stdout"].strip() != "0", cmd


async def test_ce09_fork_bomb_in_one_session_does_not_stop_another(
        client: Client[Any]) -> None:
    await run(client, "true")
    other = (await ok(client, "session_open"))["session"]
    await run(client, "true", session=other)
    t0 = time.monotonic()
    bomb = asyncio.create_task(client.call_tool(
        "run_command", {"command": ":(){ :|:& };:; sleep 2", "timeout": 5},
        raise_on_error=False))
    await asyncio.sleep(0.05)
    for _ in range(3):  # B answers while A is at its process limit
        t1 = time.monotonic()
        r = await run(client, "echo ok", session=other)
        assert r["stdout"] == "ok\n" and time.monotonic() - t1 < 2
        await asyncio.sleep(0.3)
    done = await asyncio.wait_for(bomb, 20)
    assert time.monotonic() - t0 < 5 + 3
    if not done.is_error:  # contained by the pids limit: forks failed, the call ended cleanly
        assert "fork" in facts(done).get("stderr", ""), text_of(done)
    for _ in range(10):  # the bombed sandbox recovers once its processes are gone
        again = await call(client, "run_command", command="echo back")
        if not again.is_error and facts(again).get("stdout") == "back\n":
            break
        await asyncio.sleep(0.5)
    else:
        pytest.fail(f"session A did not recover: {text_of(again)}")


async def test_command_output_travels_once(client: Client[Any]) -> None:
    """Issue #8: run_command/read_output/process_output send their output once, as text
    (hosts show structuredContent instead of the text when both exist); facts in _meta."""
    r = await call(client, "run_command", command="seq 1000 | sed 's/^/line-/'")
    assert r.structured_content is None and len(r.content) == 1
    wire = json.dumps(r.meta) + json.dumps(text_of(r))
    assert wire.count("line-998") == 1
    assert facts(r)["stdout_bytes"] == len("".join(f"line-{i}\n" for i in range(1, 1001)))
    oid = facts(r)["output_id"]
    for tool, args in (("read_output", {}), ("read_output", {"grep": "line-998"}),
                       ("process_output", {"since_offset": 0})):
        page = await call(client, tool, output_id=oid, **args)
        assert page.structured_content is None, tool
        assert (json.dumps(page.meta) + json.dumps(text_of(page))).count("line-998") == 1
    tools = {t.name: t for t in await client.list_tools()}
    for name in ("run_command", "read_output", "process_output", "grep", "glob"):
        assert tools[name].output_schema is None, name


async def test_read_output_offset_points_to_byte_offset(client: Client[Any]) -> None:
    oid = (await run(client, "echo hi"))["output_id"]
    msg = await err(client, "read_output", output_id=oid, offset=3)
    assert "offset: is not an argument of this tool; use byte_offset" in msg
