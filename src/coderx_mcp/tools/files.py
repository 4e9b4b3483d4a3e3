"""File tools: read_file, write_file, edit_file, multi_edit and list_dir.

Every file operation runs in the session's runner, which confines paths to /workspace and
writes atomically. These tools add the text layer (encodings, BOM, line endings, numbered
views) and the stale-write rule: a file is only overwritten or edited when this session saw
its current content (the whole-file sha256 of the last read or write), or when the caller
names the expected hash.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from fastmcp import Context, FastMCP
from fastmcp.tools.base import ToolResult
from pydantic import BaseModel, Field

from coderx_mcp.context import app_of, session_ops
from coderx_mcp.errors import FileAlreadyExists, FileTooLarge, PathNotFound, StaleFile
from coderx_mcp.ops import SessionOps, WriteResult
from coderx_mcp.sessions import Session
from coderx_mcp.text import (
    Decoded,
    EditOutcome,
    EditSpec,
    ReadArtifactError,
    TextError,
    apply_edit,
    apply_edits,
    encode,
    looks_like_read_artifact,
)
from coderx_mcp.tools import files_core as core
from coderx_mcp.tools.common import Out, SessionArg, result, tool

# Hard ceiling on any text argument; the server's max_file_bytes is checked as well.
_MAX_TEXT = 64 << 20

PathArg = Annotated[str, Field(
    description="File path, relative to /workspace or absolute inside it.",
    min_length=1, max_length=4096)]
HashArg = Annotated[str | None, Field(
    description="sha256 the file must have now, as reported by read_file (all 64 hex digits "
                "or a prefix of at least 8); replaces the need to read the file in this "
                "session.",
    pattern=r"^[0-9a-fA-F]{8,64}$")]


class ReadOut(Out):
    """A window of a text file as numbered lines (``  1|text``)."""

    path: str = Field(description="Path relative to /workspace.")
    sha256: str = Field(description="sha256 of the whole file (pass as expected_hash).")
    size: int = Field(description="File size in bytes.")
    total_lines: int
    first_line: int = Field(description="First line shown (0 for an empty file).")
    last_line: int
    truncated: bool = Field(default=False,
                            description="True when lines after last_line were not shown.")
    next_offset: int | None = Field(default=None,
                                    description="The offset that continues the read.")
    encoding: str = "utf-8"
    bom: bool = False
    newline: str = Field(default="\n", description="Dominant line ending.")
    content: str = Field(description="Numbered lines: number, '|', line.")

    payload: ClassVar[frozenset[str]] = frozenset({"content"})
    # The defaults above are left out of the facts: most reads are whole UTF-8 LF files.
    compact_facts: ClassVar[bool] = True


class WriteOut(Out):
    """A file written atomically."""

    path: str
    sha256: str = Field(description="sha256 of the file as now on disk.")
    size: int
    created: bool
    note: str | None = None


class EditOut(Out):
    """An edited file."""

    path: str
    sha256: str = Field(description="sha256 of the file as now on disk.")
    size: int
    replacements: int
    first_line: int
    snippet: str = Field(description="Numbered lines around the first change.")
    note: str | None = None


class Entry(BaseModel):
    """One entry of a directory listing."""

    path: str
    type: str = Field(description="file, dir or symlink.")
    size: int | None = None


class ListOut(Out):
    """A directory tree."""

    path: str
    entries: list[Entry]
    truncated: bool
    ignored: int = Field(description="Entries hidden because git ignores them.")

    payload: ClassVar[frozenset[str]] = frozenset({"entries"})


@dataclass(frozen=True, slots=True)
class _Seen:
    """A file as this session last read or wrote it (for one-round-trip edits)."""

    rel: str
    sha256: str
    decoded: Decoded


def _check_size(max_bytes: int, **lengths: int) -> None:
    for name, n in lengths.items():
        if n > max_bytes:
            raise FileTooLarge(f"{name} is {n} characters, above this server's "
                               f"{max_bytes}-byte file limit; nothing was written")


def _note(reply: WriteResult) -> str | None:
    if reply.hardlink_severed:
        return ("the file had other hard links: it was replaced by a new file, so the other "
                "links keep the old content")
    return None


async def _edit(ctx: Context, path: str, expected_hash: str | None,
                change: Callable[[Decoded], EditOutcome]) -> ToolResult:
    """Read, check freshness, change, and write one file under the session's path lock."""
    max_bytes = app_of(ctx).settings.max_file_bytes
    s, ops = session_ops()
    key = core.lock_key(core.check_path(path))
    async with s.path_lock(key):
        # Fast path: this session saw the file last (read or write); the write below still
        # carries that hash, so the runner refuses it if the file changed meanwhile.
        seen: _Seen | None = s.texts.get(key)
        outcome = None
        if seen is not None and s.known_hashes.get(seen.rel) == seen.sha256 and (
                expected_hash is None or seen.sha256.startswith(expected_hash.lower())):
            rel, current, d = seen.rel, seen.sha256, seen.decoded
            with contextlib.suppress(TextError):  # judged again on fresh content below
                outcome = change(d)
        if outcome is None:
            r = await ops.read(path, max_bytes=max_bytes)
            rel, current = r.path, r.sha256
            if not r.whole:
                raise FileTooLarge(f"{rel} is {r.size} bytes, above the {max_bytes}-byte "
                                   "limit for edits; change it with a shell command (sed, python)")
            known = core.expected(expected_hash, current) or s.known_hashes.get(rel)
            if known is None:
                raise core.not_read_error(rel)
            if known != current:
                raise StaleFile(core.stale_message(rel, known, current), current=current)
            d = core.decode_whole(rel, r.payload())
            core.edit_check(rel, d)
            outcome = change(d)
        data = encode(outcome.new_text, d)
        if len(data) > max_bytes:
            raise FileTooLarge(f"the edit would make {rel} {len(data)} bytes, above the "
                               f"{max_bytes}-byte limit; nothing was written")
        try:
            w = await _write(s, ops, rel, path, data, expect_sha256=current)
        finally:
            s.texts.drop(key)
        s.texts.put(key, _Seen(w.path, w.sha256, core.decode_whole(rel, data)), len(data))
    n = outcome.replacements
    out = EditOut(session=s.id, path=rel, sha256=w.sha256, size=w.size, replacements=n,
                  first_line=outcome.first_line, snippet=outcome.snippet, note=_note(w))
    text = (f"edited {rel}: {n} replacement{'s' if n != 1 else ''}, first change at line "
            f"{outcome.first_line} (sha256 {core.short(w.sha256)})"
            + (f"\nnote: {out.note}" if out.note else "") + f"\n{outcome.snippet}")
    return result(out, text)


