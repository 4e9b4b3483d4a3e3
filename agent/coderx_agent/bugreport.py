"""``/bug``: a bug-report bundle written locally, with every secret value redacted.

The bundle (one markdown file) holds the version, the platform, the configuration with
the origin of each key, the doctor's lines and the last events of this session. Secret
values (API keys from the key store and the environment, tokens, MCP server headers and
environments) are replaced by ``[redacted:NAME]``, as are strings shaped like API keys
the agent does not know of. Nothing is sent anywhere.
"""

from __future__ import annotations

import base64
import json
import platform
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import platformdirs

from coderx_agent import __version__
from coderx_agent.config import AgentConfig
from coderx_agent.events import Event
from coderx_agent.keys import SECRET_ENV, KeySource

#: Shorter values cannot be redacted without mangling ordinary text.
MIN_SECRET = 4
#: Environment variable names whose values are secrets.
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSPHRASE|CREDENTIAL)", re.IGNORECASE)
#: Strings shaped like API keys or bearer tokens (``sk-ant-…``, ``ghp_…``, ``Bearer …``).
KEY_SHAPE = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{12,}|gh[pousr]_[A-Za-z0-9]{20,}|"
                       r"xox[abpr]-[A-Za-z0-9-]{10,})|(?<=Bearer )[A-Za-z0-9._~+/=-]{8,}")


def bug_dir() -> Path:
    """Where bundles are written (``<user state dir>/coderx/bug-reports``)."""
    return Path(platformdirs.user_state_dir("coderx")) / "bug-reports"


def secrets_of(keys: KeySource, environ: Mapping[str, str], config: AgentConfig,
               extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """Every secret value the agent can see, named."""
    out = [(name, v) for name in SECRET_ENV if (v := keys.get(name))]
    out += [(k, v) for k, v in environ.items() if SECRET_NAME.search(k) and v]
    for server, entry in config.mcpServers.items():
        out += [(f"{server}.headers.{k}", v) for k, v in entry.headers.items() if v]
        out += [(f"{server}.env.{k}", v) for k, v in entry.env.items() if v]
    return [*out, *extra]


def _forms(value: str) -> set[str]:
    """A value as it may appear in text: as is, JSON-escaped, base64 and URL-encoded."""
    raw = value.encode("utf-8")
    forms = {value, json.dumps(value)[1:-1], quote(value, safe=""),
             base64.b64encode(raw).decode().rstrip("="),
             base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return {f for f in forms if len(f) >= MIN_SECRET}


def redact(text: str, secrets: Iterable[tuple[str, str]]) -> str:
    """``text`` with each secret value (and anything shaped like a key) replaced, longest
    first so a secret containing another is replaced whole."""
    names = {form: name for name, value in secrets for form in _forms(value)}
    for form in sorted(names, key=len, reverse=True):
        text = text.replace(form, f"[redacted:{names[form]}]")
    return KEY_SHAPE.sub("[redacted:key-shaped]", text)


def write_bundle(config_lines: Iterable[str], doctor_lines: Iterable[str],
                 events: Iterable[Event], secrets: Iterable[tuple[str, str]],
                 root: Path | None = None) -> Path:
    """Write the bundle; returns its path."""
    root = root or bug_dir()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = root / f"bug-{stamp}.md"
    body = "\n".join([
        f"# coderx-agent bug report {stamp}", "",
        f"- version: {__version__}", f"- python: {sys.version.split()[0]}",
        f"- platform: {platform.platform()}", "",
        "## Configuration (key = value # origin)", "", "```", *config_lines, "```", "",
        "## Doctor", "", "```", *doctor_lines, "```", "",
        "## Last events", "", "```jsonl", *(e.model_dump_json() for e in events), "```", ""])
    path.write_text(redact(body, list(secrets)), encoding="utf-8")
    path.chmod(0o600)
    return path


def issue_text(path: Path) -> str:
    """A pre-filled issue for the user to paste (the bundle is attached by hand)."""
    return (f"Title: <one line: what went wrong>\n\nWhat I did:\n1. \n\nWhat I expected:\n\n"
            f"What happened:\n\nBundle (redacted, please review before attaching): {path}\n"
            f"coderx-agent {__version__}, Python {sys.version.split()[0]}, "
            f"{platform.system()}")


def config_lines(values: Mapping[str, object], origins: Mapping[str, str]) -> list[str]:
    """``key = value  # origin`` lines."""
    return [f"{k} = {json.dumps(v)}  # {origins.get(k, 'default')}" for k, v in values.items()]
