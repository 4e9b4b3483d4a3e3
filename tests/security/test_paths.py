"""Catalogue B1 (path and file safety): file tools see the container's view and never the host's.

File operations run inside the session's container, so the host paths in these cases do not
exist there; what must hold is that a path outside ``/workspace`` is refused and the host's
files (and the container's own files outside the workspace) are never read or written.
"""

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastmcp import Client
from tests.tools.conftest import call, err, ok, write_host_file

from coderx_mcp.config import Settings
from coderx_mcp.server import build_server

OUTSIDE = "outside the workspace"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_pf01_sibling_prefixes_are_outside(client: Client[Any],
                                                 tool_workspace: Path) -> None:
    for sibling in ("proj2", "proj-old", "proj_backup", "proj.bak"):
        write_host_file(tool_workspace.parent, f"{sibling}/x", b"SIBLING\n")
    paths = ["/workspace2/x", "/workspace-old/x", "/workspace_backup/x", "/workspace.bak/x",
             "../proj2/x", "../workspace2/x",
             *(str(tool_workspace.parent / s / "x")
               for s in ("proj2", "proj-old", "proj_backup", "proj.bak"))]
    for path in paths:
        assert OUTSIDE in await err(client, "read_file", path=path), path
        assert OUTSIDE in await err(client, "write_file", path=path, content="pwned"), path
        assert OUTSIDE in await err(client, "edit_file", path=path, old_string="SIBLING",
                                    new_string="pwned", expected_hash=sha(b"SIBLING\n")), path
        assert OUTSIDE in await err(client, "grep", pattern="SIBLING", path=path), path
        assert OUTSIDE in await err(client, "glob", pattern="*", path=path), path
    for sibling in ("proj2", "proj-old", "proj_backup", "proj.bak"):
        assert os.listdir(tool_workspace.parent / sibling) == ["x"]
        assert (tool_workspace.parent / sibling / "x").read_bytes() == b"SIBLING\n"


async def test_pf04_new_file_under_a_symlinked_ancestor_refused(client: Client[Any],
                                                                tool_workspace: Path,
                                                                tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), tool_workspace / "sub")  # the host's view
    os.symlink("/tmp", tool_workspace / "tmpdir")  # the container's view: a writable dir
    for path in ("sub/new.txt", "tmpdir/new.txt", "tmpdir/deeper/new.txt"):
        assert OUTSIDE in await err(client, "write_file", path=path, content="pwned"), path
    assert list(outside.iterdir()) == []
    listing = await ok(client, "run_command", command="ls -A /tmp")
    assert "new.txt" not in listing["stdout"] and "deeper" not in listing["stdout"]


async def test_pf05_symlink_chains_refused_loops_fail_cleanly(client: Client[Any],
                                                              tool_workspace: Path) -> None:
    os.symlink("b", tool_workspace / "a")
    os.symlink("c", tool_workspace / "b")
    os.symlink("/etc/passwd", tool_workspace / "c")
    os.symlink("loop", tool_workspace / "loop")
    os.symlink(".", tool_workspace / "dirloop")
    write_host_file(tool_workspace, "real.txt", b"inside\n")
    os.symlink("real.txt", tool_workspace / "in1")
    os.symlink("in1", tool_workspace / "in2")
    for path in ("a", "b", "c"):
        msg = await err(client, "read_file", path=path)
        assert OUTSIDE in msg and "root:" not in msg
    start = time.monotonic()
    msg = await err(client, "read_file", path="loop")
    assert "symbolic links" in msg or "loop" in msg, msg
    assert OUTSIDE in await err(client, "read_file", path="dirloop/" * 50 + "../etc/passwd")
    assert time.monotonic() - start < 10
    # Links resolving inside the workspace are fine, and so is a bounded trip through dirloop.
    assert "inside" in (await ok(client, "read_file", path="in2"))["text"]
    assert "inside" in (await ok(client, "read_file", path="dirloop/dirloop/real.txt"))["text"]
    found = await ok(client, "glob", pattern="**/*.txt")
    assert "real.txt" in str(found)


async def test_pf06_swapping_file_and_symlink_never_reaches_outside(
        client: Client[Any], tool_workspace: Path) -> None:
    await ok(client, "run_command", command="printf OUTSIDE-T > /tmp/t")
    f = tool_workspace / "f"
    write_host_file(tool_workspace, "f", b"INSIDE\n")
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        tmp = tool_workspace / ".swap"
        while not stop.is_set() and swaps < 1000:
            with contextlib.suppress(OSError):
                if swaps % 2:
                    tmp.write_bytes(b"INSIDE\n")
                else:
                    os.symlink("/tmp/t", tmp)
                os.replace(tmp, f)
            swaps += 1
            time.sleep(0.0005)

    thread = threading.Thread(target=swap)
    thread.start()
    seen_inside = 0
    deadline = time.monotonic() + 8
    try:
        while time.monotonic() < deadline and thread.is_alive():
            base = sha(b"INSIDE\n")
            for tool, args in (("read_file", {}),
                               ("write_file", {"content": "W\n", "expected_hash": base}),
                               ("edit_file", {"old_string": "INSIDE", "new_string": "E",
                                              "expected_hash": base})):
                r = await call(client, tool, path="f", **args)
                text = r.content[0].text  # type: ignore[union-attr]
                assert "OUTSIDE-T" not in text, (tool, text)
                seen_inside += tool == "read_file" and not r.is_error and "INSIDE" in text
    finally:
        stop.set()
        thread.join()
    assert swaps >= 100 and seen_inside > 0, (swaps, seen_inside)
    after = await ok(client, "run_command", command="cat /tmp/t")
    assert after["stdout"] == "OUTSIDE-T"


async def test_pf07_links_planted_by_a_command_are_refused(client: Client[Any]) -> None:
    await ok(client, "run_command", command="ln -s / rootlink && ln -s /etc/passwd pw")
    for path in ("pw", "rootlink/etc/shadow", "rootlink/etc/passwd"):
        msg = await err(client, "read_file", path=path)
        assert OUTSIDE in msg and "root:" not in msg, path
    found = await call(client, "glob", pattern="rootlink/**")
    assert "etc/passwd" not in found.content[0].text  # type: ignore[union-attr]
    assert OUTSIDE in await err(client, "write_file", path="pw", content="x")
    assert OUTSIDE in await err(client, "grep", pattern="root", path="rootlink/etc")


async def test_pf09_another_sessions_workspace_is_outside(
        make_settings: Callable[..., Settings], tool_workspace: Path) -> None:
    theirs = tool_workspace.parent / "projB"
    write_host_file(theirs, "theirs.txt", b"B-ONLY\n")
    os.chown(theirs, 1000, 1000)
    server = build_server(make_settings(workspace_roots=[tool_workspace.parent]))
    async with Client(server) as client:
        other = (await ok(client, "session_open", workspace=str(theirs)))["session"]
        assert "B-ONLY" in (await ok(client, "read_file", path="theirs.txt",
                                     session=other))["text"]
        target = str(theirs / "theirs.txt")
        for tool, args in (("read_file", {"path": target}),
                           ("write_file", {"path": target, "content": "pwned"}),
                           ("edit_file", {"path": target, "old_string": "B", "new_string": "A",
                                          "expected_hash": sha(b"B-ONLY\n")}),
                           ("grep", {"pattern": "B", "path": str(theirs)}),
                           ("glob", {"pattern": "*", "path": str(theirs)})):
            msg = await err(client, tool, **args)
            assert OUTSIDE in msg and "B-ONLY" not in msg, tool
    assert (theirs / "theirs.txt").read_bytes() == b"B-ONLY\n"
