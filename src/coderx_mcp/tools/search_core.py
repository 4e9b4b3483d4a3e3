"""Pure core of the grep and glob tools: ripgrep argv lists in, parsed results out.

Nothing here talks to a sandbox, so it is tested without Docker. Every argv is built so
that user data can never become an option (CWE-88, catalogue PF-11): the pattern goes
after ``--regexp=``, globs and types use their ``--glob=``/``--type=`` forms, and the one
path operand comes after ``--``.

Output formats parsed (ripgrep 13, ``--null`` so paths are NUL-terminated):

- files: ``path\\0path\\0...``
- count: ``path\\0N\\n`` per file
- content: ``path\\0N:text\\n`` for matching lines, ``path\\0N-text\\n`` for context lines,
  ``--\\n`` between context groups; lines are cut by ``--max-columns`` in ripgrep itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

Mode = Literal["files_with_matches", "content", "count"]

MAX_COLUMNS = 500
"""Longer lines are shown as their first 500 bytes plus ripgrep's omission marker."""
DEFAULT_LIMITS: dict[str, int] = {"files_with_matches": 250, "content": 500, "count": 250,
                                  "glob": 500}
TYPE_RE = r"^[A-Za-z0-9_+-]+$"

_COMMON = ("rg", "--no-config", "--color=never", "--hidden", "--no-require-git", "--null")
_RECORD = re.compile(r"([^\0\n]*)\0(\d+)([:-])([^\n]*)\n|([^\n]*)\n")
_COUNT = re.compile(r"([^\0]*)\0(\d+)\n")
_OS_ERROR = re.compile(r"\(os error \d+\)\s*$")


@dataclass(frozen=True)
class Target:
    """Where ripgrep runs: its working directory, its one path operand, and the prefix that
    turns a ``./x`` it prints into a workspace-relative path."""

    cwd: str = "."
    operand: str = "."
    prefix: str = ""

    def fix(self, path: str) -> str:
        """The workspace-relative form of a path ripgrep printed."""
        return self.prefix + path[2:] if path.startswith("./") else path


def target_for(rel: str, kind: str) -> Target:
    """The target for a resolved workspace path (``rel`` as the runner's ``stat`` gives it).

    A directory becomes the working directory (globs are then relative to it); a file is
    searched by name from the workspace root.
    """
    if kind == "dir":
        return Target(rel, ".", "" if rel == "." else rel.rstrip("/") + "/")
    return Target(".", rel, "")


def _filters(glob: str | None, type_: str | None, include_ignored: bool) -> list[str]:
    args = ["--no-ignore"] if include_ignored else []
    if type_:
        args.append(f"--type={type_}")
    if glob:
        args.append(f"--glob={glob}")
    args.append("--glob=!.git")  # last, so it wins over any user glob
    return args


def grep_argv(
    pattern: str,
    mode: Mode,
    target: Target,
    *,
    glob: str | None = None,
    type_: str | None = None,
    ignore_case: bool = False,
    before: int = 0,
    after: int = 0,
    multiline: bool = False,
    include_ignored: bool = False,
) -> list[str]:
    """The ripgrep argv for one grep call.

    Files mode sorts by modification time, newest first; content and count modes sort by
    path, so ``skip`` pages through a stable order.
    """
    argv = list(_COMMON)
    if mode == "files_with_matches":
        argv += ["--files-with-matches", "--sortr=modified"]
    elif mode == "count":
        argv += ["--count", "--with-filename", "--sort=path"]
    else:
        argv += ["--line-number", "--with-filename", "--no-heading", "--sort=path",
                 f"--max-columns={MAX_COLUMNS}", "--max-columns-preview"]
        if before:
            argv.append(f"--before-context={before}")
        if after:
            argv.append(f"--after-context={after}")
    if ignore_case:
        argv.append("--ignore-case")
    if multiline:
        argv += ["--multiline", "--multiline-dotall"]
    argv += _filters(glob, type_, include_ignored)
    argv += [f"--regexp={pattern}", "--", target.operand]
    return argv


def glob_argv(pattern: str, target: Target, *, include_ignored: bool = False) -> list[str]:
    """The ripgrep argv listing files that match ``pattern``, newest first."""
    return [*_COMMON, "--files", "--sortr=modified",
            *_filters(pattern, None, include_ignored), "--", target.operand]


