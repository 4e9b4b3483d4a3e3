#!/usr/bin/env bash
# Wheels for deploy/server.Dockerfile, made on the host (which reaches PyPI or a mirror) so
# the images build offline: wheels/ holds the server and its dependencies, wheels-sandbox/
# the sandbox image's Python tools (pytest, ruff: coderx_mcp.image.WHEEL_REQUIREMENTS),
# which the compose service `sandbox-image` builds the sandbox image with. The host's
# Python must be the base image's (3.11 for coderx-base:bookworm, 3.12 for python:3.12-slim).
# With wheels already there, only the server's own wheel is rebuilt (the code changed,
# its dependencies rarely do: missing ones are fetched); --all rebuilds everything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ "${1:-}" == "--all" || ! -d "$here/wheels" ]]; then
    rm -rf "$here/wheels" "$here/wheels-sandbox"
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
reqs="$(python3 - "$here/../src/coderx_mcp/image.py" <<'PY'
import re
import sys

line = re.search(r"WHEEL_REQUIREMENTS[^\n]*", open(sys.argv[1]).read())
print(" ".join(re.findall(r'"([^"]+==[^"]+)"', line.group(0) if line else "")))
PY
)"
if [[ "$(cat "$here/wheels-sandbox/.requirements" 2>/dev/null)" != "$reqs" ]]; then
    rm -rf "$here/wheels-sandbox"
    py="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    arch="$(uname -m)"
    # shellcheck disable=SC2086 # one argument per requirement
    python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --implementation cp --python-version "$py" --platform "manylinux_2_28_$arch" \
        --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
        --dest "$here/wheels-sandbox" $reqs
    echo "$reqs" > "$here/wheels-sandbox/.requirements"
fi
echo "wheels for $(python3 -V) in $here/wheels and $here/wheels-sandbox" >&2
