#!/usr/bin/env bash
# Wheels of the server and its dependencies for deploy/server.Dockerfile, made on the host
# (which reaches PyPI or a mirror) so the image builds offline. The host's Python must be
# the base image's (3.11 for coderx-base:bookworm, 3.12 for python:3.12-slim).
# With wheels already there, only the server's own wheel is rebuilt (the code changed,
# its dependencies rarely do); --all rebuilds everything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ "${1:-}" == "--all" || ! -d "$here/wheels" ]]; then
    rm -rf "$here/wheels"
    python3 -m pip wheel --quiet --wheel-dir "$here/wheels" "$here/.."
else
    rm -f "$here"/wheels/coderx_mcp-*.whl
    python3 -m pip wheel --quiet --no-deps --wheel-dir "$here/wheels" "$here/.."
fi
echo "wheels for $(python3 -V) in $here/wheels" >&2
