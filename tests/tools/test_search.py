"""grep and glob through the real MCP client on a Docker-backed server."""

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from tests.tools.conftest import call, err, facts, ok, write_host_file

pytestmark = pytest.mark.docker








def files(ws: Path, spec: dict[str, bytes | str]) -> None:
    for rel, data in spec.items():
        write_host_file(ws, rel, data.encode() if isinstance(data, str) else data)


def git_init(ws: Path) -> None:
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    subprocess.run(["chown", "-R", "1000:1000", str(ws)], check=True)


def age(ws: Path, rel: str, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(ws / rel, (t, t))


# -- PF-11: user data is never an option -------------------------------------------------

async def test_pf11_pattern_pre_sh_is_literal(client: Client[Any], tool_workspace: Path) -> None:
    # If --pre=sh were an option, ripgrep would run `sh FILE` for every file it searches.
    files(tool_workspace, {"has.txt": "run with --pre=sh please\n",
                           "evil.txt": "touch /workspace/pwned\n", "other.txt": "pre sh\n"})
    out = await ok(client, "grep", pattern="--pre=sh")
    assert out["files"] == ["has.txt"]
    content = await ok(client, "grep", pattern="--pre=sh", output_mode="content")
    assert [x["text"] for x in content["lines"]] == ["run with --pre=sh please"]
    assert not (tool_workspace / "pwned").exists()


async def test_pf11_pattern_dash_f_is_literal(client: Client[Any], tool_workspace: Path) -> None:
    # As an option, -f/etc/passwd would read patterns from the container's passwd file.
    files(tool_workspace, {"lit.txt": "x -f/etc/passwd y\n",
                           "passwd_line.txt": "root:x:0:0:root:/root:/bin/bash\n"})
    out = await ok(client, "grep", pattern="-f/etc/passwd")
    assert out["files"] == ["lit.txt"]


async def test_pf11_glob_and_path_named_like_options_are_literal(
        client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"--files": "needle\n", "a.txt": "needle\n"})
    assert (await ok(client, "glob", pattern="--files"))["files"] == ["--files"]
    assert (await ok(client, "grep", pattern="needle", glob="--files"))["files"] == ["--files"]
    assert (await ok(client, "grep", pattern="needle", path="--files"))["files"] == ["--files"]


async def test_pf11_type_must_be_a_plain_name(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"a.py": "x\n"})
    assert "invalid arguments: type" in await err(client, "grep", pattern="x", type="py;sh")
    assert "unrecognized file type" in await err(client, "grep", pattern="x", type="--pre")


# -- grep modes and filters ----------------------------------------------------------------

async def test_grep_files_mode_newest_first(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"old.txt": "hit\n", "new.txt": "hit\n", "mid/m.txt": "hit\n",
                           "none.txt": "miss\n"})
    age(tool_workspace, "old.txt", 300)
    age(tool_workspace, "mid/m.txt", 100)
    out = await ok(client, "grep", pattern="hit")
    assert out["files"] == ["new.txt", "mid/m.txt", "old.txt"]
    assert (out["total"], out["truncated"], out["mode"]) == (3, False, "files_with_matches")


async def test_grep_content_mode_line_numbers_and_context(
        client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"a.txt": "one\ntwo\nHIT three\nfour\nfive\nsix\nHIT seven\n"})
    out = await ok(client, "grep", pattern="HIT", output_mode="content")
    assert [(x["line"], x["text"], x["match"]) for x in out["lines"]] == [
        (3, "HIT three", True), (7, "HIT seven", True)]
    ctx = await call(client, "grep", pattern="HIT", output_mode="content", context=1)
    assert ctx.content[0].text.splitlines() == [  # type: ignore[union-attr]
        "a.txt-2-two", "a.txt:3:HIT three", "a.txt-4-four", "--",
        "a.txt-6-six", "a.txt:7:HIT seven"]
    after = await ok(client, "grep", pattern="three", output_mode="content", after=2)
    assert [(x["line"], x["match"]) for x in after["lines"]] == [
        (3, True), (4, False), (5, False)]
    before = await ok(client, "grep", pattern="three", output_mode="content", before=1,
                      context=5)
    assert [x["line"] for x in before["lines"]] == [2, 3, 4, 5, 6, 7]  # before=1, after=5


async def test_grep_count_mode(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"b.txt": "x\nx\nx x\n", "a.txt": "x\n", "c.txt": "y\n"})
    out = await ok(client, "grep", pattern="x", output_mode="count")
    assert out["counts"] == [{"path": "a.txt", "count": 1}, {"path": "b.txt", "count": 3}]
    assert (out["total"], out["total_matching_lines"]) == (2, 4)
    r = await call(client, "grep", pattern="x", output_mode="count")
    assert r.content[0].text.splitlines() == [  # type: ignore[union-attr]
        "a.txt:1", "b.txt:3", "4 matching lines in 2 files"]


