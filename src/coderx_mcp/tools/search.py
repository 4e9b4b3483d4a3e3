"""Search tools: grep (ripgrep over file contents) and glob (file names).

Both run ripgrep inside the session's container through one runner ``exec`` with an argv
list (no shell, no session state touched). User data never becomes an option (see
:mod:`coderx_mcp.tools.search_core`); a ``path`` other than the workspace root is first
resolved by the runner, which refuses anything outside /workspace. Output is bounded
three times: ripgrep cuts long lines, the runner stops ripgrep after ``_STDOUT_LIMIT``
bytes, and the tool shows one page (``skip``/``head_limit``).
"""

import shlex
from typing import Annotated, Any, ClassVar, Literal

from fastmcp import Context, FastMCP
from fastmcp.tools.base import ToolResult
from pydantic import BaseModel, Field

from coderx_mcp.context import session_ops
from coderx_mcp.errors import NotRegularFile, PathNotFound, ToolInputError
from coderx_mcp.ops import SessionOps
from coderx_mcp.tools import search_core as core
from coderx_mcp.tools.common import Out, SessionArg, result, tool

_TIMEOUT_S = 30
_STDOUT_LIMIT = 1 << 20
_CAP = _STDOUT_LIMIT + (512 << 10)  # what remains in the pipe after the stop still fits
_ROOTS = ("", ".", "./", "/workspace", "/workspace/")

PathArg = Annotated[str, Field(
    description="File or directory to search, relative to /workspace or absolute inside it "
                "(default: the whole workspace).", max_length=4096)]
SkipArg = Annotated[int, Field(
    description="Entries (files, lines or count rows) to skip first: next_skip of the "
                "previous page.", ge=0, le=1_000_000)]
IgnoredArg = Annotated[bool, Field(
    description="Also search files ignored by .gitignore/.ignore (node_modules, build "
                "output...).")]


class GrepLine(BaseModel):
    """One output line of content mode."""

    path: str = Field(description="Path relative to /workspace.")
    line: int = Field(description="1-based line number.")
    text: str = Field(description="The line (cut after 500 bytes).")
    match: bool = Field(description="False for a context line.")


class FileCount(BaseModel):
    """Matching lines in one file."""

    path: str
    count: int


class GrepOut(Out):
    """Search results; which list is filled depends on ``mode``."""

    mode: Literal["files_with_matches", "content", "count"]
    files: list[str] = Field(description="files_with_matches: paths, newest first.")
    lines: list[GrepLine] = Field(description="content: matching and context lines.")
    counts: list[FileCount] = Field(description="count: matching lines per file.")
    total: int | None = Field(
        description="Entries found before paging (files, lines or files with counts); null "
                    "when the search was stopped early.")
    total_matching_lines: int | None = Field(description="count mode: sum of the counts.")
    truncated: bool = Field(description="True when more entries exist than were shown.")
    next_skip: int | None = Field(description="The skip that shows the next page.")
    warnings: list[str] = Field(description="Files ripgrep could not read, and similar.")

    payload: ClassVar[frozenset[str]] = frozenset({"files", "lines", "counts"})


class GlobOut(Out):
    """Files matching a glob pattern, newest first."""

    files: list[str] = Field(description="Paths relative to /workspace, newest first.")
    total: int | None = Field(description="Files found; null when the listing was stopped.")
    truncated: bool
    next_skip: int | None

    payload: ClassVar[frozenset[str]] = frozenset({"files"})


async def _target(ops: SessionOps, path: str, need_dir: bool) -> core.Target:
    """Resolve ``path`` in the runner (confined to the workspace) into a search target."""
    if path in _ROOTS:
        return core.Target()
    if "\0" in path:
        raise ToolInputError("path must not contain NUL bytes")
    st = await ops.call("stat", path=path)
    if not st.get("exists"):
        raise PathNotFound(f"{path!r} does not exist in the workspace")
    kind = st.get("type")
    if kind not in ("dir", "file") or (need_dir and kind != "dir"):
        what = "a directory" if need_dir else "a file or directory"
        raise NotRegularFile(f"{path!r} is not {what}")
    return core.target_for(str(st["path"]), str(kind))


