"""Language toolchains added to the sandbox image on request (``image build --with node,go``).

The stock image stays small (Python, git, ripgrep, a C toolchain); a toolchain is a few
Debian packages installed at the end of the image's final stage. Debian's packages work on
both bases (``python:3.12-slim`` and the offline bookworm base) and need only the Debian
mirror, never a language registry. Pure: no Docker, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final

TOOLCHAINS_LABEL: Final = "coderx.toolchains"
"""Image label listing the toolchains an image was built with (comma-separated)."""

TOOLCHAINS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "node": ("nodejs", "npm"),
    "go": ("golang-go",),
})
"""Toolchain name -> the Debian packages that provide it."""


def parse_with(value: str | None) -> tuple[str, ...]:
    """The toolchains named by ``--with`` (``"node,go"``), sorted and without repeats.

    Raises:
        ValueError: A name that is not a known toolchain (the message lists the known ones).
    """
    names = sorted({n.strip().lower() for n in (value or "").split(",") if n.strip()})
    unknown = [n for n in names if n not in TOOLCHAINS]
    if unknown:
        raise ValueError(f"--with: unknown toolchain {unknown[0]!r}; choose from "
                         f"{', '.join(sorted(TOOLCHAINS))} (comma-separated, e.g. node,go)")
    return tuple(names)


def toolchain_stage(names: Sequence[str]) -> str:
    """Dockerfile lines that install ``names`` at the end of the final stage ("" for none).

    They run as root (the stage ends as uid 1000 again) and leave no apt lists behind.
    """
    if not names:
        return ""
    pkgs = " ".join(p for n in names for p in TOOLCHAINS[n])
    return (
        f"\n# Toolchains added by `coderx-mcp image build --with {','.join(names)}`.\n"
        "USER 0\n"
        "RUN set -eu; apt-get update; \\\n"
        f"    apt-get install -y --no-install-recommends {pkgs}; \\\n"
        "    apt-get clean; \\\n"
        "    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt "
        "/var/log/dpkg.log\n"
        f"LABEL {TOOLCHAINS_LABEL}={','.join(names)}\n"
        "USER 1000:1000\n"
    )


def has_toolchains(labels: Mapping[str, str] | None, names: Sequence[str]) -> bool:
    """Whether an image (by its labels) was built with every toolchain in ``names``."""
    have = set((labels or {}).get(TOOLCHAINS_LABEL, "").split(","))
    return set(names) <= have
