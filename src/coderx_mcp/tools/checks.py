"""Checks tools: run tests (pytest or any JUnit producer), lint and format with ruff.

Everything runs inside the session's container as an argv (never a shell string), so a
path like ``t; touch /tmp/pwn`` is just a path that does not exist. Parsing lives in
:mod:`coderx_mcp.tools.checks_core`.
"""

import posixpath
import secrets
from typing import Annotated

from fastmcp import Context, FastMCP
from fastmcp.tools.base import ToolResult
from pydantic import Field

from coderx_mcp.context import app_of, session_ops
from coderx_mcp.errors import ToolInputError
from coderx_mcp.ops import ExecResult, SessionOps
from coderx_mcp.tools import checks_core as core
from coderx_mcp.tools.common import Out, SessionArg, result, tool
from coderx_mcp.tools.progress import following

REPORT_CAP = 16 << 20
TAIL_LINES = 40
LINT_TIMEOUT_S = 300

PathArg = Annotated[str, Field(
    description="File or directory, relative to /workspace.", min_length=1, max_length=4096)]
JunitArg = Annotated[str | None, Field(
    description="With `command`: the JUnit XML file the command writes (relative to `path`).",
    min_length=1, max_length=4096)]


class TestsOut(Out):
    """The structured outcome of a test run."""

    status: core.Status = Field(description="passed, failed, errors, no_tests, "
                                            "collection_error, no_pytest, timeout, running "
                                            "(call run_tests_result), usage_error, no_report.")
    counts: core.Counts
    failures: list[core.Failure]
    exit_code: int | None
    output_id: str = Field(description="Full console log: read_output(output_id).")
    console_tail: str = Field(description="The last lines of the console output.")
    duration_ms: float


class LintOut(Out):
    """ruff diagnostics (after fixes, with fix=true) and the diff of applied fixes."""

    diagnostics: list[core.Diagnostic]
    total: int
    fixable: int
    diff: str | None = Field(description="The fixes applied (fix=true), as a unified diff.")


class FormatOut(Out):
    """ruff format: files that would change (check) or the diff applied."""

    files: list[str]
    diff: str | None
    changed: bool


async def _tail(ops: SessionOps, oid: str) -> str:
    page = await ops.output(oid, tail=16384, lines=TAIL_LINES)
    return page.text


async def _report(ops: SessionOps, junit: str, cwd: str | None, remove: bool) -> str | None:
    """The JUnit report's text, or None when the run wrote none."""
    r = await ops.exec(f"cat {junit}", argv=["cat", "--", junit], cwd=cwd, timeout=60,
                       cap=REPORT_CAP)
    if remove:
        await ops.exec("rm junit", argv=["rm", "-f", "--", junit], timeout=30, cap=1000)
    return r.stdout.text if r.exit_code == 0 else None


async def _finish(ops: SessionOps, oid: str, run: ExecResult, junit: str | None,
                  cwd: str | None) -> ToolResult:
    """Read the report of a finished run and build the result."""
    console = await _tail(ops, oid)
    pytest_mode = junit is None
    path = core.junit_tmp(oid) if junit is None else junit
    xml = None if run.timed_out else await _report(ops, path, cwd, remove=pytest_mode)
    counts, collection = core.Counts(), False
    failures: list[core.Failure] = []
    problem = ""
    if xml is not None:
        try:
            counts, failures, collection = core.parse_junit(
                xml, posixpath.join(core.WORKSPACE, cwd or "."))
        except ValueError as exc:
            xml, problem = None, str(exc)
    parsed = counts if xml is not None else None
    if run.timed_out:
        status: core.Status = "timeout"
    elif pytest_mode:
        status = core.pytest_status(run.exit_code, parsed, collection, console)
    else:
        status = core.command_status(run.exit_code, parsed)
    s = ops.session
    out = TestsOut(session=s.id, status=status, counts=counts, failures=failures,
                   exit_code=run.exit_code, output_id=oid, console_tail=console,
                   duration_ms=run.duration_ms)
    return result(out, _render(out, problem or (f"no JUnit report at {path}" if xml is None
                                                else "")))


