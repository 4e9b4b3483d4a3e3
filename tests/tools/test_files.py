"""File tools through the real MCP client on a Docker-backed server."""

import asyncio
import hashlib
import json
import os
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from tests.tools.conftest import body, call, err, facts, ok, tree_paths, write_host_file

from coderx_mcp.config import Settings
from coderx_mcp.server import build_server
from coderx_mcp.tools.common import META_KEY

pytestmark = pytest.mark.docker

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4








def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def small_client(make_settings: Callable[..., Settings]) -> AsyncIterator[Client[Any]]:
    """A client of a server whose file limit is 64 KiB (large-file paths)."""
    async with Client(build_server(make_settings(max_file_bytes=1 << 16))) as c:
        yield c


# --- read_file -------------------------------------------------------------------------------

async def test_read_numbers_lines_and_hashes_whole_file(client: Client[Any],
                                                        tool_workspace: Path) -> None:
    data = b"alpha\n\tbeta\ngamma\n"
    write_host_file(tool_workspace, "src/a.py", data)
    r = await call(client, "read_file", path="src/a.py")
    out = facts(r)
    assert r.structured_content is None and not r.is_error  # the text is sent once
    assert body(out["text"]) == "  1|alpha\n  2|\tbeta\n  3|gamma"
    assert (out["sha256"], out["size"], out["total_lines"]) == (sha(data), len(data), 3)
    assert (out["encoding"], out["bom"], out["newline"], out["truncated"]) == (
        "utf-8", False, "\n", False)
    text = r.content[0].text  # type: ignore[union-attr]
    assert text.startswith("src/a.py (3 lines") and text.endswith("  3|gamma")
    # Absolute paths inside the workspace name the same file.
    assert (await ok(client, "read_file", path="/workspace/src/a.py"))["path"] == "src/a.py"


async def test_read_pages_with_exact_next_offset(client: Client[Any],
                                                 tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "n.txt", b"".join(b"line %d\n" % i for i in range(1, 11)))
    r = await call(client, "read_file", path="n.txt", offset=4, limit=3)
    out = facts(r)
    assert body(out["text"]) == "  4|line 4\n  5|line 5\n  6|line 6"
    assert (out["first_line"], out["last_line"], out["truncated"], out["next_offset"]) == (
        4, 6, True, 7)
    assert "offset=7" in r.content[0].text  # type: ignore[union-attr]
    last = await ok(client, "read_file", path="n.txt", offset=7, limit=100)
    assert (last["last_line"], last["truncated"], last["next_offset"]) == (10, False, None)
    assert "beyond the end" in await err(client, "read_file", path="n.txt", offset=11)


async def test_read_is_capped_by_size_with_the_exact_next_offset(
        make_settings: Callable[..., Settings], tool_workspace: Path) -> None:
    """2,000 lines of 2,000 characters are 4 MB: a read shows a whole-line page under the
    configured cap and names the offset that continues; paging covers every line once."""
    data = b"".join(b"%04d" % i + b"y" * 1996 + b"\n" for i in range(1, 2001))
    write_host_file(tool_workspace, "wide.txt", data)
    async with Client(build_server(make_settings(read_max_chars=10_000))) as c:
        r = await call(c, "read_file", path="wide.txt")
        text = r.content[0].text  # type: ignore[union-attr]
        out = facts(r)
        assert len(text) < 10_400 and (out["first_line"], out["last_line"]) == (1, 4)
        assert (out["truncated"], out["next_offset"]) == (True, 5)
        assert text.endswith("[1996 more lines: call read_file with offset=5 to continue]")
        seen, offset = [], 1
        while offset is not None and offset < 30:
            page = await ok(c, "read_file", path="wide.txt", offset=offset)
            seen += [int(line.split("|", 1)[1][:4]) for line in body(page["text"]).split("\n")]
            offset = page["next_offset"]
        assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 29
    # The default cap keeps an ordinary 90 KB module to one page of about 10K tokens.
    write_host_file(tool_workspace, "mod.py", b"x = 'abcdefghijklmnopqrstuvwxyz0123456789'\n"
                    * 2000)
    async with Client(build_server(make_settings())) as c:
        r = await call(c, "read_file", path="mod.py")
        assert len(r.content[0].text) <= 40_200  # type: ignore[union-attr]
        assert facts(r)["next_offset"] == facts(r)["last_line"] + 1


