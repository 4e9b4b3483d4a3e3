"""Saved conversations: one JSONL file per conversation under the user's data directory.

Every complete message is appended (and flushed to disk) as soon as it exists, so a
``kill -9`` loses at most the reply being streamed. Compaction is recorded as a line of
its own; the messages themselves stay uncompacted in the file.

Lines: ``header`` (id, cwd, model, permission mode, parent), ``message``, ``usage``,
``compaction`` (summary and the index of the first message kept verbatim).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, ValidationError

from coderx_agent.config import PermissionMode
from coderx_agent.errors import ConversationError
from coderx_agent.messages import Message, ToolResultBlock, Usage


class Header(BaseModel):
    """The first line of a conversation file."""

    type: str = "header"
    id: str
    created: str
    cwd: str
    model: str
    permission_mode: PermissionMode
    parent: str | None = None
    """The conversation this one was forked from."""


class Compaction(BaseModel):
    """Messages before ``keep_from`` are replaced by ``summary`` when talking to the model."""

    summary: str
    keep_from: int


def new_id() -> str:
    """A sortable, unguessable id: UTC time then 48 random bits."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(6)


class Conversation:
    """An open conversation file (append-only)."""

    def __init__(self, path: Path, header: Header, messages: list[Message],
                 compaction: Compaction | None, usage: Usage, cost_usd: float) -> None:
        self.path = path
        self.header = header
        self.messages = messages
        """Every message, uncompacted."""
        self.compaction = compaction
        self.usage = usage
        """Tokens of every turn so far (all runs)."""
        self.cost_usd = cost_usd

    @property
    def id(self) -> str:
        """The conversation id."""
        return self.header.id

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def append(self, message: Message) -> None:
        """Add a message and save it."""
        self.messages.append(message)
        self._write({"type": "message", "message": message.model_dump()})

    def add_usage(self, usage: Usage, cost_usd: float) -> None:
        """Record one turn's tokens and cost."""
        self.usage += usage
        self.cost_usd += cost_usd
        self._write({"type": "usage", "usage": usage.model_dump(), "cost_usd": cost_usd})

    def compact(self, compaction: Compaction) -> None:
        """Record a compaction."""
        self.compaction = compaction
        self._write({"type": "compaction", **compaction.model_dump()})

    def settings(self, model: str, permission_mode: PermissionMode) -> None:
        """Record the model and permission mode now in use (restored on resume)."""
        self.header = self.header.model_copy(update={"model": model,
                                                     "permission_mode": permission_mode})
        self._write({"type": "settings", "model": model, "permission_mode": permission_mode})

    def unanswered_tool_uses(self) -> list[str]:
        """Ids of the last message's tool calls that have no result (a run was cut off)."""
        if not self.messages or self.messages[-1].role != "assistant":
            return []
        return [u.id for u in self.messages[-1].tool_uses]

    def repair(self) -> None:
        """Answer tool calls cut off by an interrupt or a kill, so the API accepts the
        conversation again."""
        ids = self.unanswered_tool_uses()
        if ids:
            self.append(Message(role="user", content=[
                ToolResultBlock(tool_use_id=i, is_error=True,
                                content="the run was interrupted before this tool call ended")
                for i in ids]))

    def view(self) -> list[Message]:
        """What the model is shown: the summary of compacted turns, then the rest."""
        if self.compaction is None:
            return list(self.messages)
        c = self.compaction
        return [Message.user(f"<summary of the earlier conversation>\n{c.summary}\n"
                             "</summary>"), *self.messages[c.keep_from:]]


class ConversationStore:
    """The conversation files of this user.

    Args:
        root: Their directory (default: ``<user data dir>/coderx/conversations``).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(platformdirs.user_data_dir("coderx")) / "conversations"

    def create(self, cwd: Path, model: str, permission_mode: PermissionMode,
               parent: str | None = None) -> Conversation:
        """Start a new conversation file."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        header = Header(id=new_id(), created=datetime.now(UTC).isoformat(), cwd=str(cwd),
                        model=model, permission_mode=permission_mode, parent=parent)
        path = self.root / f"{header.id}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(header.model_dump_json() + "\n")
        return Conversation(path, header, [], None, Usage(), 0.0)

    def _files(self) -> Iterator[Path]:
        if self.root.is_dir():
            yield from self.root.glob("*.jsonl")

    def find(self, prefix: str) -> Path:
        """The file of the conversation whose id starts with ``prefix``.

        Raises:
            ConversationError: None or several match.
        """
        found = sorted(p for p in self._files() if p.stem.startswith(prefix))
        if not found:
            raise ConversationError(f"no saved conversation has an id starting with {prefix!r}")
        if len(found) > 1:
            raise ConversationError(f"{len(found)} conversations start with {prefix!r}: "
                                    f"{', '.join(p.stem for p in found[:5])}; give more of the id")
        return found[0]

    def last_in(self, cwd: Path) -> Path:
        """The most recently changed conversation started in ``cwd``.

        Raises:
            ConversationError: There is none.
        """
        mine = []
        for p in self._files():
            with p.open(encoding="utf-8") as f:
                first = f.readline()
            try:
                if Header.model_validate_json(first).cwd == str(cwd):
                    mine.append((p.stat().st_mtime, p))
            except ValidationError:
                continue
        if not mine:
            raise ConversationError(f"no saved conversation in {cwd} to continue")
        return max(mine)[1]

    def load(self, path: Path) -> Conversation:
        """Read a conversation file; a torn last line (killed mid-write) is ignored."""
        lines = path.read_text(encoding="utf-8").splitlines()
        try:
            header = Header.model_validate_json(lines[0])
        except (IndexError, ValidationError):
            raise ConversationError(f"{path} is not a conversation file") from None
        conv = Conversation(path, header, [], None, Usage(), 0.0)
        for n, line in enumerate(lines[1:], 2):
            try:
                rec = json.loads(line)
                kind = rec.get("type")
                if kind == "message":
                    conv.messages.append(Message.model_validate(rec["message"]))
                elif kind == "usage":
                    conv.usage += Usage.model_validate(rec["usage"])
                    conv.cost_usd += float(rec["cost_usd"])
                elif kind == "compaction":
                    conv.compaction = Compaction.model_validate(rec)
                elif kind == "settings":
                    conv.header = header = header.model_copy(update={
                        "model": rec["model"], "permission_mode": rec["permission_mode"]})
            except (ValueError, KeyError, ValidationError):
                if n == len(lines):
                    break  # the write a kill cut short
                raise ConversationError(f"{path}:{n} is not a valid record") from None
        return conv

    def fork(self, source: Conversation) -> Conversation:
        """A copy of ``source`` under a new id, to continue without changing the original."""
        conv = self.create(Path(source.header.cwd), source.header.model,
                           source.header.permission_mode, parent=source.id)
        with source.path.open(encoding="utf-8") as src, conv.path.open("a",
                                                                        encoding="utf-8") as dst:
            src.readline()
            shutil.copyfileobj(src, dst)
        return self.load(conv.path)

    def listing(self) -> list[Header]:
        """Headers of every conversation, newest first."""
        out = []
        for p in sorted(self._files(), key=lambda p: p.stat().st_mtime, reverse=True):
            with p.open(encoding="utf-8") as f:
                try:
                    out.append(Header.model_validate_json(f.readline()))
                except ValidationError:
                    continue
        return out