def _render(out: TestsOut, problem: str) -> str:
    head = {"passed": "PASSED", "failed": "FAILED", "errors": "ERRORS", "no_tests":
            "NO TESTS collected", "collection_error": "COLLECTION ERROR (tests could not be "
            "imported)", "no_pytest": "pytest is not installed in this sandbox (install it: a "
            "bridge-network session and pip, or an image built on coderx-sandbox)",
            "timeout": "TIMED OUT (process group killed)", "usage_error": "pytest USAGE ERROR "
            "(bad path or option)", "no_report": "NO REPORT", "running": "RUNNING"}[out.status]
    lines = [f"{head}: {core.counts_line(out.counts)} (exit {out.exit_code})"]
    more = out.counts.failed + out.counts.errors - len(out.failures)
    if out.failures:
        lines.append(core.render_failures(out.failures, more))
    if problem and out.status not in ("passed", "failed", "errors"):
        lines.append(problem)
    lines.append(f"--- console (last lines; full log: read_output(\"{out.output_id}\")) ---")
    lines.append(out.console_tail.rstrip())
    return "\n".join(lines)


async def _ruff(ops: SessionOps, argv: list[str]) -> ExecResult:
    r = await ops.exec(" ".join(argv[:3]), argv=argv, timeout=LINT_TIMEOUT_S, cap=REPORT_CAP)
    if r.exit_code == 127 or "No such file or directory: 'ruff'" in r.stderr.text:
        raise ToolInputError("ruff is not installed in this sandbox image")
    if r.exit_code not in (0, 1):
        msg = (r.stderr.text.strip() or r.stdout.text.strip()).splitlines()
        raise ToolInputError(f"ruff failed: {msg[-1] if msg else f'exit {r.exit_code}'}")
    return r