async def test_read_sends_the_file_once_on_the_wire(client: Client[Any],
                                                    tool_workspace: Path) -> None:
    """Hosts such as Claude Code show structured content instead of the text: the file
    travels once, as text (with a hash prefix), and the facts ride in _meta."""
    data = b"".join(b"%05d some ordinary source line of code here\n" % i for i in range(230))
    write_host_file(tool_workspace, "ten.txt", data)
    r = await call(client, "read_file", path="ten.txt")
    assert r.structured_content is None and len(r.content) == 1
    wire = json.dumps(r.meta) + json.dumps(r.content[0].text)  # type: ignore[union-attr]
    assert wire.count("some ordinary source line of code here") == 230
    # The text shows a prefix expected_hash accepts; the facts carry the whole hash.
    assert f"sha256 {sha(data)[:16]})" in r.content[0].text  # type: ignore[union-attr]
    assert r.meta[META_KEY]["sha256"] == sha(data)  # type: ignore[index]
    assert "content" not in r.meta[META_KEY]  # type: ignore[index]
    # The gutter is one byte of JSON per line ("|", a tab would be "\\t"): issue #8's target.
    assert len(wire) <= 1.15 * len(data), len(wire)
    tools = {t.name: t for t in await client.list_tools()}
    assert tools["read_file"].output_schema is None


async def test_read_facts_leave_out_defaults(client: Client[Any], tool_workspace: Path) -> None:
    """A plain whole-file read's facts omit the fields at their default; others say them."""
    defaulted = {"truncated", "next_offset", "encoding", "bom", "newline"}
    write_host_file(tool_workspace, "plain.txt", b"one\ntwo\nthree\n")
    r = await call(client, "read_file", path="plain.txt")
    raw = r.meta[META_KEY]  # type: ignore[index]
    assert defaulted.isdisjoint(raw), raw
    assert (raw["total_lines"], raw["first_line"], raw["last_line"]) == (3, 1, 3)
    paged = await call(client, "read_file", path="plain.txt", limit=2)
    page = paged.meta[META_KEY]  # type: ignore[index]
    assert (page["truncated"], page["next_offset"]) == (True, 3)
    assert {"encoding", "bom", "newline"}.isdisjoint(page), page
    write_host_file(tool_workspace, "win.txt", b"\xef\xbb\xbfone\r\ntwo\r\n")
    win = (await call(client, "read_file", path="win.txt")).meta[META_KEY]  # type: ignore[index]
    assert (win["encoding"], win["bom"], win["newline"]) == ("utf-8-sig", True, "\r\n")
    assert {"truncated", "next_offset"}.isdisjoint(win), win


async def test_expected_hash_accepts_the_shown_prefix(client: Client[Any],
                                                      tool_workspace: Path) -> None:
    f = write_host_file(tool_workspace, "h.txt", b"one\n")
    digest = sha(b"one\n")
    await ok(client, "write_file", path="h.txt", content="two\n", expected_hash=digest[:12])
    assert f.read_bytes() == b"two\n"
    stale = await err(client, "edit_file", path="h.txt", old_string="two", new_string="2",
                      expected_hash=digest[:12])
    assert "changed since" in stale and f.read_bytes() == b"two\n"
    await ok(client, "edit_file", path="h.txt", old_string="two", new_string="2",
             expected_hash=sha(b"two\n")[:8].upper())
    assert f.read_bytes() == b"2\n"
    assert "expected_hash" in await err(client, "write_file", path="h.txt", content="x",
                                        expected_hash="abc")