async def test_grep_ignore_case(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"a.txt": "Hello\n", "b.txt": "hello\n"})
    assert (await ok(client, "grep", pattern="HELLO"))["files"] == []
    out = await ok(client, "grep", pattern="HELLO", ignore_case=True, output_mode="count")
    assert [c["path"] for c in out["counts"]] == ["a.txt", "b.txt"]


async def test_grep_glob_and_type_filters(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"a.py": "key\n", "src/b.py": "key\n", "c.js": "key\n",
                           "d.md": "key\n", "src/pkg/test_e.py": "key\n"})
    by_type = await ok(client, "grep", pattern="key", type="py", output_mode="count")
    assert [c["path"] for c in by_type["counts"]] == ["a.py", "src/b.py", "src/pkg/test_e.py"]
    by_glob = await ok(client, "grep", pattern="key", glob="*.{js,md}", output_mode="count")
    assert [c["path"] for c in by_glob["counts"]] == ["c.js", "d.md"]
    nested = await ok(client, "grep", pattern="key", glob="src/**/test_*.py")
    assert nested["files"] == ["src/pkg/test_e.py"]
    in_dir = await ok(client, "grep", pattern="key", path="src", glob="pkg/*.py")
    assert in_dir["files"] == ["src/pkg/test_e.py"]
    excluded = await ok(client, "grep", pattern="key", glob="!*.py", output_mode="count")
    assert [c["path"] for c in excluded["counts"]] == ["c.js", "d.md"]


async def test_grep_multiline(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"a.py": "def f(\n    x,\n):\n    pass\n", "b.py": "def g(): pass\n"})
    assert (await ok(client, "grep", pattern=r"def f\(.*\):"))["files"] == []
    out = await ok(client, "grep", pattern=r"def f\(.*?\):", multiline=True,
                   output_mode="content")
    assert [(x["line"], x["text"]) for x in out["lines"]] == [
        (1, "def f("), (2, "    x,"), (3, "):")]


async def test_grep_head_limit_truncates_and_skip_pages(
        client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"a.txt": "".join(f"hit {i}\n" for i in range(1, 8))})
    first = await call(client, "grep", pattern="hit", output_mode="content", head_limit=3)
    data = facts(first)
    assert data is not None
    assert [x["line"] for x in data["lines"]] == [1, 2, 3]
    assert (data["truncated"], data["total"], data["next_skip"]) == (True, 7, 3)
    assert "pass skip=3" in first.content[0].text  # type: ignore[union-attr]
    last = await ok(client, "grep", pattern="hit", output_mode="content", head_limit=3,
                    skip=6)
    assert [x["line"] for x in last["lines"]] == [7]
    assert (last["truncated"], last["next_skip"]) == (False, None)


async def test_grep_invalid_regex_is_a_clear_error(
        client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"a.txt": "x\n"})
    text = await err(client, "grep", pattern="foo(bar")
    assert text.startswith("invalid regular expression")
    assert "unclosed group" in text


async def test_grep_no_match_is_an_empty_result(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"a.txt": "x\n"})
    for mode in ("files_with_matches", "content", "count"):
        r = await call(client, "grep", pattern="absent", output_mode=mode)
        assert not r.is_error
        data = facts(r)
        assert data is not None
        assert (data["files"], data["lines"], data["counts"], data["total"]) == ([], [], [], 0)
        assert r.content[0].text.startswith("No ")  # type: ignore[union-attr]


@pytest.mark.parametrize("git_repo", [False, True])
async def test_grep_respects_gitignore_with_or_without_a_git_repo(
        client: Client[Any], tool_workspace: Path, git_repo: bool) -> None:
    if git_repo:
        git_init(tool_workspace)
    files(tool_workspace, {".gitignore": "build/\n*.log\n", "build/out.txt": "hit\n",
                           "x.log": "hit\n", "src/a.txt": "hit\n"})
    assert (await ok(client, "grep", pattern="hit"))["files"] == ["src/a.txt"]
    every = await ok(client, "grep", pattern="hit", include_ignored=True, output_mode="count")
    assert [c["path"] for c in every["counts"]] == ["build/out.txt", "src/a.txt", "x.log"]


