"""``python -m coderx_agent``."""

from coderx_agent.cli import main

main()
