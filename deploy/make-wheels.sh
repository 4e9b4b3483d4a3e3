#!/usr/bin/env bash
# Wheels of the server and its dependencies for deploy/server.Dockerfile, made on the host
# (which reaches PyPI or a mirror) so the image builds offline. The host's Python must be
# the base image's (3.11 for coderx-base:bookworm, 3.12 for python:3.12-slim).
# With wheels already there, only the server's own wheel is rebuilt (the code changed,
# its dependencies rarely do: missing ones are fetched); --all rebuilds everything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ "${1:-}" == "--all" || ! -d "$here/wheels" ]]; then
    rm -rf "$here/wheels"
    python3 -m pip wheel --quiet --wheel-dir "$here/wheels" "$here/.."
else
    rm -f "$here"/wheels/coderx_mcp-*.whl
    python3 -m pip wheel --quiet --no-deps --wheel-dir "$here/wheels" "$here/.."
    # A dependency added since the wheels were made: fetch what is missing (offline check).
    if ! python3 -m pip install --quiet --dry-run --ignore-installed --no-index \
            --find-links "$here/wheels" "$here"/wheels/coderx_mcp-*.whl >/dev/null 2>&1; then
        python3 -m pip wheel --quiet --find-links "$here/wheels" --wheel-dir "$here/wheels" \
            "$here/.."
    fi
fi
echo "wheels for $(python3 -V) in $here/wheels" >&2
