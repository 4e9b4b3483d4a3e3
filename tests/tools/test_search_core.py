"""The pure core of grep and glob: argv building and output parsing, no Docker."""

import pytest

from coderx_mcp.tools import search_core as core
from coderx_mcp.tools.search_core import Output, Target

ROOT = Target()


def test_pf11_pattern_is_never_an_option() -> None:
    for pattern in ("--pre=sh", "-f/etc/passwd", "--files", "-e"):
        argv = core.grep_argv(pattern, "content", ROOT)
        assert f"--regexp={pattern}" in argv
        assert pattern not in argv
        assert argv[-2:] == ["--", "."]
        assert argv.index(f"--regexp={pattern}") < argv.index("--")


def test_pf11_glob_type_and_path_are_never_options() -> None:
    argv = core.grep_argv("x", "files_with_matches", Target(".", "--files", ""),
                          glob="--files", type_="py")
    assert "--glob=--files" in argv and "--type=py" in argv
    assert argv[-2:] == ["--", "--files"]
    assert "--files" not in argv[:-1]
    assert core.glob_argv("--pre=sh", ROOT)[-2:] == ["--", "."]
    assert "--glob=--pre=sh" in core.glob_argv("--pre=sh", ROOT)


def test_dot_git_exclusion_is_the_last_glob() -> None:
    argv = core.grep_argv("x", "count", ROOT, glob=".git/**", include_ignored=True)
    globs = [a for a in argv if a.startswith("--glob=")]
    assert globs == ["--glob=.git/**", "--glob=!.git"]
    assert "--no-ignore" in argv and "--hidden" in argv and "--no-config" in argv


def test_mode_flags() -> None:
    files = core.grep_argv("x", "files_with_matches", ROOT)
    assert "--files-with-matches" in files and "--sortr=modified" in files
    content = core.grep_argv("x", "content", ROOT, before=2, after=3, ignore_case=True,
                             multiline=True)
    for flag in ("--line-number", "--sort=path", "--max-columns=500", "--before-context=2",
                 "--after-context=3", "--ignore-case", "--multiline", "--multiline-dotall"):
        assert flag in content
    assert "--count" in core.grep_argv("x", "count", ROOT)


def test_target_for_dir_and_file() -> None:
    d = core.target_for("src/pkg", "dir")
    assert (d.cwd, d.operand, d.fix("./a.py")) == ("src/pkg", ".", "src/pkg/a.py")
    f = core.target_for("src/a.py", "file")
    assert (f.cwd, f.operand, f.fix("src/a.py")) == (".", "src/a.py", "src/a.py")
    assert ROOT.fix("./a.py") == "a.py"


@pytest.mark.parametrize("bad", ["../**/*", "a/../../x", "..", "a\\..\\b", "", "a\0b"])
def test_pf10_glob_pattern_cannot_climb(bad: str) -> None:
    with pytest.raises(ValueError):
        core.normalize_glob(bad, True)


def test_glob_absolute_workspace_pattern_made_relative() -> None:
    assert core.normalize_glob("/workspace/src/*.py", True) == "/src/*.py"
    assert core.normalize_glob("/**/*.py", True) == "/**/*.py"
    assert core.normalize_glob("..test/*.py", True) == "..test/*.py"


def test_output_cut_drops_the_partial_record() -> None:
    out = Output.of({"text": "a\0b\0par"}, cut=True, term="\0")
    assert (out.text, out.complete) == ("a\0b\0", False)
    whole = Output.of({"text": "a\0b\0"}, cut=False, term="\0")
    assert whole.complete


def test_output_keeps_only_the_head_of_a_head_tail_excerpt() -> None:
    text = "a\0b:1:x\n\n[… 99 bytes omitted: read_output(output_id='x') shows them …]\ntail\n"
    out = Output.of({"text": text, "omitted_bytes": 99}, cut=False)
    assert out.text == "a\0b:1:x\n" and not out.complete


def test_parse_files_pages_and_totals() -> None:
    out = Output.of({"text": "./a\0./b\0./c\0"}, cut=False, term="\0")
    page = core.parse_files(out, Target("src", ".", "src/"), 1, 1)
    assert (page.items, page.total, page.truncated) == (["src/b"], 3, True)
    last = core.parse_files(out, ROOT, 2, 5)
    assert (last.items, last.truncated) == (["c"], False)
    assert core.parse_files(Output("", True), ROOT, 0, 5).items == []


def test_parse_counts() -> None:
    out = Output.of({"text": "./a:b\0003\n./odd\nname\0001\n"}, cut=False)
    page, lines = core.parse_counts(out, ROOT, 0, 10)
    assert page.items == [("a:b", 3), ("odd\nname", 1)]
    assert (page.total, lines, page.truncated) == (2, 4, False)


def test_parse_content_records_context_and_notes() -> None:
    text = ("./a-1:x\x001:hit: one\n./a-1:x\x002-ctx-line\n--\n./b\x0010:2-3\n"
            "b.bin: binary file matches (found \"\\0\" byte around offset 3)\n")
    page, notes = core.parse_content(Output(text, True), ROOT, 0, 10)
    assert page.items == [core.Line("a-1:x", 1, "hit: one", True),
                          core.Line("a-1:x", 2, "ctx-line", False),
                          core.Line("b", 10, "2-3", True)]
    assert page.total == 3 and not page.truncated
    assert notes == ['b.bin: binary file matches (found "\\0" byte around offset 3)']


def test_parse_content_pages_and_counts_the_rest() -> None:
    text = "".join(f"./f\0{i}:line {i}\n" for i in range(1, 11))
    page, _ = core.parse_content(Output(text, True), ROOT, 2, 3)
    assert [x.line for x in page.items] == [3, 4, 5]
    assert (page.total, page.truncated) == (10, True)
    cut, _ = core.parse_content(Output(text, False), ROOT, 0, 100)
    assert (len(cut.items), cut.total, cut.truncated) == (10, None, True)


def test_stderr_regex_error_is_fatal_and_explained() -> None:
    error, warnings = core.split_stderr("regex parse error:\n    (x\n    ^\nerror: unclosed "
                                        "group\n", 2)
    assert error is not None and error.startswith("invalid regular expression")
    assert "unclosed group" in error and warnings == []


def test_stderr_per_file_errors_are_warnings() -> None:
    error, warnings = core.split_stderr("./secret: Permission denied (os error 13)\n", 2)
    assert error is None and warnings == ["./secret: Permission denied (os error 13)"]
    assert core.split_stderr("", 1) == (None, [])
    assert core.split_stderr("", 2)[0] == "ripgrep failed without a message"
