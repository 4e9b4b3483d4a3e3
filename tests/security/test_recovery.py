"""Catalogue B6/B7 cases on the write path and the history store: a full disk mid-write,
reads racing whole-file replacements, results checked against the disk, a damaged history."""

import asyncio
import contextlib
import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from tests.conftest import chown_tree
from tests.tools.conftest import err, ok, write_host_file

from coderx_mcp.config import Settings
from coderx_mcp.server import build_server


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tiny_workspace(tmp_path: Path) -> Iterator[Path]:
    """A workspace on a 1 MiB tmpfs (the tests run as root, as CI does)."""
    ws = tmp_path / "tiny"
    ws.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755,uid=1000,gid=1000",
                    "tmpfs", str(ws)], check=True)
    try:
        yield ws
    finally:
        subprocess.run(["umount", "-l", str(ws)], check=False)


async def test_cr06_disk_full_mid_write_leaves_the_original(
        make_settings: Callable[..., Settings], tiny_workspace: Path) -> None:
    original = b"original line\n" * 20_000  # 280 KB
    write_host_file(tiny_workspace, "f.txt", original)
    async with Client(build_server(make_settings(workspace=tiny_workspace))) as c:
        await ok(c, "read_file", path="f.txt")
        msg = await err(c, "write_file", path="f.txt", content="x" * (900 << 10))
        assert "space" in msg.lower(), msg
        assert (tiny_workspace / "f.txt").read_bytes() == original
        assert not [n for n in os.listdir(tiny_workspace) if n.startswith(".coderx-tmp-")]
        edit = await err(c, "edit_file", path="f.txt", old_string="original line\n" * 20_000,
                         new_string="y" * (900 << 10))
        assert "space" in edit.lower(), edit
        assert (tiny_workspace / "f.txt").read_bytes() == original
        small = await ok(c, "write_file", path="f.txt", content="fits\n")
        assert small["size"] == 5


async def test_cr06_orphan_temporary_files_are_swept_at_the_next_start(
        make_settings: Callable[..., Settings], tool_workspace: Path) -> None:
    # What a runner killed mid-write leaves: `.coderx-tmp-` + 12 hex digits next to the
    # target. The next sandbox's runner removes old ones of its uid, in the background.
    old = write_host_file(tool_workspace, "pkg/.coderx-tmp-0123456789ab", b"half a write")
    young = write_host_file(tool_workspace, ".coderx-tmp-ba9876543210", b"a write going on")
    lookalike = write_host_file(tool_workspace, ".coderx-tmp-not-hex-here", b"the user's")
    deep_old = write_host_file(tool_workspace, "a/b/c/.coderx-tmp-00000000000f", b"x")
    vendored = write_host_file(tool_workspace, "node_modules/.coderx-tmp-00000000000e", b"x")
    chown_tree(tool_workspace)  # the directories too, as a user's project has them
    for path in (old, deep_old, vendored):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    async with Client(build_server(make_settings())) as c:
        await ok(c, "list_dir", path=".")  # the session (and its runner) starts
        for _ in range(100):
            if not old.exists() and not deep_old.exists():
                break
            await asyncio.sleep(0.05)
    assert not old.exists() and not deep_old.exists()
    assert young.exists() and lookalike.exists()
    assert vendored.exists()  # the walk skips vendored trees and .git


async def test_di16_result_is_what_the_disk_holds(client: Client[Any],
                                                  tool_workspace: Path) -> None:
    out = await ok(client, "write_file", path="n.txt", content="héllo\r\nwörld\n")
    disk = (tool_workspace / "n.txt").read_bytes()
    assert (out["size"], out["sha256"]) == (len(disk), sha(disk))
    edit = await ok(client, "edit_file", path="n.txt", old_string="wörld", new_string="there")
    disk = (tool_workspace / "n.txt").read_bytes()
    assert disk == "héllo\r\nthere\n".encode() and (edit["size"], edit["sha256"]) == (
        len(disk), sha(disk))
    multi = await ok(client, "multi_edit", path="n.txt", edits=[
        {"old_string": "héllo", "new_string": "hi"}, {"old_string": "there", "new_string": "x"}])
    disk = (tool_workspace / "n.txt").read_bytes()
    assert (multi["size"], multi["sha256"]) == (len(disk), sha(disk))


async def test_di01_reads_racing_replacements_see_one_whole_version(
        client: Client[Any], tool_workspace: Path) -> None:
    size = 1 << 20
    versions = [(chr(ord("A") + i) * 99 + "\n") * (size // 100) for i in range(8)]
    hashes = {sha(v.encode()): v[0] for v in versions}
    write_host_file(tool_workspace, "big.txt", versions[0].encode())
    writer_session = (await ok(client, "session_open"))["session"]
    await ok(client, "read_file", path="big.txt", session=writer_session)
    seen: list[str] = []
    done, read = asyncio.Event(), asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            r = await ok(client, "read_file", path="big.txt", limit=50)
            letter = hashes.get(r["sha256"])
            assert letter is not None, "a read saw a hash of no whole version"
            lines = r["text"].split("\n")[1:]
            assert all(line.endswith(letter * 99) for line in lines if "|" in line), letter
            seen.append(letter)
            read.set()

    task = asyncio.create_task(reader())
    try:
        for v in versions[1:]:
            read.clear()
            await ok(client, "write_file", path="big.txt", content=v, session=writer_session)
            await asyncio.wait_for(read.wait(), 60)  # a loaded machine: let it read
    finally:
        done.set()
        await task
    assert (tool_workspace / "big.txt").read_text() == versions[-1]
    assert len(seen) >= 3, seen


async def test_cr08_damaged_history_is_kept_aside_and_a_new_one_records(
        make_settings: Callable[..., Settings], tool_workspace: Path) -> None:
    settings = make_settings()
    path = settings.history_path
    assert path is not None
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))  # a torn, garbage database
    async with Client(build_server(settings)) as c:
        assert (await ok(c, "run_command", command="echo recorded"))["stdout"] == "recorded\n"
        entries = (await ok(c, "history"))["entries"]
        assert [e["tool"] for e in entries] == ["run_command"]
    aside = [p.name for p in path.parent.iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1
    with contextlib.suppress(FileNotFoundError):
        assert path.stat().st_mode & 0o777 == 0o600
