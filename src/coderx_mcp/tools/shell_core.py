"""Pure helpers of the shell tools: how runner replies read as text.

No MCP and no I/O here: each function turns a runner reply (plain dicts, see
``containers/runner/coderx_runner``) into the text a model reads.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any

LINE_WIDTH = 200


def one_line(text: str, width: int = LINE_WIDTH) -> str:
    """The first line of ``text``, cut to ``width`` characters, with ``…`` when anything is cut."""
    first, nl, _ = text.partition("\n")
    if len(first) > width:
        return first[:width] + " …"
    return first + (" …" if nl else "")


def duration(ms: float) -> str:
    """A human duration: ``12 ms``, ``3.4 s``, ``2 min 5 s``."""
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60)} s"


def seconds(s: float) -> str:
    """``2`` for 2.0, ``0.5`` for 0.5: seconds as the caller gave them."""
    return f"{s:g} s"


def last_lines(text: str, n: int = 3, width: int = LINE_WIDTH) -> str:
    """The last ``n`` non-empty lines of ``text``, each cut to ``width`` characters."""
    lines = [ln[:width] for ln in text.rstrip().splitlines()[-n:] if ln.strip()]
    return "\n".join(lines)


def run_status(r: Mapping[str, Any], timeout: float, next_offset: int) -> str:
    """The status line under a command's output (exit, timeout, OOM or backgrounded)."""
    dur = duration(float(r.get("duration_ms") or 0))
    if r.get("running"):
        oid = r["output_id"]
        return (f"still running in the background as {oid} (after {dur}); follow it with "
                f'process_output("{oid}") (new output each call) or stop it with '
                f'process_kill("{oid}")')
    if r.get("timed_out"):
        head = f"TIMED OUT after {seconds(timeout)} (process group killed)"
    elif r.get("oom_killed"):
        code = r.get("exit_code")
        head = "killed: out of memory" + (f" (exit {code})" if code is not None else "")
    elif r.get("signal"):
        head = f"killed by {r['signal']}"
    else:
        head = f"exit {r.get('exit_code')}"
    cwd = f" · cwd {r['cwd']}" if r.get("cwd") else ""
    return f"{head} · {dur}{cwd}" + left_running_note(r)


# What resolvers and clients print when there is no network at all (pip, curl, wget, git,
# npm); only looked for in sessions without network.
_NO_NET = re.compile(r"Temporary failure in name resolution|Could not resolve host|"
                     r"Name or service not known|Network is unreachable|EAI_AGAIN|"
                     r"Failed to establish a new connection|getaddrinfo failed|ENOTFOUND|"
                     r"No matching distribution found|unable to resolve host address")


def no_network_note(r: Mapping[str, Any], network: str) -> str:
    """A line saying the session has no network, when a command failed for want of one."""
    if network != "none" or not r.get("exit_code"):
        return ""
    if not (_NO_NET.search(r["stderr"]["text"]) or _NO_NET.search(r["stdout"]["text"])):
        return ""
    return ("\nnote: this session has no network (network 'none'), so downloads fail; install "
            "from files in /workspace, or ask the operator to start the server with "
            "--allow-network and open a session with session_open(network='bridge')")


def left_running_note(r: Mapping[str, Any]) -> str:
    """What a finished command left running (``cmd &``), now a background process."""
    left = r.get("left_running") or []
    if not left:
        return ""
    oid = r["output_id"]
    return (f"\nleft running in the background as {oid}: " + "; ".join(left)
            + f'\nread its output with process_output("{oid}"), stop it with '
            f'process_kill("{oid}"); it ends with the session')


def render_run(command: str, r: Mapping[str, Any], timeout: float, next_offset: int) -> str:
    """A terminal-like transcript: ``$ command``, stdout, marked stderr, a status line."""
    parts = [f"$ {one_line(command)}\n"]
    out, err = r["stdout"]["text"], r["stderr"]["text"]
    if out:
        parts.append(out if out.endswith("\n") else out + "\n")
    if err:
        parts.append("[stderr]\n" + (err if err.endswith("\n") else err + "\n"))
    parts.append(run_status(r, timeout, next_offset))
    return "".join(parts)


def exit_words(r: Mapping[str, Any]) -> str:
    """``running``, ``exit 0``, ``killed by SIGKILL`` or ``timed out``."""
    if r.get("running"):
        return "running"
    if r.get("timed_out"):
        return "timed out (process group killed)"
    if r.get("signal"):
        return f"killed by {r['signal']}"
    return f"exit {r.get('exit_code')}"


def _open_end(text: str) -> str:
    """Said when a page's last line has no newline (the text shown gets one added)."""
    return " · no newline at end" if text and not text.endswith("\n") else ""


def render_page(r: Mapping[str, Any], eof: bool) -> str:
    """A page of spooled output followed by where it sits in the whole and how to go on."""
    text = r["text"]
    oid = r["output_id"]
    body = text if not text or text.endswith("\n") else text + "\n"
    where = f"bytes {r['offset']}-{r['next_offset']} of {r['total_bytes']}" + _open_end(text)
    if eof:
        more = "end of output" + ("" if r.get("running") else f", {exit_words(r)}")
    else:
        more = f'more: read_output("{oid}", byte_offset={r["next_offset"]})'
    return f"{body}[{where} · {more}]"


def render_process_output(r: Mapping[str, Any]) -> str:
    """New output of a process, then its state and how to go on."""
    text = r["text"]
    body = text if not text or text.endswith("\n") else text + "\n"
    state = exit_words(r) + _open_end(text)
    if r["next_offset"] < r["total_bytes"]:
        state += "; more output is waiting: call process_output again"
    elif r.get("running"):
        state += "; the next process_output call shows what is new"
    return (body or "(no new output)\n") + f"[{r['output_id']}: {state}]"


def render_matches(oid: str, matches: Iterable[Mapping[str, Any]], total: int,
                   truncated: bool) -> str:
    """Grep hits as ``line:text`` rows with a count."""
    rows = [f"{m['line']}:{m['text']}" for m in matches]
    tail = (f"[{total} matching lines in {oid}"
            + (f", first {len(rows)} shown" if truncated else "") + "]")
    return "\n".join([*rows, tail])


def render_procs(procs: Iterable[Mapping[str, Any]]) -> str:
    """One row per process: id, state, runtime, output size, command."""
    rows = [f"{p['output_id']}  {exit_words(p)} · {p['runtime_s']:.1f} s · "
            f"{p['output_bytes']} bytes · $ {one_line(p['command'], 120)}" for p in procs]
    return "\n".join(rows) if rows else "no background processes in this session"
