"""The sandbox image on each Docker host: checked, and copied from the local engine
(``docker save | docker load``, streamed, with progress) when missing or different."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import docker
import docker.errors
import structlog

from coderx_mcp.errors import SandboxUnavailable
from coderx_mcp.image import image_status

_log = structlog.get_logger("coderx.hosts")
_CHUNK = 1 << 20
Progress = Callable[[int, int], None]
"""Called with (bytes sent, expected total) while an image is copied."""


def _image_id(client: docker.DockerClient, image: str) -> str | None:
    try:
        return str(client.images.get(image).id)
    except docker.errors.ImageNotFound:
        return None


def log_progress(host: str, image: str) -> Progress:
    """A progress callback that logs every tenth of the way (server side)."""
    last = [-1]

    def report(done: int, total: int) -> None:
        tenth = min(10, done * 10 // max(total, 1))
        if tenth != last[0]:
            last[0] = tenth
            _log.info("copying the sandbox image to a docker host", host=host, image=image,
                      sent_mib=done >> 20, total_mib=total >> 20)
    return report


def ensure_image(host: str, target: docker.DockerClient, image: str,
                 source: docker.DockerClient | None, progress: Progress | None = None) -> bool:
    """Make ``image`` on ``target`` the same as on ``source``; returns whether it copied.

    Without a source (no local engine, or it lacks the image) the host's own image is used
    as it is, if it has one.

    Args:
        host: The host's name, for messages.
        target: The host's client (a long timeout: a load takes a while).
        image: The sandbox image name.
        source: The local engine holding the image built by ``coderx-mcp image build``.
        progress: Told the bytes sent so far.

    Raises:
        SandboxUnavailable: The host lacks the image and there is none to copy, or the copy
            failed.
    """
    have = _image_id(target, image)
    want = _image_id(source, image) if source is not None else None
    if want is None:
        if have is None:
            raise SandboxUnavailable(
                f"the sandbox image {image} is missing on docker host {host} and no local "
                f"engine has it to copy: build it here (coderx-mcp image build) or there")
        if not image_status(target, image).up_to_date:
            _log.warning("the sandbox image on a docker host is older than this server's "
                         "runner", host=host, image=image)
        return False
    if have == want:
        return False
    assert source is not None
    total = int(source.api.inspect_image(image).get("Size") or 0)

    def chunks() -> Iterator[bytes]:
        done = 0
        for chunk in source.api.get_image(image, chunk_size=_CHUNK):
            done += len(chunk)
            if progress is not None:
                progress(done, max(total, done))
            yield chunk

    try:
        for line in target.api.load_image(chunks()):
            if isinstance(line, dict) and line.get("error"):
                raise SandboxUnavailable(f"loading {image} into docker host {host} failed: "
                                         f"{line['error']}")
    except docker.errors.DockerException as exc:
        raise SandboxUnavailable(f"loading {image} into docker host {host} failed: "
                                 f"{exc}") from None
    if _image_id(target, image) != want:
        raise SandboxUnavailable(f"loading {image} into docker host {host} did not give the "
                                 "local image")
    _log.info("sandbox image copied to a docker host", host=host, image=image)
    return True