async def test_missing_path_error_says_paths_are_relative_to_workspace(
        client: Client[Any], tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "src/shop/cart.py", b"x = 1\n")
    await ok(client, "run_command", command="cd src")
    text = await err(client, "read_file", path="shop/cart.py")
    assert "does not exist" in text and "relative to /workspace" in text
    assert (await ok(client, "read_file", path="src/shop/cart.py"))["total_lines"] == 1


async def test_read_cuts_long_lines_and_reports_empty_files(client: Client[Any],
                                                            tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "long.txt", b"x" * 5000 + b"\nshort\n")
    out = await ok(client, "read_file", path="long.txt")
    first = body(out["text"]).split("\n")[0]
    assert first.endswith("[line truncated: 5000 chars]") and len(first) < 2100
    write_host_file(tool_workspace, "empty.txt", b"")
    r = await call(client, "read_file", path="empty.txt")
    assert facts(r)["total_lines"] == 0
    assert "is empty" in r.content[0].text  # type: ignore[union-attr]


async def test_di13_large_file_window_has_right_numbers_and_whole_hash(
        small_client: Client[Any], tool_workspace: Path) -> None:
    data = b"".join(b"row %06d\n" % i for i in range(1, 20001))  # 220 KB > 64 KiB
    write_host_file(tool_workspace, "big.txt", data)
    r = await call(small_client, "read_file", path="big.txt", offset=1000, limit=3)
    assert not r.is_error, r.content
    out = facts(r)
    assert body(out["text"]) == "1000|row 001000\n1001|row 001001\n1002|row 001002"
    assert (out["total_lines"], out["sha256"], out["next_offset"]) == (20000, sha(data), 1003)
    assert "offset=1003" in r.content[0].text  # type: ignore[union-attr]
    assert "limit for edits" in await err(small_client, "edit_file", path="big.txt",
                                          old_string="row 000001", new_string="x")
    # The whole-file hash of a windowed read is the baseline for a later write.
    await ok(small_client, "write_file", path="big.txt", content="small now\n")
    assert (tool_workspace / "big.txt").read_bytes() == b"small now\n"


async def test_di12_binary_file_refused_with_size(client: Client[Any],
                                                  tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "img.png", PNG)
    msg = await err(client, "read_file", path="img.png")
    assert f"binary file, {len(PNG)} bytes" in msg
    await err(client, "edit_file", path="img.png", old_string="PNG", new_string="X")
    assert (tool_workspace / "img.png").read_bytes() == PNG


async def test_pf13_fifo_and_directory_refused_immediately(client: Client[Any],
                                                           tool_workspace: Path) -> None:
    os.mkfifo(tool_workspace / "pipe")
    (tool_workspace / "dir").mkdir()
    start = time.monotonic()
    assert "not a regular file" in await err(client, "read_file", path="pipe")
    assert time.monotonic() - start < 5
    assert "directory" in await err(client, "read_file", path="dir")
    assert "not a regular file" in await err(client, "write_file", path="pipe", content="x")