async def _run(ops: SessionOps, argv: list[str], target: core.Target,
               term: str) -> tuple[core.Output, list[str], str | None]:
    """Run ripgrep once; returns (output, warnings, why it was stopped early)."""
    r = await ops.exec(shlex.join(argv)[:300], argv=argv, cwd=target.cwd,
                       timeout=_TIMEOUT_S, cap=_CAP, stdout_limit=_STDOUT_LIMIT)
    stderr = r.stderr.text
    stopped = None
    if r.timed_out:
        stopped = f"the search was stopped after {_TIMEOUT_S} s"
    elif r.stopped_at_limit:
        stopped = "the search was stopped after 1 MiB of results"
    elif r.exit_code is None:
        raise ToolInputError(f"ripgrep ended with {r.signal}: {stderr.strip()[:500]}")
    error, warnings = core.split_stderr(stderr, r.exit_code)
    if error is not None:
        raise ToolInputError(error)
    return core.Output.of(r.stdout.model_dump(), stopped is not None, term), warnings, stopped


def _footer(what: str, page: core.Page[Any], skip: int, stopped: str | None,
            narrow: str) -> tuple[str, int | None]:
    """The closing line of a page and the next skip (None when nothing follows)."""
    shown = len(page.items)
    nxt = skip + shown if page.truncated and shown else None
    if not page.truncated and skip == 0:
        return "", None
    span = f"{skip + 1}-{skip + shown}" if shown else "none"
    of = "of more" if page.total is None else f"of {page.total}"
    tip = f"; {stopped}" if stopped else ""
    more = f"; narrow with {narrow} or pass skip={nxt}" if nxt is not None else ""
    return f"[showing {what} {span} {of}{tip}{more}]", nxt


def _join(body: list[str], *extra: str) -> str:
    return "\n".join(body + [e for e in extra if e])


