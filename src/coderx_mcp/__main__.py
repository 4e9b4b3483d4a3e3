"""``python -m coderx_mcp`` runs the ``coderx-mcp`` command line."""

from coderx_mcp.startup import main

main()