async def test_pf03_pf07_symlink_out_refused_without_leak(client: Client[Any],
                                                          tool_workspace: Path,
                                                          tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP-SECRET-CONTENT\n")
    os.symlink("/etc/shadow", tool_workspace / "shadow")
    os.symlink(str(secret), tool_workspace / "link")
    os.symlink("/", tool_workspace / "rootlink")
    for path in ("shadow", "link", "rootlink/etc/shadow", "rootlink/etc/passwd"):
        msg = await err(client, "read_file", path=path)
        assert "outside the workspace" in msg and "root:" not in msg and "TOP-SECRET" not in msg
    for tool, extra in (("write_file", {"content": "pwned"}),
                        ("edit_file", {"old_string": "TOP", "new_string": "X",
                                       "expected_hash": sha(b"TOP-SECRET-CONTENT\n")})):
        assert "outside the workspace" in await err(client, tool, path="link", **extra)
    assert secret.read_bytes() == b"TOP-SECRET-CONTENT\n"
    assert (tool_workspace / "link").is_symlink()


async def test_pf02_traversal_refused_and_dotted_names_allowed(client: Client[Any],
                                                               tool_workspace: Path) -> None:
    for bad in ("../x", "a/../../etc/passwd", "./../x", "/etc/passwd",
                "/workspace/./../etc/hostname", "a/" * 300 + "../" * 301 + "etc/passwd"):
        assert "outside the workspace" in await err(client, "read_file", path=bad), bad[:40]
    assert "outside the workspace" in await err(client, "write_file", path="../new.txt",
                                                content="x")
    assert not (tool_workspace.parent / "new.txt").exists()
    for name in ("..test", "te..st", "...", "...."):
        await ok(client, "write_file", path=name, content=name)
        assert body((await ok(client, "read_file", path=name))["text"]) == f"  1|{name}"
        assert (tool_workspace / name).read_text() == name


async def test_pr06_unknown_argument_rejected(client: Client[Any], tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "a", b"a\n")
    msg = await err(client, "read_file", path="a", evil=1)
    assert "evil" in msg


async def test_pr05_pf08_bad_paths_rejected_without_echo(client: Client[Any]) -> None:
    long = "a" * 2000 + "SENTINEL-42" + "b" * 3000
    msg = await err(client, "read_file", path=long)
    assert "path" in msg and "SENTINEL-42" not in msg and len(msg) <= 2000
    for bad in ("a\x00/etc/passwd", "new\nline.txt"):
        msg = await err(client, "write_file", path=bad, content="x")
        assert "control characters" in msg and "passwd" not in msg
    assert "path" in await err(client, "read_file", path=42)
    assert (await ok(client, "write_file", path="fine.txt", content="ok"))["created"]


# --- encodings and line endings (DI-07..11) ----------------------------------------------

async def test_di07_crlf_edit_with_lf_strings_keeps_crlf(client: Client[Any],
                                                         tool_workspace: Path) -> None:
    data = b"one\r\ntwo\r\nthree\r\nfour\r\n"
    write_host_file(tool_workspace, "w.txt", data)
    assert (await ok(client, "read_file", path="w.txt"))["newline"] == "\r\n"
    out = await ok(client, "edit_file", path="w.txt", old_string="two\nthree",
                   new_string="TWO\nTHREE\nextra")
    on_disk = (tool_workspace / "w.txt").read_bytes()
    assert on_disk == b"one\r\nTWO\r\nTHREE\r\nextra\r\nfour\r\n"
    assert (out["sha256"], out["size"], out["first_line"]) == (sha(on_disk), len(on_disk), 2)


async def test_di07_inserted_newlines_follow_a_crlf_file(client: Client[Any],
                                                          tool_workspace: Path) -> None:
    """Regression (issue 8): LFs the model inserts never land bare in a CRLF file."""
    write_host_file(tool_workspace, "c.txt", b"alpha\r\nbeta\r\ngamma\r\n")
    await ok(client, "read_file", path="c.txt")
    await ok(client, "edit_file", path="c.txt", old_string="beta", new_string="BETA\nDELTA")
    assert (tool_workspace / "c.txt").read_bytes() == b"alpha\r\nBETA\r\nDELTA\r\ngamma\r\n"
    await ok(client, "multi_edit", path="c.txt", edits=[
        {"old_string": "alpha", "new_string": "A1\nA2"},
        {"old_string": "gamma", "new_string": "G\n\nH"}])
    assert (tool_workspace / "c.txt").read_bytes() == (
        b"A1\r\nA2\r\nBETA\r\nDELTA\r\nG\r\n\r\nH\r\n")
    out = await ok(client, "write_file", path="c.txt", content="new\ntext\n")
    assert (tool_workspace / "c.txt").read_bytes() == b"new\r\ntext\r\n"
    assert out["size"] == 11
    # A new file (and an LF one) is written exactly as given.
    await ok(client, "write_file", path="n.txt", content="x\ny\n")
    assert (tool_workspace / "n.txt").read_bytes() == b"x\ny\n"


async def test_di08_mixed_endings_and_lone_cr_untouched(client: Client[Any],
                                                        tool_workspace: Path) -> None:
    data = b"a\r\nb has \r inside\nc\r\nd\n"
    write_host_file(tool_workspace, "m.txt", data)
    await ok(client, "read_file", path="m.txt")
    await ok(client, "edit_file", path="m.txt", old_string="c", new_string="C")
    assert (tool_workspace / "m.txt").read_bytes() == data.replace(b"c\r\n", b"C\r\n")


async def test_di09_bom_hidden_on_read_and_kept_on_edit_and_write(client: Client[Any],
                                                                  tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "bom.txt", b"\xef\xbb\xbfhello\r\nworld\r\n")
    out = await ok(client, "read_file", path="bom.txt")
    assert "\ufeff" not in out["text"] and out["bom"] and out["encoding"] == "utf-8-sig"
    await ok(client, "edit_file", path="bom.txt", old_string="world", new_string="there")
    assert (tool_workspace / "bom.txt").read_bytes() == b"\xef\xbb\xbfhello\r\nthere\r\n"
    await ok(client, "write_file", path="bom.txt", content="new\n")
    assert (tool_workspace / "bom.txt").read_bytes() == b"\xef\xbb\xbfnew\r\n"  # CRLF kept
    await ok(client, "write_file", path="plain.txt", content="x\n")
    assert (tool_workspace / "plain.txt").read_bytes() == b"x\n"


async def test_di10_final_newline_and_whitespace_edits_exact(client: Client[Any],
                                                             tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "nofinal.txt", b"a\nb  \nc")
    await ok(client, "read_file", path="nofinal.txt")
    await ok(client, "edit_file", path="nofinal.txt", old_string="b  ", new_string="b")
    assert (tool_workspace / "nofinal.txt").read_bytes() == b"a\nb\nc"


async def test_di11_latin1_readable_but_edit_refused(client: Client[Any],
                                                     tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "l1.txt", b"caf\xe9\n")
    out = await ok(client, "read_file", path="l1.txt")
    assert out["encoding"] == "latin-1" and "café" in out["text"]
    msg = await err(client, "edit_file", path="l1.txt", old_string="caf", new_string="tea")
    assert "latin-1" in msg
    assert (tool_workspace / "l1.txt").read_bytes() == b"caf\xe9\n"


async def test_utf16_file_round_trips(client: Client[Any], tool_workspace: Path) -> None:
    data = "\ufeffäpfel\r\nbirne\r\n".encode("utf-16-le")
    write_host_file(tool_workspace, "u16.txt", data)
    assert (await ok(client, "read_file", path="u16.txt"))["encoding"] == "utf-16-le"
    await ok(client, "edit_file", path="u16.txt", old_string="birne", new_string="kiwi")
    assert (tool_workspace / "u16.txt").read_bytes() == "\ufeffäpfel\r\nkiwi\r\n".encode(
        "utf-16-le")


# --- the stale rule (DI-03..06) ---------------------------------------------------------

async def test_di03_outside_change_refused_touch_allowed(client: Client[Any],
                                                         tool_workspace: Path) -> None:
    f = write_host_file(tool_workspace, "s.txt", b"value = 1\n")
    read = await ok(client, "read_file", path="s.txt")
    f.write_bytes(b"value = 2\n")
    msg = await err(client, "edit_file", path="s.txt", old_string="value", new_string="v")
    assert "changed since this session read it" in msg and read["sha256"][:12] in msg
    assert sha(b"value = 2\n")[:12] in msg and "re-read" in msg
    assert f.read_bytes() == b"value = 2\n"
    assert "changed since" in await err(client, "write_file", path="s.txt", content="x\n")
    await ok(client, "read_file", path="s.txt")
    os.utime(f, (time.time() + 100, time.time() + 100))  # touch: same bytes, new mtime
    await ok(client, "edit_file", path="s.txt", old_string="value", new_string="v")
    assert f.read_bytes() == b"v = 2\n"


async def test_di04_write_requires_read_or_expected_hash(client: Client[Any],
                                                         tool_workspace: Path) -> None:
    f = write_host_file(tool_workspace, "e.txt", b"old\n")
    msg = await err(client, "write_file", path="e.txt", content="new\n")
    assert "refusing to overwrite e.txt: read it first" in msg
    assert "read it first" in await err(client, "edit_file", path="e.txt", old_string="old",
                                        new_string="new")
    assert f.read_bytes() == b"old\n"
    assert "changed since" in await err(client, "write_file", path="e.txt", content="new\n",
                                        expected_hash="0" * 64)
    out = await ok(client, "write_file", path="e.txt", content="new\n",
                   expected_hash=sha(b"old\n").upper())
    assert not out["created"] and out["sha256"] == sha(b"new\n") == sha(f.read_bytes())
    # The hash of our own write is the new baseline.
    await ok(client, "write_file", path="e.txt", content="newer\n")
    created = await ok(client, "write_file", path="deep/new/dir/f.txt", content="hi\n")
    assert created["created"] and (tool_workspace / "deep/new/dir/f.txt").read_text() == "hi\n"


async def test_di06_second_session_stale_write_refused(client: Client[Any],
                                                       tool_workspace: Path) -> None:
    f = write_host_file(tool_workspace, "shared.txt", b"base\n")
    b = (await ok(client, "session_open", workspace=str(tool_workspace)))["session"]
    await ok(client, "read_file", path="shared.txt")
    await ok(client, "read_file", path="shared.txt", session=b)
    await ok(client, "edit_file", path="shared.txt", old_string="base", new_string="from A")
    msg = await err(client, "write_file", path="shared.txt", content="from B\n", session=b)
    assert "changed since this session read it" in msg
    assert "changed since" in await err(client, "edit_file", path="shared.txt",
                                        old_string="base", new_string="B", session=b)
    assert f.read_bytes() == b"from A\n"


async def test_di05_ten_concurrent_edits_in_one_session_all_land(
        client: Client[Any], tool_workspace: Path) -> None:
    f = write_host_file(tool_workspace, "c.py", b"".join(b"key%d = 0\n" % i for i in range(10)))
    await ok(client, "read_file", path="c.py")
    results = await asyncio.gather(*(
        call(client, "edit_file", path="c.py" if i % 2 else "./c.py",
             old_string=f"key{i} = 0", new_string=f"key{i} = {i + 100}") for i in range(10)))
    assert [r.is_error for r in results] == [False] * 10
    assert f.read_bytes() == b"".join(b"key%d = %d\n" % (i, i + 100) for i in range(10))


async def test_write_does_not_clobber_file_created_meanwhile(client: Client[Any],
                                                             tool_workspace: Path) -> None:
    await err(client, "read_file", path="race.txt")  # not there yet
    f = write_host_file(tool_workspace, "race.txt", b"theirs\n")
    assert "read it first" in await err(client, "write_file", path="race.txt", content="mine\n")
    assert f.read_bytes() == b"theirs\n"


# --- edits: identity, diagnostics, multi_edit ----------------------------------------

async def test_di02_mode_kept_and_hardlink_severing_reported(client: Client[Any],
                                                             tool_workspace: Path) -> None:
    f = write_host_file(tool_workspace, "run.sh", b"#!/bin/sh\necho hi\n")
    f.chmod(0o755)
    await ok(client, "read_file", path="run.sh")
    await ok(client, "edit_file", path="run.sh", old_string="echo hi", new_string="echo ho")
    assert stat.S_IMODE(f.stat().st_mode) == 0o755 and f.read_bytes().endswith(b"echo ho\n")
    os.link(f, tool_workspace / "run2.sh")
    await ok(client, "read_file", path="run.sh")
    out = await ok(client, "edit_file", path="run.sh", old_string="echo ho", new_string="echo hu")
    assert out["note"] and "hard link" in out["note"]


async def test_pf12_git_hook_and_config_writes_refused(client: Client[Any],
                                                       tool_workspace: Path) -> None:
    write_host_file(tool_workspace, ".git/config", b"[core]\n")
    msg = await err(client, "write_file", path=".git/hooks/pre-commit", content="#!/bin/sh\n")
    assert "protected" in msg
    assert not (tool_workspace / ".git/hooks/pre-commit").exists()
    await ok(client, "read_file", path=".git/config")
    assert "protected" in await err(client, "edit_file", path=".git/config", old_string="[core]",
                                    new_string="[core]\n\tfsmonitor = evil")
    assert (tool_workspace / ".git/config").read_bytes() == b"[core]\n"


async def test_di14_read_artifact_refused(client: Client[Any], tool_workspace: Path) -> None:
    f = write_host_file(tool_workspace, "art.txt", b"a\nb\nc\n")
    shown = body((await ok(client, "read_file", path="art.txt"))["text"])
    msg = await err(client, "write_file", path="art.txt", content=shown + "\n")
    assert "read_file output" in msg
    assert "prefixes" in await err(client, "edit_file", path="art.txt", old_string="a\nb\nc",
                                   new_string=shown)
    assert f.read_bytes() == b"a\nb\nc\n"
    # Indented code copied with its gutter, "  2|    return x | y", into any of the edit tools.
    code = b"def f(x, y):\n    return x | y\n"
    g = write_host_file(tool_workspace, "art.py", code)
    lines = body((await ok(client, "read_file", path="art.py"))["text"]).split("\n")
    assert lines[1] == "  2|    return x | y"
    miss = await err(client, "edit_file", path="art.py", old_string=lines[1], new_string="z")
    assert "line-number prefixes" in miss and "after the number and its '|'" in miss
    assert "prefixes" in await err(client, "multi_edit", path="art.py", edits=[
        {"old_string": "return x | y", "new_string": "\n".join(lines)}])
    assert g.read_bytes() == code


async def test_di15_not_found_shows_visible_whitespace(client: Client[Any],
                                                       tool_workspace: Path) -> None:
    write_host_file(tool_workspace, "t.py", b"def f():\n\treturn 1\n")
    await ok(client, "read_file", path="t.py")
    msg = await err(client, "edit_file", path="t.py", old_string="def f():\n    return 1",
                    new_string="def f():\n    return 2")
    assert "→" in msg  # the file's tab made visible


async def test_di15_ambiguous_edit_lists_lines_and_replace_all_works(
        client: Client[Any], tool_workspace: Path) -> None:
    f = write_host_file(tool_workspace, "d.txt", b"x = 1\ny = 2\nx = 1\nx = 1\n")
    await ok(client, "read_file", path="d.txt")
    msg = await err(client, "edit_file", path="d.txt", old_string="x = 1", new_string="x = 9")
    assert "3 places (lines 1, 3, 4)" in msg
    out = await ok(client, "edit_file", path="d.txt", old_string="x = 1", new_string="x = 9",
                   replace_all=True)
    assert out["replacements"] == 3 and f.read_bytes() == b"x = 9\ny = 2\nx = 9\nx = 9\n"


async def test_multi_edit_all_or_nothing(client: Client[Any], tool_workspace: Path) -> None:
    f = write_host_file(tool_workspace, "me.txt", b"alpha\nbeta\ngamma\n")
    await ok(client, "read_file", path="me.txt")
    msg = await err(client, "multi_edit", path="me.txt", edits=[
        {"old_string": "alpha", "new_string": "ALPHA"},
        {"old_string": "missing", "new_string": "x"}])
    assert "Edit 2 of 2 failed" in msg and f.read_bytes() == b"alpha\nbeta\ngamma\n"
    out = await ok(client, "multi_edit", path="me.txt", edits=[
        {"old_string": "alpha", "new_string": "ALPHA"},
        {"old_string": "ALPHA\nbeta", "new_string": "ALPHA\nBETA", "replace_all": False},
        {"old_string": "gamma", "new_string": "GAMMA"}])
    assert out["replacements"] == 3 and f.read_bytes() == b"ALPHA\nBETA\nGAMMA\n"
    assert "evil" in await err(client, "multi_edit", path="me.txt",
                               edits=[{"old_string": "A", "new_string": "B", "evil": 1}])


async def test_pr07_content_over_file_limit_refused(small_client: Client[Any],
                                                    tool_workspace: Path) -> None:
    msg = await err(small_client, "write_file", path="huge.txt", content="x" * (70 << 10))
    assert "limit" in msg and not (tool_workspace / "huge.txt").exists()
    write_host_file(tool_workspace, "s.txt", b"abc\n")
    await ok(small_client, "read_file", path="s.txt")
    assert "limit" in await err(small_client, "edit_file", path="s.txt", old_string="abc",
                                new_string="y" * (70 << 10))
    assert (tool_workspace / "s.txt").read_bytes() == b"abc\n"


# --- list_dir -------------------------------------------------------------------------------

def _git_init(ws: Path) -> None:
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    subprocess.run(["chown", "-R", "1000:1000", str(ws)], check=True)


async def test_list_dir_skips_vcs_deps_and_gitignored(client: Client[Any],
                                                      tool_workspace: Path) -> None:
    for rel in ("src/main.py", "node_modules/x/i.js", "build/out.o", "app.log", "keep.md",
                ".gitignore"):
        write_host_file(tool_workspace, rel, b"build/\n*.log\n" if rel == ".gitignore" else b"x")
    _git_init(tool_workspace)
    r = await call(client, "list_dir")
    assert r.structured_content is None and not r.is_error, r.content  # the tree, once
    out = facts(r)
    paths = set(tree_paths(out["text"]))
    assert paths == {".gitignore", "keep.md", "src", "src/main.py"}
    assert out["ignored"] == 3  # build, build/out.o, app.log
    text = r.content[0].text  # type: ignore[union-attr]
    assert "src/\n    main.py  1 B" in text and "3 gitignored hidden" in text
    every = await ok(client, "list_dir", include_ignored=True)
    listed = tree_paths(every["text"])
    assert {"build", "build/out.o", "app.log"} <= set(listed)
    assert not any(p.startswith((".git/", "node_modules")) for p in listed)
    sub = await ok(client, "list_dir", path="src", depth=1)
    assert tree_paths(sub["text"], "src") == ["src/main.py"]


async def test_list_dir_caps_entries_with_note(client: Client[Any],
                                               tool_workspace: Path) -> None:
    for i in range(30):
        write_host_file(tool_workspace, f"f{i:02d}.txt", b"x")
    r = await call(client, "list_dir", max_entries=10)
    out = facts(r)
    assert out["truncated"] and len(tree_paths(out["text"])) == 10
    assert "stopped at 10 entries" in r.content[0].text  # type: ignore[union-attr]
    assert "2000" in await err(client, "list_dir", max_entries=5000)
    assert "not a directory" in await err(client, "list_dir", path="f00.txt")


async def test_di03_outside_change_that_removes_the_anchor_is_reported_stale(
        client: Client[Any], tool_workspace: Path) -> None:
    f = write_host_file(tool_workspace, "anchor.txt", b"alpha\nbeta\n")
    await ok(client, "read_file", path="anchor.txt")
    f.write_bytes(b"gamma\n")  # the edit's anchor is gone from the file now
    msg = await err(client, "edit_file", path="anchor.txt", old_string="alpha",
                    new_string="ALPHA")
    assert "changed since" in msg
    assert f.read_bytes() == b"gamma\n"


async def test_edits_after_own_write_and_edit_need_no_reread(client: Client[Any],
                                                            tool_workspace: Path) -> None:
    await ok(client, "write_file", path="chain.txt", content="one\ntwo\n")
    await ok(client, "edit_file", path="chain.txt", old_string="one", new_string="1")
    await ok(client, "edit_file", path="chain.txt", old_string="two", new_string="2")
    await ok(client, "multi_edit", path="chain.txt", edits=[
        {"old_string": "1", "new_string": "uno"}, {"old_string": "2", "new_string": "dos"}])
    assert (tool_workspace / "chain.txt").read_bytes() == b"uno\ndos\n"
