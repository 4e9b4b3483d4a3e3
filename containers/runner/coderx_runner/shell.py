"""The session's shell state and the waiting bashes ("zygotes") that restored it already.

Each ``exec`` runs in a fresh bash that sources the state file (exports and cwd) the
previous command's EXIT trap saved, so the calls behave like one terminal. A bash is
started between calls and waits on a pipe for its script, with the state of its version
restored: a newer state is restored at use.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import subprocess
from collections import deque
from typing import Any

MARKER = "__CODERX_COMMAND_ID"
"""Environment variable carrying the output id of the command a process descends from."""


class Shell:
    """The shell state file, its version, the base environment and the waiting bashes."""

    zygotes = 2

    def __init__(self, root: str, state_dir: str, spool: str) -> None:
        self.root = root
        self.spool = spool
        self.state_file = os.path.join(state_dir, "shell.env")
        self.base_env = self._base_env()
        # Waiting bashes, oldest first: two, so back-to-back calls find one already up.
        self._zygotes: deque[tuple[subprocess.Popen[bytes], int, str, int]] = deque()
        self.state_version = 0
        self.closing = False
        self._write_initial_state()

    @staticmethod
    def _base_env() -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "USER", "PYTHONDONTWRITEBYTECODE",
                "PAGER", "GIT_PAGER", "GIT_EDITOR", "GIT_TERMINAL_PROMPT", "DEBIAN_FRONTEND",
                "VIRTUAL_ENV", "TZ", "PIP_RETRIES", "PIP_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update({"PAGER": "cat", "GIT_PAGER": "cat", "GIT_TERMINAL_PROMPT": "0",
                    "GIT_EDITOR": "false", "EDITOR": "false", "DEBIAN_FRONTEND": "noninteractive",
                    "CI": "1", "TERM": "dumb", "NO_COLOR": "1",
                    # Background servers' output shows up as it is printed, not at exit.
                    "PYTHONUNBUFFERED": "1"})
        return env

    def script(self, command: str, cwd: str | None, save: str, cwd_out: str,
                hide: list[str], restore: bool = True, marker: str | None = None) -> str:
        # Per-call variables (hide) are unset before the state is saved: never persisted.
        hide = [*hide, MARKER] if marker else hide
        unset = f"builtin unset {' '.join(map(shlex.quote, hide))}; " if hide else ""
        # Every program the command starts inherits the marker, so what it leaves running
        # is found even outside its process group (`setsid cmd &`, double forks).
        mark = f"builtin export {MARKER}={shlex.quote(marker)}; " if marker else ""
        # A per-call cwd is per call: the state saved afterwards keeps the directory the
        # session was in (the variable is not exported, so it is never saved itself).
        chdir = (f"__coderx_back=$PWD; builtin cd -- {shlex.quote(cwd)} || exit 1; "
                 if cwd else "")
        # One line, ending in eval: bash's messages then read as in a terminal
        # ("bash: line 1: x: command not found"), without our preamble's lines.
        return (
            "__coderx_save() { " + unset + "{ builtin declare -px; builtin printf "
            "'builtin cd -- %q\\n' \"${__coderx_back:-$PWD}\"; } > " + shlex.quote(save)
            + " 2>/dev/null; builtin printf '%s' \"${__coderx_back:-$PWD}\" > "
            + shlex.quote(cwd_out) + " 2>/dev/null; }; "
            "trap __coderx_save EXIT; "
            + (f"builtin source {shlex.quote(self.state_file)} 2>/dev/null; " if restore else "")
            + chdir + mark
            + "builtin eval " + shlex.quote(command) + "\n")

    def _write_initial_state(self) -> None:
        """The first command starts from the base environment, like every later one
        starts from the state the previous one left."""
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.base_env.items())]
        lines.append(f"builtin cd -- {shlex.quote(self.root)}")
        with open(self.state_file, "w") as f:
            f.write("\n".join(lines) + "\n")

    def spawn_zygotes(self) -> None:
        """Start the bash the next ``exec`` will use; it waits on a pipe for its script.

        Starting bash costs about a millisecond and restoring the shell state a quarter of
        one; paying both between calls instead of during one halves the latency of a short
        command. The state version it restored is kept: a newer state is restored at use.
        """
        while len(self._zygotes) < self.zygotes and not self.closing:
            if not self._spawn_one():
                return  # bash cannot start (no workspace?): exec reports it, no busy loop

    def _spawn_one(self) -> bool:
        rfd, wfd = os.pipe()
        script = os.path.join(self.spool, f"z{secrets.token_hex(4)}.sh")
        try:
            popen = subprocess.Popen(
                ["/bin/bash", "--noprofile", "--norc", "-c",
                 f"builtin source {shlex.quote(self.state_file)} 2>/dev/null; "
                 # Plain `exec`: `builtin exec N<&-` would close the pipe only for the
                 # `builtin` command itself, and every command would inherit it.
                 f"IFS= builtin read -r _ <&{rfd} || exit 0; exec {rfd}<&-; "
                 f"IFS= builtin read -r -d '' __coderx_s < {shlex.quote(script)}; "
                 "builtin eval \"$__coderx_s\"", "bash"],
                cwd=self.root, env={"PATH": self.base_env["PATH"]},
                start_new_session=True, close_fds=True, pass_fds=(rfd,),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError:
            os.close(wfd)
            return False
        finally:
            os.close(rfd)
        self._zygotes.append((popen, wfd, script, self.state_version))
        return True

    def take_zygote(self, build: Any) -> tuple[subprocess.Popen[bytes], str, str] | None:
        """Hand the waiting bash its script, built by ``build(restore)``."""
        if not self._zygotes:
            return None
        popen, wfd, script, version = self._zygotes.popleft()
        script_text = build(version != self.state_version)
        try:
            if popen.poll() is not None:
                raise OSError("zygote exited")
            with open(script, "w") as f:
                f.write(script_text)
            os.write(wfd, b"\n")
        except OSError:
            with contextlib.suppress(OSError):
                popen.kill()
            popen.wait()
            return None
        finally:
            os.close(wfd)
        return popen, script, script_text

    def adopt(self, new: str) -> None:
        """The shell state the command's EXIT trap saved (in ``new``) becomes the session's.

        Most commands change neither cwd nor exports: then the version stays, and the
        waiting bashes, which restored it already, remain good.
        """
        try:
            with open(new, "rb") as f, open(self.state_file, "rb") as g:
                same = f.read() == g.read()
        except OSError:
            same = False
        with contextlib.suppress(OSError):
            os.replace(new, self.state_file)
            if not same:
                self.state_version += 1

    def close(self) -> None:
        """No more waiting bashes: the ones up are killed, none is started again."""
        self.closing = True
        for z in self._zygotes:
            z[0].kill()
