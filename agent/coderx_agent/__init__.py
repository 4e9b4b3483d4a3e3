"""coderx-agent: a small agent loop that reaches the Coder-X tools as an MCP client.

Placeholder package: the agent lands in a later wave.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
