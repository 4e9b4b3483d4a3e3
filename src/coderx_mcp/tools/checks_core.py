"""Pure helpers of the checks tools: argv building, JUnit XML and ruff JSON parsing, text.

No MCP and no I/O: the tools run the argv in the sandbox and hand the outputs here.
"""

from __future__ import annotations

import json
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from coderx_mcp.errors import ToolInputError

WORKSPACE = "/workspace"
MAX_TRACEBACK = 2000
MAX_FAILURES = 50
_LOCATION = re.compile(r"^(?P<file>[^\s:][^:]*\.\w+):(?P<line>\d+):", re.MULTILINE)

Status = Literal["passed", "failed", "errors", "no_tests", "collection_error", "no_pytest",
                 "timeout", "running", "usage_error", "no_report"]


class Counts(BaseModel):
    """Test counts from the JUnit report."""

    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    xfailed: int = 0
    duration_s: float = 0.0


class Failure(BaseModel):
    """One failed or erroring test."""

    id: str = Field(description="Test id, e.g. tests/test_x.py::TestA::test_b[1].")
    kind: Literal["failed", "error"]
    file: str | None
    line: int | None = Field(description="Line of the failure (1-based), when known.")
    message: str
    traceback: str = Field(description="Short traceback (cut).")


class Diagnostic(BaseModel):
    """One ruff finding."""

    file: str
    line: int
    column: int
    code: str | None
    message: str
    fixable: bool = Field(description="A safe fix exists (lint fix=true applies it).")
    url: str | None


def check_operand(value: str, name: str) -> str:
    """A path operand: never an option, never a NUL (it goes after ``--`` anyway)."""
    if value.startswith("-"):
        raise ToolInputError(f"{name} must not start with '-' (it is a path, not an option)")
    if "\0" in value:
        raise ToolInputError(f"{name} must not contain NUL bytes")
    return value


def junit_tmp(output_id: str) -> str:
    """Where a pytest run spools its JUnit report inside the sandbox (tmpfs, not the tree)."""
    return f"/tmp/coderx-junit-{output_id}.xml"


def pytest_argv(pytest: Sequence[str], path: str, args: Sequence[str], junit: str) -> list[str]:
    """``python3 -m pytest`` with a JUnit report (xunit1: it carries file and line)."""
    return [*pytest, f"--junitxml={junit}", "-o", "junit_family=xunit1",
            "-p", "no:cacheprovider", "--tb=short", *args, "--", check_operand(path, "path")]


def ruff_check_argv(path: str, select: Sequence[str] | None, fix: bool) -> list[str]:
    """``ruff check`` with JSON output (``--fix`` applies safe fixes only)."""
    argv = ["ruff", "check", "--no-cache", "--output-format=json", "--exit-zero"]
    if select:
        argv.append("--select=" + ",".join(select))
    if fix:
        argv.append("--fix")
    return [*argv, "--", check_operand(path, "path")]


def ruff_diff_argv(path: str, select: Sequence[str] | None) -> list[str]:
    """``ruff check --fix --diff``: the diff the safe fixes would make, nothing written."""
    argv = ["ruff", "check", "--no-cache", "--fix", "--diff", "--exit-zero"]
    if select:
        argv.append("--select=" + ",".join(select))
    return [*argv, "--", check_operand(path, "path")]


def ruff_format_argv(path: str, mode: Literal["check", "diff", "write"]) -> list[str]:
    """``ruff format`` in check (list), diff or write mode."""
    flag = {"check": ["--check", "--output-format=json"], "diff": ["--diff"],
            "write": []}[mode]
    return ["ruff", "format", "--no-cache", *flag, "--", check_operand(path, "path")]


def _rel(path: str, cwd: str = WORKSPACE) -> str:
    full = posixpath.normpath(posixpath.join(cwd, path))
    return posixpath.relpath(full, WORKSPACE) if full.startswith(WORKSPACE) else full


def _test_id(case: ET.Element, file: str | None) -> str:
    name = case.get("name", "?")
    classname = case.get("classname", "")
    if not file:
        return f"{classname}::{name}" if classname else name
    module = file[:-3].replace("/", ".") if file.endswith(".py") else ""
    inner = classname[len(module):].lstrip(".") if module and classname.startswith(module) \
        else ""
    return "::".join(p for p in (file, inner.replace(".", "::"), name) if p)


def _failure(case: ET.Element, node: ET.Element, kind: Literal["failed", "error"],
             cwd: str) -> Failure:
    file = case.get("file")
    text = (node.text or "").strip()
    line = int(case.get("line", "-1")) + 1 if case.get("line") else None
    hits = list(_LOCATION.finditer(text))
    if hits:  # the innermost frame of the short traceback is where it failed
        file, line = hits[-1].group("file"), int(hits[-1].group("line"))
    tb = text if len(text) <= MAX_TRACEBACK else "…" + text[-MAX_TRACEBACK:]
    rel = _rel(file, cwd) if file else None
    return Failure(id=_test_id(case, case.get("file")), kind=kind, file=rel, line=line,
                   message=(node.get("message") or text.partition("\n")[0])[:500],
                   traceback=tb)