def normalize_glob(pattern: str, at_root: bool, root: str = "/workspace") -> str:
    """Check a glob pattern and make a workspace-absolute one relative.

    Raises:
        ValueError: The pattern is empty, has a NUL byte or a ``..`` component.
    """
    if not pattern or "\0" in pattern:
        raise ValueError("the glob pattern must be non-empty and without NUL bytes")
    if ".." in pattern.replace("\\", "/").split("/"):
        raise ValueError(
            "glob patterns match paths inside `path` and cannot contain '..'; pass a "
            "directory inside the workspace as `path` instead")
    if at_root and (pattern == root or pattern.startswith(root + "/")):
        pattern = pattern[len(root):] or "/"
    return pattern


@dataclass
class Output:
    """What ripgrep printed, after the runner's limits."""

    text: str
    complete: bool
    """False when the output was cut (stdout limit or timeout): the last record is dropped."""

    @classmethod
    def of(cls, stdout: dict[str, object], cut: bool, term: str = "\n") -> Output:
        """From the runner's ``stdout`` excerpt; ``term`` ends each record."""
        text = str(stdout.get("text", ""))
        if stdout.get("omitted_bytes"):
            # The runner kept head + tail around a marker: keep the head only.
            at = text.find(" bytes omitted: read_output(")
            text = text[: text.rfind("\n[… ", 0, at)] if at >= 0 else text
            cut = True
        if cut:
            text = text[: text.rfind(term) + 1]
        return cls(text, not cut)


@dataclass
class Page(Generic[T]):
    """One page of results: the entries shown and how many there were in all."""

    items: list[T] = field(default_factory=list)
    total: int | None = None
    truncated: bool = False


def parse_files(out: Output, target: Target, skip: int, limit: int) -> Page[str]:
    """Paths of ``--files``/``--files-with-matches --null`` output, one page of them."""
    paths = out.text.split("\0")
    if paths and paths[-1] == "":
        paths.pop()
    shown = [target.fix(p) for p in paths[skip: skip + limit]]
    more = len(paths) > skip + limit
    return Page(shown, len(paths) if out.complete else None, more or not out.complete)


def parse_counts(out: Output, target: Target, skip: int,
                 limit: int) -> tuple[Page[tuple[str, int]], int | None]:
    """``(page of (path, count) pairs, total matching lines)`` of ``--count --null`` output."""
    pairs = [(m[1], int(m[2])) for m in _COUNT.finditer(out.text)]
    total_lines = sum(n for _, n in pairs) if out.complete else None
    shown = [(target.fix(p), n) for p, n in pairs[skip: skip + limit]]
    more = len(pairs) > skip + limit
    return (Page(shown, len(pairs) if out.complete else None, more or not out.complete),
            total_lines)


@dataclass(frozen=True)
class Line:
    """One output line of content mode; ``match`` is False for a context line."""

    path: str
    line: int
    text: str
    match: bool


def parse_content(out: Output, target: Target, skip: int,
                  limit: int) -> tuple[Page[Line], list[str]]:
    """``(page of Line, notes)`` of content-mode output.

    Notes are ripgrep's lines that are not records (``binary file matches ...`` for a
    binary file named explicitly). Only the shown page is parsed; the rest is counted.
    """
    text = out.text
    lines: list[Line] = []
    notes: list[str] = []
    seen = 0
    stop = skip + limit
    end = len(text)
    more = False
    for m in _RECORD.finditer(text):
        path = m[1]
        if path is None:
            other = m[5]
            if other and other != "--" and len(notes) < 5:
                notes.append(other[:MAX_COLUMNS])
            continue
        if seen >= stop:
            end, more = m.start(), True
            break
        if seen >= skip:
            lines.append(Line(target.fix(path), int(m[2]), m[4], m[3] == ":"))
        seen += 1
    total = seen + text.count("\0", end) if out.complete else None
    return Page(lines, total, more or not out.complete), notes


def split_stderr(stderr: str, exit_code: int | None) -> tuple[str | None, list[str]]:
    """``(fatal error, warnings)`` from ripgrep's stderr and exit code.

    Exit 2 means an error; it is fatal (bad regex, glob or type) unless every line is a
    per-file OS error (``... (os error 13)``), which leaves the other results valid.
    """
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if exit_code == 2 and (not lines or not all(_OS_ERROR.search(ln) for ln in lines)):
        message = stderr.strip() or "ripgrep failed without a message"
        if "regex parse error" in message:
            message = ("invalid regular expression (Rust regex syntax: escape literal "
                       "( ) [ ] { } . * + ? | \\ with a backslash):\n" + message)
        return message[:2000], []
    return None, [ln[:300] for ln in lines[:5]]
