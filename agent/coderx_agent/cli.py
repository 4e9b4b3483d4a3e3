"""Entry point of the ``coderx-agent`` console script (placeholder until the agent wave)."""

import sys


def main() -> None:
    """Tell the user the agent is not built yet, and exit non-zero."""
    sys.stderr.write("coderx-agent: not available yet; use `coderx-mcp` (see README.md)\n")
    raise SystemExit(2)