def parse_junit(xml: str, cwd: str = WORKSPACE) -> tuple[Counts, list[Failure], bool]:
    """Counts, failures (first :data:`MAX_FAILURES`) and whether a collection error
    happened, from any JUnit XML (pytest, node --test, jest-junit, gotestsum, nextest).

    Raises:
        ValueError: The text is not JUnit XML.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"the JUnit report is not valid XML ({exc})") from None
    suites = [root] if root.tag == "testsuite" else root.findall(".//testsuite")
    if root.tag not in ("testsuite", "testsuites"):
        raise ValueError(f"the report's root element is <{root.tag}>, not JUnit's <testsuites>")
    c = Counts()
    failures: list[Failure] = []
    collection = False
    for suite in suites:
        c.duration_s += float(suite.get("time") or 0)
        for case in suite.findall("testcase"):
            c.tests += 1
            bad = case.find("failure")
            err = case.find("error")
            skip = case.find("skipped")
            if bad is not None:
                c.failed += 1
                failures.append(_failure(case, bad, "failed", cwd))
            elif err is not None:
                c.errors += 1
                collection |= "collection failure" in (err.get("message") or "")
                failures.append(_failure(case, err, "error", cwd))
            elif skip is not None:
                if skip.get("type") == "pytest.xfail":
                    c.xfailed += 1
                else:
                    c.skipped += 1
            else:
                c.passed += 1
    c.duration_s = round(c.duration_s, 3)
    return c, failures[:MAX_FAILURES], collection


def pytest_status(exit_code: int | None, counts: Counts | None, collection: bool,
                  console: str) -> Status:
    """What a pytest run came to, from its exit code (0-5) and report."""
    if exit_code in (1, 127) and ("No module named pytest" in console
                                  or "command not found" in console):
        return "no_pytest"
    if collection or (exit_code == 2 and "error" in console and "collect" in console):
        return "collection_error"
    if exit_code == 4:
        return "usage_error"
    if exit_code == 5 or (counts is not None and counts.tests == 0 and exit_code == 0):
        return "no_tests"
    return command_status(exit_code, counts)


def command_status(exit_code: int | None, counts: Counts | None) -> Status:
    """What any JUnit-producing run came to."""
    if counts is None:
        return "no_report"
    if counts.tests == 0:
        return "no_tests"
    if counts.failed:
        return "failed"
    if counts.errors:
        return "errors"
    return "passed" if exit_code in (0, None) or not counts.failed else "failed"


def parse_ruff(output: str, cwd: str = WORKSPACE) -> list[Diagnostic]:
    """Diagnostics from ``ruff check --output-format=json``.

    Raises:
        ValueError: The output is not ruff's JSON.
    """
    try:
        items = json.loads(output)
    except ValueError:
        raise ValueError("ruff did not print JSON") from None
    out = []
    for d in items:
        loc = d.get("location") or {}
        fix = d.get("fix")
        out.append(Diagnostic(
            file=_rel(d.get("filename", "?"), cwd), line=int(loc.get("row", 0)),
            column=int(loc.get("column", 0)), code=d.get("code"), message=d.get("message", ""),
            fixable=bool(fix and fix.get("applicability") == "safe"), url=d.get("url")))
    return out


def would_reformat(output: str, cwd: str = WORKSPACE) -> list[str]:
    """Files ``ruff format --check`` would change (its JSON output, or the older
    ``Would reformat: FILE`` lines)."""
    try:
        return sorted({d.file for d in parse_ruff(output, cwd)})
    except (ValueError, AttributeError, TypeError):
        return [_rel(line.removeprefix("Would reformat: ").strip(), cwd)
                for line in output.splitlines() if line.startswith("Would reformat: ")]


def counts_line(c: Counts) -> str:
    """``3 passed, 1 failed, 2 skipped in 0.4 s`` (zero counts left out)."""
    parts = [f"{n} {word}" for n, word in ((c.passed, "passed"), (c.failed, "failed"),
                                           (c.errors, "errors"), (c.skipped, "skipped"),
                                           (c.xfailed, "xfailed")) if n]
    return (", ".join(parts) or "no tests") + f" in {c.duration_s:g} s"


def render_failures(failures: Sequence[Failure], more: int) -> str:
    """Failures as ``id (file:line): message`` blocks with their short tracebacks."""
    blocks = []
    for f in failures:
        where = f" ({f.file}:{f.line})" if f.file and f.line else ""
        tb = "\n".join("    " + ln for ln in f.traceback.splitlines()[-15:])
        blocks.append(f"{f.kind.upper()} {f.id}{where}: {f.message}\n{tb}")
    if more:
        blocks.append(f"… and {more} more failures (see the full log with read_output)")
    return "\n".join(blocks)
