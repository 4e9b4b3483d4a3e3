"""The pure helpers of the file tools, without MCP or a sandbox."""

import base64
import hashlib

import pytest

from coderx_mcp.errors import ToolInputError
from coderx_mcp.ops import ReadResult
from coderx_mcp.text import BinaryFileError, TextError, UnsupportedEncodingError, encode
from coderx_mcp.tools import files_core as core


def _whole(data: bytes, path: str = "f.txt") -> ReadResult:
    return ReadResult.model_validate({
        "path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "whole": True, "data": base64.b64encode(data).decode()})


def _window(data: bytes, first: int, limit: int) -> ReadResult:
    """What the runner sends for a file above its max_bytes (lines first..first+limit-1)."""
    lines = data.splitlines(keepends=True)
    window = b"".join(lines[first - 1:first - 1 + limit])
    return ReadResult.model_validate({
        "path": "big.txt", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "whole": False, "total_lines": len(lines), "line_offset": first,
        "head": base64.b64encode(data[:8192]).decode(),
        "data": base64.b64encode(window).decode()})


@pytest.mark.parametrize("bad", ["a\x00b", "a\nb", "x\r", "\x7f"])
def test_check_path_refuses_control_characters_without_echo(bad: str) -> None:
    with pytest.raises(ToolInputError) as info:
        core.check_path("secret-" + bad)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(("path", "key"), [
    ("a.txt", "a.txt"), ("./a.txt", "a.txt"), ("/workspace/a.txt", "a.txt"),
    ("/workspace", "."), ("src//x/../y.py", "src/y.py"), ("/workspacex/a", "/workspacex/a")])
def test_lock_key_normalises_to_workspace_relative(path: str, key: str) -> None:
    assert core.lock_key(path) == key


def test_view_whole_renders_and_reports_encoding() -> None:
    v = core.view_whole(_whole(b"\xef\xbb\xbfa\r\nb\r\n"), 1, 10, 40_000)
    assert (v.content, v.total_lines, v.bom, v.newline, v.encoding) == (
        "  1|a\n  2|b", 2, True, "\r\n", "utf-8-sig")
    assert core.view_whole(_whole(b""), 5, 10, 40_000).total_lines == 0  # empty: offset ignored
    with pytest.raises(BinaryFileError, match="binary file, 5 bytes"):
        core.view_whole(_whole(b"a\x00bcd"), 1, 10, 40_000)


def test_view_window_numbers_lines_from_offset() -> None:
    data = b"".join(b"l%d\n" % i for i in range(1, 2001))
    v = core.view_window(_window(data, 999, 3), 999, 3, 1000, 40_000)
    assert v.content == " 999|l999\n1000|l1000\n1001|l1001"
    assert (v.first_line, v.last_line, v.truncated, v.next_offset, v.whole) == (
        999, 1001, True, 1002, False)
    end = core.view_window(_window(data, 1999, 10), 1999, 10, 1000, 40_000)
    assert (end.last_line, end.truncated, end.next_offset) == (2000, False, None)
    with pytest.raises(TextError, match="beyond the end"):
        core.view_window(_window(data, 3000, 1), 3000, 1, 1000, 40_000)


def test_view_window_refuses_binary_and_utf16() -> None:
    with pytest.raises(BinaryFileError):
        core.view_window(_window(b"\x89PNG\r\n\x1a\n" + b"x\n" * 10, 1, 2), 1, 2, 10, 40_000)
    with pytest.raises(UnsupportedEncodingError):
        core.view_window(_window(b"\xff\xfea\x00\n\x00" * 10, 1, 2), 1, 2, 10, 40_000)


def test_view_whole_stops_at_the_character_cap_on_a_whole_line() -> None:
    v = core.view_whole(_whole(b"".join(b"%03d" % i + b"z" * 96 + b"\n" for i in range(50))),
                        1, 2000, 2_000)
    assert (v.first_line, v.last_line, v.truncated, v.next_offset) == (1, 19, True, 20)
    assert len(v.content) <= 2_000 and v.content.endswith("018" + "z" * 96)
    v = core.view_window(_window(b"y" * 5000 + b"\n" + b"short\n", 1, 2), 1, 2, 1 << 20, 2_000)
    assert (v.last_line, v.next_offset) == (1, 2)  # one (cut) line is always shown


def test_read_text_header_and_hint() -> None:
    v = core.view_whole(_whole(b"a\nb\nc\n"), 1, 2, 40_000)
    text = core.read_text(v)
    assert text.startswith("f.txt (3 lines, 6 bytes, utf-8, LF, sha256 ")
    assert text.endswith("[1 more lines: call read_file with offset=3 to continue]")
    assert "is empty" in core.read_text(core.view_whole(_whole(b""), 1, 2, 40_000))


def test_like_for_write_keeps_only_a_bom() -> None:
    assert encode("x", core.like_for_write(b"\xef\xbb\xbfold")) == b"\xef\xbb\xbfx"
    assert encode("x", core.like_for_write(b"\xff\xfeo\x00")) == b"\xff\xfex\x00"
    assert encode("x", core.like_for_write(b"old")) == b"x"
    assert encode("x", core.like_for_write(None)) == b"x"


def test_stale_and_not_read_messages() -> None:
    msg = core.stale_message("a.py", "1" * 64, "2" * 64)
    assert "a.py changed since this session read it (hash 111111111111, now 222222222222)" in msg
    assert "re-read" in msg
    assert "deleted" in core.stale_message("a.py", "1" * 64, None)
    assert str(core.not_read_error("a.py")).startswith(
        "refusing to overwrite a.py: read it first with read_file (or pass expected_hash)")


def test_git_check_ignore_helpers() -> None:
    entries = [{"path": "build", "type": "dir"}, {"path": "build/o", "type": "file"},
               {"path": "a.log", "type": "file"}, {"path": "src", "type": "dir"},
               {"path": "src/m.py", "type": "file"}, {"path": 'we"ird\tname', "type": "file"}]
    assert core.check_ignore_batches(entries)[0][:2] == ["build/", "build/o"]
    assert len(core.check_ignore_batches(entries, budget=12)) > 1
    ignored = core.parse_check_ignore('build/\na.log\n"we\\"ird\\tname"\n')
    assert ignored == {"build", "a.log", 'we"ird\tname'}
    assert [e["path"] for e in core.drop_ignored(entries, ignored)] == ["src", "src/m.py"]
    assert core.parse_check_ignore('"caf\\303\\251"\n') == {"café"}


def test_tree_text_indents_and_notes_truncation() -> None:
    entries = [{"path": "src", "type": "dir", "size": None},
               {"path": "src/m.py", "type": "file", "size": 2048},
               {"path": "ln", "type": "symlink", "size": None}]
    text = core.tree_text(".", entries, True, 3, 2)
    assert text.splitlines() == [
        "./ (3 entries, 2 gitignored hidden)", "  src/", "    m.py  2.0 KB", "  ln -> (symlink)",
        "[listing stopped at 3 entries: list a subdirectory, lower depth or raise max_entries "
        "(up to 2000)]"]
    sub = core.tree_text("src", entries[1:2], False, 10, 0)
    assert sub.splitlines() == ["src/ (1 entries)", "  m.py  2.0 KB"]
    assert (core.human_size(5), core.human_size(3 << 20)) == ("5 B", "3.0 MB")
