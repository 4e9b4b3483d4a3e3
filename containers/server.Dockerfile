# The Coder-X MCP server itself, for `docker compose up` (streamable HTTP).
# It starts sandbox containers through the host's Docker socket; the sandboxes never get
# that socket. Needs a registry for the base image and PyPI for the dependencies.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}
WORKDIR /opt/coderx-src
COPY pyproject.toml README.md ./
COPY src ./src
COPY agent ./agent
COPY containers ./containers
RUN pip install --no-cache-dir . && rm -rf /opt/coderx-src
ENV CODERX_LOG_JSON=true
EXPOSE 8765
ENTRYPOINT ["coderx-mcp", "serve", "--http", "--host", "0.0.0.0", "--port", "8765"]