async def _write(s: Session, ops: SessionOps, rel: str, path: str, data: bytes,
                 **expect: Any) -> WriteResult:
    """Write through the runner and remember the hash it computed from disk."""
    try:
        w = await ops.write(path, data, **expect)
    except StaleFile as exc:
        raise StaleFile(core.stale_message(rel, expect["expect_sha256"], exc.current),
                        current=exc.current) from None
    except FileAlreadyExists:
        raise FileAlreadyExists(f"{rel} was created by someone else meanwhile; read it with "
                                "read_file before overwriting it") from None
    s.known_hashes[w.path] = w.sha256
    return w


def register(mcp: FastMCP) -> None:
    """Register the file tools."""

    @tool(mcp, out=ReadOut, read_only=True, idempotent=True, title="Read a file")
    async def read_file(
        ctx: Context,
        path: PathArg,
        offset: Annotated[int, Field(description="First line to show (1-based).", ge=1)] = 1,
        limit: Annotated[int, Field(description="Most lines to show.", ge=1, le=5000)] = 2000,
        session: SessionArg = None,
    ) -> ToolResult:
        """Read a text file as numbered lines (`  12|text`: right-aligned number, `|`, line).

        Shows up to `limit` lines from `offset`, and at most about 40,000 characters (a
        whole number of lines; the server's read_max_chars); lines over 2000 characters are
        cut. When more lines follow, the reply says which `offset` continues. Paths are
        relative to /workspace, not to the shell's current directory. Reports the whole
        file's sha256, encoding and line endings. Reading a file is required before
        write_file or edit_file may change it. Binary files and directories are refused
        (use list_dir for directories). Never copy the `  12|` prefixes into edits.
        """
        core.check_path(path)
        settings = app_of(ctx).settings
        max_bytes = settings.max_file_bytes
        s, ops = session_ops()
        r = await ops.read(path, max_bytes=max_bytes, line_offset=offset, line_limit=limit)
        cap = settings.read_max_chars
        v = (core.view_whole(r, offset, limit, cap) if r.whole
             else core.view_window(r, offset, limit, max_bytes, cap))
        s.known_hashes[v.path] = v.sha256
        if v.decoded is not None and v.decoded.editable:
            s.texts.put(core.lock_key(path), _Seen(v.path, v.sha256, v.decoded), v.size)
        out = ReadOut(session=s.id, path=v.path, sha256=v.sha256, size=v.size,
                      total_lines=v.total_lines, first_line=v.first_line, last_line=v.last_line,
                      truncated=v.truncated, next_offset=v.next_offset, encoding=v.encoding,
                      bom=v.bom, newline=v.newline, content=v.content)
        return result(out, core.read_text(v))

    @tool(mcp, out=WriteOut, read_only=False, destructive=True, title="Write a file")
    async def write_file(
        ctx: Context,
        path: PathArg,
        content: Annotated[str, Field(description="The complete new file content, exactly as "
                                                  "it should be on disk.", max_length=_MAX_TEXT)],
        expected_hash: HashArg = None,
        session: SessionArg = None,
    ) -> ToolResult:
        """Create a file or replace its whole content (atomically; parents are created).

        An existing file must have been read in this session with read_file (or its current
        sha256 passed as `expected_hash`) and must be unchanged since, otherwise nothing is
        written. Prefer edit_file for changes to existing files. A byte-order mark of the old
        file is kept, its mode bits too, and its line endings: over a CRLF file, the LFs of
        `content` become CRLF. New files are UTF-8 and written exactly. No line-number
        prefixes from read_file in `content`.
        """
        core.check_path(path)
        app = app_of(ctx)
        max_bytes = app.settings.max_file_bytes
        _check_size(max_bytes, content=len(content))
        if looks_like_read_artifact(content):
            raise ReadArtifactError(
                "content looks like read_file output (line-number prefixes such as '  1|' "
                "or a line-truncation marker); write the file's real text without them")
        s, ops = session_ops()
        async with s.path_lock(core.lock_key(path)):
            expect: dict[str, Any]
            try:
                r = await ops.read(path, max_bytes=max_bytes)
            except PathNotFound:
                r = None
            if r is None:
                data = encode(content, core.like_for_write(None))
                rel, expect = core.lock_key(path), {"expect_absent": True}
            else:
                rel = r.path
                known = core.expected(expected_hash, r.sha256) or s.known_hashes.get(rel)
                if known is None:
                    raise core.not_read_error(rel)
                if known != r.sha256:
                    raise StaleFile(core.stale_message(rel, known, r.sha256), current=r.sha256)
                head = r.payload() if r.whole else core.b64(r.head)
                data = encode(core.content_for_write(content, head), core.like_for_write(head))
                expect = {"expect_sha256": known}
            if len(data) > max_bytes:
                raise FileTooLarge(f"content is {len(data)} bytes encoded, above this server's "
                                   f"{max_bytes}-byte file limit; nothing was written")
            s.texts.drop(core.lock_key(path))
            w = await _write(s, ops, rel, path, data, **expect)
        out = WriteOut(session=s.id, path=w.path, sha256=w.sha256, size=w.size,
                       created=w.created, note=_note(w))
        verb = "created" if out.created else "overwrote"
        return result(out, f"{verb} {out.path} ({out.size} bytes, sha256 "
                           f"{core.short(out.sha256)})" + (f"\nnote: {out.note}" if out.note
                                                          else ""))

    @tool(mcp, out=EditOut, read_only=False, destructive=True, title="Edit a file")
    async def edit_file(
        ctx: Context,
        path: PathArg,
        old_string: Annotated[str, Field(
            description="Exact text to replace, including whitespace and indentation; must "
                        "occur exactly once unless replace_all.", max_length=_MAX_TEXT)],
        new_string: Annotated[str, Field(description="The replacement text.",
                                         max_length=_MAX_TEXT)],
        replace_all: Annotated[bool, Field(
            description="Replace every occurrence of old_string.")] = False,
        expected_hash: HashArg = None,
        session: SessionArg = None,
    ) -> ToolResult:
        """Replace an exact string in a file (read it with read_file first).

        `old_string` must match the file exactly (copy it from read_file without the `  12|`
        line-number prefix) and be unique, or set `replace_all`. Line endings, encoding,
        byte-order mark and mode bits are kept; LF in old/new also matches CRLF files. Fails,
        writing nothing, if the file changed since this session read it. Returns the changed
        lines.
        """
        _check_size(app_of(ctx).settings.max_file_bytes, old_string=len(old_string),
                    new_string=len(new_string))
        if looks_like_read_artifact(new_string):
            raise ReadArtifactError("new_string contains read_file line-number prefixes or a "
                                    "truncation marker; pass the real text without them")
        return await _edit(ctx, path, expected_hash, lambda d: apply_edit(
            d.text, old_string, new_string, replace_all, d.newline))

    @tool(mcp, out=EditOut, read_only=False, destructive=True, title="Apply several edits")
    async def multi_edit(
        ctx: Context,
        path: PathArg,
        edits: Annotated[list[EditSpec], Field(
            description="Edits applied in order, each to the result of the previous one: "
                        "{old_string, new_string, replace_all?}.", min_length=1, max_length=100)],
        expected_hash: HashArg = None,
        session: SessionArg = None,
    ) -> ToolResult:
        """Apply several exact-string edits to one file, all or nothing, in one write.

        Each edit works like edit_file on the result of the edits before it. If any edit
        fails, none is applied and the error names the failing edit. Read the file with
        read_file first.
        """
        max_bytes = app_of(ctx).settings.max_file_bytes
        _check_size(max_bytes, edits=sum(len(e.old_string) + len(e.new_string) for e in edits))
        for i, e in enumerate(edits, start=1):
            if looks_like_read_artifact(e.new_string):
                raise ReadArtifactError(f"edit {i}: new_string contains read_file line-number "
                                        "prefixes or a truncation marker; pass the real text")
        return await _edit(ctx, path, expected_hash,
                           lambda d: apply_edits(d.text, edits, d.newline))

    @tool(mcp, out=ListOut, read_only=True, idempotent=True, title="List a directory")
    async def list_dir(
        ctx: Context,
        path: Annotated[str, Field(description="Directory, relative to /workspace.",
                                   min_length=1, max_length=4096)] = ".",
        depth: Annotated[int, Field(description="Levels to descend (1 = only this "
                                                "directory).", ge=1, le=10)] = 2,
        include_ignored: Annotated[bool, Field(
            description="Also list files git ignores.")] = False,
        max_entries: Annotated[int, Field(description="Most entries to return.",
                                          ge=1, le=2000)] = 500,
        session: SessionArg = None,
    ) -> ToolResult:
        """List a directory as an indented tree with file sizes.

        Skips .git, node_modules, __pycache__, virtualenvs and (unless `include_ignored`)
        files ignored by git. Stops at `max_entries` and says so.
        """
        core.check_path(path)
        s, ops = session_ops()
        fetch = max_entries if include_ignored else min(4 * max_entries, 8000)
        r = await ops.call("list", path=path, depth=depth, max_entries=fetch)
        entries: list[dict[str, Any]] = r["entries"]
        truncated, hidden = bool(r["truncated"]), 0
        if not include_ignored and entries:
            ignored = await _git_ignored(ops, entries)
            kept = core.drop_ignored(entries, ignored)
            hidden, entries = len(entries) - len(kept), kept
        if len(entries) > max_entries:
            entries, truncated = entries[:max_entries], True
        out = ListOut(session=s.id, path=r["path"], entries=[Entry(**e) for e in entries],
                      truncated=truncated, ignored=hidden)
        return result(out, core.tree_text(r["path"], entries, truncated, max_entries, hidden))


async def _git_ignored(ops: SessionOps, entries: list[dict[str, Any]]) -> set[str]:
    """Entry paths git ignores; empty when the workspace is not a git repository."""
    ignored: set[str] = set()
    for batch in core.check_ignore_batches(entries):
        argv = ["git", "-c", "safe.directory=*", "-c", "core.quotePath=false", "check-ignore",
                "--", *batch]
        r = await ops.exec("git check-ignore", argv=argv, timeout=30, cap=1 << 20)
        if r.exit_code not in (0, 1):  # 128: not a repository (or git failed)
            return set()
        ignored |= core.parse_check_ignore(r.stdout.text)
    return ignored