async def test_grep_never_searches_dot_git_but_finds_hidden_files(
        client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {".git/config": "[core] hit\n", ".git/HEAD": "hit\n",
                           ".env.example": "hit\n", ".github/ci.yml": "hit\n"})
    for include_ignored in (False, True):
        out = await ok(client, "grep", pattern="hit", output_mode="count",
                       include_ignored=include_ignored)
        assert [c["path"] for c in out["counts"]] == [".env.example", ".github/ci.yml"]
    assert (await ok(client, "glob", pattern="**/*", include_ignored=True))["files"] != []
    listed = await ok(client, "glob", pattern="**", include_ignored=True)
    assert not any(p.startswith(".git/") for p in listed["files"])


async def test_grep_skips_binary_files(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"blob.bin": b"\x00\x01\x02 needle \x00" * 10,
                           "text.txt": "needle\n"})
    assert (await ok(client, "grep", pattern="needle"))["files"] == ["text.txt"]


async def test_grep_cuts_long_lines(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"min.js": "a" * 20000 + " needle " + "b" * 20000 + "\n"})
    out = await ok(client, "grep", pattern="needle", output_mode="content")
    [line] = out["lines"]
    assert len(line["text"]) < 600 and "omitted" in line["text"]


async def test_grep_non_utf8_gives_valid_text(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"latin1.txt": b"caf\xe9 needle\n"})
    out = await ok(client, "grep", pattern="needle", output_mode="content")
    assert out["lines"][0]["text"] == "caf\ufffd needle"


async def test_grep_single_file_path(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"src/a.py": "x = 1\ny = 2\n", "src/b.py": "x = 3\n"})
    out = await ok(client, "grep", pattern="x", path="src/a.py", output_mode="content")
    assert [(x["path"], x["line"]) for x in out["lines"]] == [("src/a.py", 1)]
    absolute = await ok(client, "grep", pattern="x", path="/workspace/src", output_mode="count")
    assert [c["path"] for c in absolute["counts"]] == ["src/a.py", "src/b.py"]


async def test_grep_missing_path_is_a_clear_error(
        client: Client[Any], tool_workspace: Path) -> None:
    assert "does not exist" in await err(client, "grep", pattern="x", path="nope")


async def test_grep_nul_in_pattern_is_refused(client: Client[Any], tool_workspace: Path) -> None:
    assert "NUL" in await err(client, "grep", pattern="a\0b")


async def test_grep_unreadable_file_is_a_warning(
        client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"ok.txt": "hit\n", "secret.txt": "hit\n"})
    os.chown(tool_workspace / "secret.txt", 0, 0)
    os.chmod(tool_workspace / "secret.txt", 0o600)
    out = await ok(client, "grep", pattern="hit")
    assert out["files"] == ["ok.txt"]
    assert any("secret.txt" in w and "Permission denied" in w for w in out["warnings"])


# -- PF-10: recursive tools stay inside the workspace ------------------------------------

@pytest.mark.parametrize("path", ["/", "/etc", "..", "../proj2", "/workspace/../etc",
                                  "a/../../etc"])
async def test_pf10_grep_path_outside_is_refused(
        client: Client[Any], tool_workspace: Path, path: str) -> None:
    files(tool_workspace, {"a/x.txt": "root\n"})
    assert "outside the workspace" in await err(client, "grep", pattern="root", path=path)


async def test_pf10_grep_symlinked_dir_is_not_descended(
        client: Client[Any], tool_workspace: Path) -> None:
    os.symlink("/etc", tool_workspace / "etclink")
    os.symlink("/etc/passwd", tool_workspace / "pw")
    files(tool_workspace, {"mine.txt": "root here\n"})
    for include_ignored in (False, True):
        out = await ok(client, "grep", pattern="root", include_ignored=include_ignored)
        assert out["files"] == ["mine.txt"]
    assert "outside the workspace" in await err(client, "grep", pattern="root", path="etclink")
    assert "outside the workspace" in await err(client, "grep", pattern="root", path="pw")


async def test_pf10_glob_parent_pattern_is_refused(
        client: Client[Any], tool_workspace: Path) -> None:
    text = await err(client, "glob", pattern="../**/*")
    assert "cannot contain '..'" in text
    assert "cannot contain '..'" in await err(client, "glob", pattern="src/../../*")


async def test_pf10_glob_absolute_pattern_stays_inside(
        client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"a.py": "", "src/b.py": "", "c.txt": ""})
    out = await ok(client, "glob", pattern="/**/*.py")
    assert sorted(out["files"]) == ["a.py", "src/b.py"]
    assert (await ok(client, "glob", pattern="/workspace/src/*.py"))["files"] == ["src/b.py"]
    assert (await ok(client, "glob", pattern="/etc/**"))["files"] == []
    assert "outside the workspace" in await err(client, "glob", pattern="*.py", path="/")


