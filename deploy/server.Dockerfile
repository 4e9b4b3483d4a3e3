# The Coder-X MCP server itself, for `docker-compose up` (streamable HTTP).
# It starts sandbox containers through the host's Docker socket; the sandboxes never get
# that socket. Needs no registry and no PyPI: BASE_IMAGE is the sandbox image's base
# (python:3.12-slim where a registry answers, else the offline Debian base that
# `coderx-mcp image build` makes, coderx-base:bookworm), and deploy/wheels/ holds the
# server and its dependencies (deploy/wheels-sandbox/ the sandbox image's tools), made on
# the host for the base's Python by deploy/make-wheels.sh. Classic builder syntax (no BuildKit needed).
ARG BASE_IMAGE=coderx-base:bookworm
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# git: worktree mode runs host git; python3-venv: Debian's python3 has no pip.
RUN set -eu; \
    pkgs="git ca-certificates"; \
    if ! python3 -m venv --help >/dev/null 2>&1; then pkgs="$pkgs python3 python3-venv"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/coderx && \
    /opt/coderx/bin/pip install --no-index --find-links /tmp/wheels coderx-mcp && \
    rm -rf /tmp/wheels
# The sandbox image's Python tools, for `coderx-mcp image build` in this image (the compose
# service sandbox-image): no PyPI needed there either.
COPY wheels-sandbox/ /opt/coderx-image-wheels/
ENV PATH=/opt/coderx/bin:$PATH CODERX_LOG_JSON=true CODERX_IMAGE_WHEELS=/opt/coderx-image-wheels
EXPOSE 8765
ENTRYPOINT ["coderx-mcp", "serve", "--http", "--host", "0.0.0.0", "--port", "8765"]
