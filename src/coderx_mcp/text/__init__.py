"""Pure text core behind the file tools: decoding, rendering and edits (no I/O)."""

from coderx_mcp.text.decode import (
    SNIFF_BYTES,
    Decoded,
    decode,
    encode,
    is_binary,
    is_utf8_prefix,
    newline_stats,
)
from coderx_mcp.text.edit import EditOutcome, EditSpec, apply_edit, apply_edits, follow_newlines
from coderx_mcp.text.errors import (
    AmbiguousEditError,
    BinaryFileError,
    EditNotFoundError,
    NoOpEditError,
    ReadArtifactError,
    TextError,
    UnsupportedEncodingError,
)
from coderx_mcp.text.render import Rendered, count_lines, looks_like_read_artifact, render_numbered

__all__ = [
    "SNIFF_BYTES",
    "AmbiguousEditError",
    "BinaryFileError",
    "Decoded",
    "EditNotFoundError",
    "EditOutcome",
    "EditSpec",
    "NoOpEditError",
    "ReadArtifactError",
    "Rendered",
    "TextError",
    "UnsupportedEncodingError",
    "apply_edit",
    "apply_edits",
    "count_lines",
    "decode",
    "encode",
    "follow_newlines",
    "is_binary",
    "is_utf8_prefix",
    "looks_like_read_artifact",
    "newline_stats",
    "render_numbered",
]