async def test_pf10_glob_symlinked_dir_is_not_descended(
        client: Client[Any], tool_workspace: Path) -> None:
    os.symlink("/etc", tool_workspace / "etclink")
    os.symlink(".", tool_workspace / "loop")
    files(tool_workspace, {"a.conf": ""})
    out = await ok(client, "glob", pattern="**/*", include_ignored=True)
    assert out["files"] == ["a.conf"]
    assert (await ok(client, "glob", pattern="etclink/**"))["files"] == []


# -- glob ------------------------------------------------------------------------------------

async def test_glob_newest_first(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"old.py": "", "src/new.py": "", "mid.py": "", "x.txt": ""})
    age(tool_workspace, "old.py", 1000)
    age(tool_workspace, "mid.py", 500)
    out = await ok(client, "glob", pattern="**/*.py")
    assert out["files"] == ["src/new.py", "mid.py", "old.py"]
    assert (out["total"], out["truncated"]) == (3, False)


async def test_glob_cap_and_skip(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {f"d/f{i:03}.txt": "" for i in range(600)})
    first = await call(client, "glob", pattern="d/*.txt")
    data = facts(first)
    assert data is not None
    assert (len(data["files"]), data["total"], data["truncated"], data["next_skip"]) == (
        500, 600, True, 500)
    assert "of 600" in first.content[0].text  # type: ignore[union-attr]
    rest = await ok(client, "glob", pattern="d/*.txt", skip=500)
    assert len(rest["files"]) == 100 and not rest["truncated"]
    assert set(data["files"]).isdisjoint(rest["files"])


async def test_glob_relative_to_path_and_anchoring(
        client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"top.py": "", "src/a.py": "", "src/pkg/test_b.py": ""})
    assert (await ok(client, "glob", pattern="/*.py"))["files"] == ["top.py"]
    deep = await ok(client, "glob", pattern="*.py", path="src")
    assert sorted(deep["files"]) == ["src/a.py", "src/pkg/test_b.py"]
    assert (await ok(client, "glob", pattern="pkg/test_*.py", path="src"))["files"] == [
        "src/pkg/test_b.py"]
    assert "not a directory" in await err(client, "glob", pattern="*", path="top.py")


async def test_glob_respects_gitignore(client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {".gitignore": "node_modules/\n", "node_modules/m/i.js": "",
                           "app.js": ""})
    assert (await ok(client, "glob", pattern="**/*.js"))["files"] == ["app.js"]
    every = await ok(client, "glob", pattern="**/*.js", include_ignored=True)
    assert sorted(every["files"]) == ["app.js", "node_modules/m/i.js"]


# -- size ------------------------------------------------------------------------------------

async def test_grep_medium_tree_completes_and_is_capped(
        client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {f"pkg{i % 10}/mod{i}.py": "import os\n" + "x = 1\n" * 50 +
                           "def needle():\n    return os\n" for i in range(300)})
    started = time.monotonic()
    out = await ok(client, "grep", pattern="needle")
    assert (len(out["files"]), out["total"], out["truncated"]) == (250, 300, True)
    content = await ok(client, "grep", pattern="x = 1", output_mode="content")
    assert (len(content["lines"]), content["total"], content["truncated"]) == (500, 15000, True)
    assert time.monotonic() - started < 10


async def test_grep_huge_output_is_stopped_in_the_sandbox(
        client: Client[Any], tool_workspace: Path) -> None:
    files(tool_workspace, {"big.txt": ("needle " + "z" * 90 + "\n") * 60000})  # ~5.8 MB
    r = await call(client, "grep", pattern="needle", output_mode="content", head_limit=10)
    data = facts(r)
    assert data is not None and not r.is_error
    assert [x["line"] for x in data["lines"]] == list(range(1, 11))
    assert (data["truncated"], data["total"], data["next_skip"]) == (True, None, 10)
    assert "stopped after 1 MiB" in r.content[0].text  # type: ignore[union-attr]


async def test_matches_travel_once_and_offset_points_to_skip(
        client: Client[Any], tool_workspace: Path) -> None:
    """Issue #8: grep/glob send their listing once, as text; the entry cursor is `skip`
    (`offset` means a line in read_file only) and the old name says where it went."""
    files(tool_workspace, {f"m{i}.txt": f"needle-{i}\n" for i in range(5)})
    r = await call(client, "grep", pattern="needle", output_mode="content")
    assert r.structured_content is None
    wire = json.dumps(r.meta) + json.dumps(r.content[0].text)  # type: ignore[union-attr]
    assert wire.count("needle-3") == 1 and facts(r)["total"] == 5
    g = await call(client, "glob", pattern="*.txt")
    assert g.structured_content is None and facts(g)["total"] == 5
    for tool in ("grep", "glob"):
        msg = await err(client, tool, pattern="needle", offset=2)
        assert "offset: is not an argument of this tool; page with skip" in msg, msg