def register(mcp: FastMCP) -> None:
    """Register grep and glob."""

    @tool(mcp, out=GrepOut, read_only=True, idempotent=True, title="Search file contents")
    async def grep(
        ctx: Context,
        pattern: Annotated[str, Field(
            description="Regular expression (Rust regex syntax, like ripgrep); taken "
                        "literally as a pattern even if it starts with '-'.",
            min_length=1, max_length=10_000)],
        path: PathArg = ".",
        glob: Annotated[str | None, Field(
            description="Only files matching this glob, e.g. '*.py', '*.{ts,tsx}', "
                        "'src/**/test_*.py' (relative to path; '!x' excludes).",
            max_length=1000)] = None,
        type: Annotated[str | None, Field(
            description="Only files of this ripgrep type: py, js, ts, rust, go, java, ...",
            pattern=core.TYPE_RE, max_length=64)] = None,
        output_mode: Annotated[Literal["files_with_matches", "content", "count"], Field(
            description="files_with_matches (default): paths; content: matching lines "
                        "with line numbers; count: matching lines per file.")
        ] = "files_with_matches",
        ignore_case: Annotated[bool, Field(description="Case-insensitive search.")] = False,
        context: Annotated[int, Field(
            description="content mode: lines of context around each match.", ge=0, le=50)] = 0,
        before: Annotated[int | None, Field(
            description="content mode: lines before each match (overrides context).",
            ge=0, le=50)] = None,
        after: Annotated[int | None, Field(
            description="content mode: lines after each match (overrides context).",
            ge=0, le=50)] = None,
        head_limit: Annotated[int | None, Field(
            description="Entries to show: files (default 250), lines (default 500) or "
                        "count rows (default 250).", ge=1, le=5000)] = None,
        skip: SkipArg = 0,
        multiline: Annotated[bool, Field(
            description="Let the pattern span lines; '.' also matches newlines.")] = False,
        include_ignored: IgnoredArg = False,
        session: SessionArg = None,
    ) -> ToolResult:
        """Search file contents with ripgrep (regex) inside the sandbox.

        Searches the workspace (or `path`), honouring .gitignore, including hidden files
        but never .git; binary files and symlinks are skipped. Modes: files_with_matches
        lists paths newest-modified first; content shows `path:line:text` (context lines
        `path-line-text`) in path order; count shows `path:N`. Narrow big searches with
        glob, type or path; page with skip. Use this instead of grep/rg in run_command.
        """
        for name, value in (("pattern", pattern), ("glob", glob)):
            if value is not None and "\0" in value:
                raise ToolInputError(f"{name} must not contain NUL bytes (write \\x00 in a "
                                     "pattern to match one)")
        s, ops = session_ops()
        target = await _target(ops, path, need_dir=False)
        argv = core.grep_argv(
            pattern, output_mode, target, glob=glob, type_=type, ignore_case=ignore_case,
            before=context if before is None else before,
            after=context if after is None else after,
            multiline=multiline, include_ignored=include_ignored)
        term = "\0" if output_mode == "files_with_matches" else "\n"
        out, warnings, stopped = await _run(ops, argv, target, term)
        limit = head_limit or core.DEFAULT_LIMITS[output_mode]
        model = GrepOut(session=s.id, mode=output_mode, files=[], lines=[], counts=[],
                        total=None, total_matching_lines=None, truncated=False,
                        next_skip=None, warnings=warnings)
        page: core.Page[Any]
        if output_mode == "files_with_matches":
            page = core.parse_files(out, target, skip, limit)
            model.files = page.items
            body = list(page.items) or ["No files found"]
        elif output_mode == "count":
            page, model.total_matching_lines = core.parse_counts(out, target, skip, limit)
            model.counts = [FileCount(path=p, count=n) for p, n in page.items]
            body = [f"{p}:{n}" for p, n in page.items] or ["No matches found"]
            if model.total_matching_lines is not None and page.items:
                body.append(f"{model.total_matching_lines} matching lines in {page.total} files")
        else:
            page, notes = core.parse_content(out, target, skip, limit)
            model.lines = [GrepLine(path=x.path, line=x.line, text=x.text, match=x.match)
                           for x in page.items]
            model.warnings = warnings + notes
            grouped = bool(context or before or after)
            body = _render_lines(page.items, grouped) or notes or ["No matches found"]
        what = "lines" if output_mode == "content" else "files"
        footer, nxt = _footer(what, page, skip, stopped, "path, glob or type")
        model.total, model.truncated, model.next_skip = page.total, page.truncated, nxt
        return result(model, _join(body, footer, *(f"warning: {w}" for w in warnings)))

    @tool(mcp, out=GlobOut, read_only=True, idempotent=True, title="Find files by name")
    async def glob(
        ctx: Context,
        pattern: Annotated[str, Field(
            description="Glob like '**/*.py', 'src/**/test_*.py', '*.{ts,tsx}'. Relative "
                        "to path; a pattern without '/' matches names at any depth, a "
                        "leading '/' anchors it to path ('/*.py': top level only).",
            min_length=1, max_length=1000)],
        path: Annotated[str, Field(
            description="Directory to search, relative to /workspace or absolute inside it "
                        "(default: the whole workspace).", max_length=4096)] = ".",
        head_limit: Annotated[int, Field(description="Files to show.", ge=1, le=5000)] = 500,
        skip: SkipArg = 0,
        include_ignored: IgnoredArg = False,
        session: SessionArg = None,
    ) -> ToolResult:
        """Find files by glob pattern, newest-modified first.

        Honours .gitignore, includes hidden files but never .git, and never follows
        symlinks. Results are paths relative to /workspace, at most head_limit per call;
        page with skip.
        """
        try:
            pattern = core.normalize_glob(pattern, path in _ROOTS)
        except ValueError as exc:
            raise ToolInputError(str(exc)) from None
        s, ops = session_ops()
        target = await _target(ops, path, need_dir=True)
        argv = core.glob_argv(pattern, target, include_ignored=include_ignored)
        out, warnings, stopped = await _run(ops, argv, target, "\0")
        page = core.parse_files(out, target, skip, head_limit)
        footer, nxt = _footer("files", page, skip, stopped, "the pattern or path")
        model = GlobOut(session=s.id, files=page.items, total=page.total,
                        truncated=page.truncated, next_skip=nxt)
        body = page.items or ["No files found"]
        return result(model, _join(body, footer, *(f"warning: {w}" for w in warnings)))


def _render_lines(lines: list[core.Line], with_context: bool) -> list[str]:
    """ripgrep's own layout: ``path:N:text``, ``path-N-text``, ``--`` between groups."""
    out: list[str] = []
    prev: core.Line | None = None
    for x in lines:
        if with_context and prev is not None and (x.path != prev.path or x.line != prev.line + 1):
            out.append("--")
        out.append(f"{x.path}{':' if x.match else '-'}{x.line}{':' if x.match else '-'}{x.text}")
        prev = x
    return out
