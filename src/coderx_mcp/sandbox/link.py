"""A direct socket between the server and one runner, past the engine's exec relay.

Over ``docker exec`` every request and reply is copied by the engine (our socket →
dockerd → the exec's pipe → the runner, and back), so one round trip wakes three processes
each way; on an idle machine each wake-up costs a scheduler's latency. A runner linked to
the server answers on a unix socket instead: one hop each way.

How a link is made (``DockerSandbox``):

1. Before the container is created, :meth:`RunnerLink.open` makes a private directory with a
   listening socket; the directory is bind-mounted read-only into the container at
   :data:`LINK_DIR`.
2. The runner starts over ``docker exec`` as always and says hello. The server then sends,
   on that private stream, ``{"op": "link", "path": ..., "token": ...}``: the runner
   connects and sends the one-time token first.
3. The server accepts the one connection that presents the token, then stops listening and
   removes the socket: nothing in the sandbox can connect after that. The exec stream stays
   open, carries the runner's stderr, and its end still means the runner ended.

Where the engine cannot share a unix socket with the host (Docker Desktop's VM, a remote
engine) or the image's runner is older, the link fails once with a logged reason and the
server keeps using the exec stream (:class:`LinkPolicy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import structlog

LINK_DIR = "/run/coderx-link"
"""Where the link directory is mounted in the sandbox (read-only)."""
SOCKET_NAME = "runner.sock"
_TOKEN_WAIT = 5.0  # seconds a connection may take to present its token
_log = structlog.get_logger("coderx.link")


class LinkPolicy:
    """Whether this server links runners: on unless turned off, or until a link fails.

    One failure turns links off for the server's lifetime (one warning, then the exec
    stream only): what failed once (a VM between engine and host, an old image) fails again.

    Args:
        enabled: The operator's choice (``CODERX_RUNNER_LINK``).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.failure: str | None = None

    def failed(self, reason: str, session_id: str) -> None:
        """Record that a link could not be made; later sandboxes use the exec stream."""
        if self.failure is None:
            _log.warning("runner link unavailable; using the engine's exec stream",
                         session_id=session_id, reason=reason)
        self.enabled = False
        self.failure = reason


class RunnerLink:
    """The listening side of one runner's link: a private directory, a socket, a token.

    Use :meth:`open`; then :meth:`accepted` after the runner was asked to connect, and
    :meth:`close` when the sandbox goes.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.token = secrets.token_hex(32)
        self._server: asyncio.AbstractServer | None = None
        self._taken = False
        self._conn: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future())

    @classmethod
    async def open(cls) -> RunnerLink:
        """Make the directory (under the temporary directory) and start listening."""
        directory = Path(tempfile.mkdtemp(prefix="coderx-link-"))
        # Inside the container only this directory is visible (the mount hides its
        # parents): the sandbox's uid may pass through it but not list it, and the socket
        # must be writable to connect. The token, not the mode, keeps others out.
        os.chmod(directory, 0o711)
        link = cls(directory)
        path = str(directory / SOCKET_NAME)
        try:
            # The limit bounds what is buffered ahead of the reader, as on the exec stream.
            link._server = await asyncio.start_unix_server(link._greet, path, limit=1 << 20)
            os.chmod(path, 0o666)
        except BaseException:
            link.close()
            raise
        return link

    @property
    def socket_path(self) -> str:
        """The socket's path inside the sandbox."""
        return f"{LINK_DIR}/{SOCKET_NAME}"

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Keep the first connection that presents the token; close every other one."""
        try:
            line = await asyncio.wait_for(reader.readline(), _TOKEN_WAIT)
        except (TimeoutError, ValueError, OSError):  # ValueError: an over-long line
            line = b""
        if not self._conn.done() and hmac.compare_digest(line.rstrip(b"\n"),
                                                          self.token.encode()):
            self._conn.set_result((reader, writer))
            self.stop_listening()
            return
        writer.close()

    async def accepted(self, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The runner's connection, once it presented the token.

        Raises:
            TimeoutError: No connection with the token came in ``timeout`` seconds.
        """
        try:
            conn = await asyncio.wait_for(asyncio.shield(self._conn), timeout)
        finally:
            self.stop_listening()
        self._taken = True
        return conn

    def stop_listening(self) -> None:
        """Close the listening socket and remove it: no one connects after the runner."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(OSError):
            (self.directory / SOCKET_NAME).unlink()

    def close(self) -> None:
        """Stop listening and remove the directory (the container is gone or going).

        A connection never handed out (the link failed after it came) is closed too; one
        handed out belongs to the runner client, which closes it.
        """
        self.stop_listening()
        if not self._conn.done():
            self._conn.cancel()
        elif not self._taken and not self._conn.cancelled():
            self._conn.result()[1].close()
        shutil.rmtree(self.directory, ignore_errors=True)