def register(mcp: FastMCP) -> None:
    """Register the checks tools."""

    @tool(mcp, out=TestsOut, read_only=False, destructive=False, title="Run tests")
    async def run_tests(
        ctx: Context,
        path: PathArg = ".",
        args: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(
            description="Extra pytest arguments, one per item (e.g. ['-k', 'login', '-x']).",
            max_length=100)] = [],  # noqa: B006 - pydantic copies defaults
        timeout: Annotated[float, Field(description="Seconds before the run is killed.",
                                        gt=0, le=3600)] = 600,
        return_after: Annotated[float | None, Field(
            description="Seconds after which a still-running run continues in the background "
                        "(default 50); fetch its result with run_tests_result.", gt=0,
            le=3600)] = None,
        command: Annotated[list[Annotated[str, Field(max_length=4096)]] | None, Field(
            description="Instead of pytest: any test command (argv) that writes JUnit XML, "
                        "e.g. ['node', '--test', '--test-reporter=junit', "
                        "'--test-reporter-destination=report.xml'].",
            min_length=1, max_length=200)] = None,
        junit: JunitArg = None,
        session: SessionArg = None,
    ) -> ToolResult:
        """Run the tests and return structured results: counts, each failure's test id,
        file, line, message and short traceback, and the console's last lines.

        By default runs pytest on `path` (unittest suites too). With `command` (argv, run in
        `path`) and `junit`, runs any runner that writes JUnit XML. A run still going after
        `return_after` seconds continues in the background: run_tests_result(output_id)
        returns its result once it ends.
        """
        if (command is None) != (junit is None):
            raise ToolInputError("pass `command` and `junit` together (or neither for pytest)")
        st = app_of(ctx).settings
        s, ops = session_ops()
        oid = secrets.token_hex(4)
        back = return_after or st.return_after_s
        if command is None:
            argv = core.pytest_argv(st.pytest_command, path, args, core.junit_tmp(oid))
            cwd = None
        else:
            argv, cwd = command, core.check_operand(path, "path")
            core.check_operand(junit or "", "junit")
        async with following(ctx, ops, oid, min(timeout, back)):
            r = await ops.exec(" ".join(argv)[:300], argv=argv, cwd=cwd, timeout=timeout,
                               cap=st.output_cap, return_after=back, output_id=oid)
        if r.running:
            out = TestsOut(session=s.id, status="running", counts=core.Counts(), failures=[],
                           exit_code=None, output_id=oid, console_tail=await _tail(ops, oid),
                           duration_ms=r.duration_ms)
            return result(out, f"still running after {back:g} s as {oid}; get the result "
                               f'with run_tests_result(output_id="{oid}"'
                               + (f', junit="{junit}", path="{path}"' if junit else "") + ")")
        return await _finish(ops, oid, r, junit, cwd)

    @tool(mcp, out=TestsOut, read_only=True, title="Result of a background test run")
    async def run_tests_result(
        ctx: Context,
        output_id: Annotated[str, Field(description="output_id from run_tests.",
                                        min_length=4, max_length=32, pattern=r"^[A-Za-z0-9]+$")],
        wait: Annotated[float, Field(description="Seconds to wait for the run to end.",
                                     ge=0, le=30)] = 10,
        path: PathArg = ".",
        junit: JunitArg = None,
        session: SessionArg = None,
    ) -> ToolResult:
        """The structured result of a run_tests that went to the background (waits up to
        `wait` seconds for it to end). Pass the same `path` and `junit` as the run."""
        s, ops = session_ops()
        page = await ops.output(output_id, offset=1 << 40, limit=1, wait=wait)
        if page.running:
            out = TestsOut(session=s.id, status="running", counts=core.Counts(), failures=[],
                           exit_code=None, output_id=output_id,
                           console_tail=await _tail(ops, output_id), duration_ms=0)
            return result(out, f"{output_id} is still running; ask again later")
        run = ExecResult(output_id=output_id, exit_code=page.exit_code, signal=page.signal,
                         timed_out=page.timed_out)
        return await _finish(ops, output_id, run, junit,
                             None if junit is None else core.check_operand(path, "path"))

    @tool(mcp, out=LintOut, read_only=False, destructive=True, title="Lint with ruff")
    async def lint(
        ctx: Context,
        path: PathArg = ".",
        fix: Annotated[bool, Field(description="Apply ruff's safe fixes and return the diff.")]
            = False,
        select: Annotated[list[Annotated[str, Field(pattern=r"^[A-Z]+[0-9]*$")]] | None, Field(
            description="Rule codes or prefixes to check, e.g. ['E', 'F401'] (default: the "
                        "project's ruff configuration).", max_length=100)] = None,
        session: SessionArg = None,
    ) -> ToolResult:
        """Lint Python code with ruff: each finding's file, line, column, code, message,
        whether a safe fix exists, and its documentation URL. With fix=true, applies the
        safe fixes, returns their diff and the findings that remain."""
        s, ops = session_ops()
        diff = None
        if fix:
            diff = (await _ruff(ops, core.ruff_diff_argv(path, select))).stdout.text
        r = await _ruff(ops, core.ruff_check_argv(path, select, fix))
        try:
            diags = core.parse_ruff(r.stdout.text)
        except ValueError as exc:
            raise ToolInputError(f"{exc}: {r.stderr.text.strip()[:300]}") from None
        unreadable = [d for d in diags if d.code == "E902" and d.file == posixpath.normpath(path)]
        if unreadable:
            raise ToolInputError(f"ruff could not read {path}: {unreadable[0].message}")
        out = LintOut(session=s.id, diagnostics=diags[:500], total=len(diags),
                      fixable=sum(d.fixable for d in diags), diff=diff)
        rows = [f"{d.file}:{d.line}:{d.column}: {d.code} {d.message}"
                + (" [fixable]" if d.fixable else "") for d in diags[:500]]
        text = "\n".join(rows) or "no findings"
        if diff:
            text = f"applied fixes:\n{diff.rstrip()}\nremaining findings:\n{text}"
        return result(out, text + f"\n[{len(diags)} findings, {out.fixable} fixable]")

    @tool(mcp, out=FormatOut, read_only=False, destructive=True, title="Format with ruff")
    async def format(
        ctx: Context,
        path: PathArg = ".",
        check: Annotated[bool, Field(
            description="Only list the files that would change (default); false rewrites "
                        "them and returns the diff.")] = True,
        session: SessionArg = None,
    ) -> ToolResult:
        """Format Python code with ruff format: check mode lists the files it would change;
        otherwise it formats them and returns the diff."""
        s, ops = session_ops()
        if check:
            r = await _ruff(ops, core.ruff_format_argv(path, "check"))
            files = core.would_reformat(r.stdout.text)
            out = FormatOut(session=s.id, files=files, diff=None, changed=False)
            return result(out, "\n".join(f"would reformat {f}" for f in files)
                          or "already formatted")
        d = await _ruff(ops, core.ruff_format_argv(path, "diff"))
        diff = d.stdout.text
        if d.exit_code == 1:
            await _ruff(ops, core.ruff_format_argv(path, "write"))
        files = sorted({ln[6:].strip() for ln in diff.splitlines() if ln.startswith("+++ ")})
        out = FormatOut(session=s.id, files=files, diff=diff or None, changed=d.exit_code == 1)
        return result(out, diff.rstrip() or "already formatted")
