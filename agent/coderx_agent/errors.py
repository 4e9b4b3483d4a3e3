"""The agent's exceptions: errors, and the control flow of the loop.

::

    AgentError                       one clear sentence; ``exit_code`` for the CLI
    ├── UsageError (ValueError)      bad flags or arguments                  exit 2
    ├── ConfigError (ValueError)     an invalid config file or value         exit 2
    ├── ModelError                   the model API failed (after retries)    exit 1
    │   └── MissingKey               no API key: says how to set one         exit 1
    ├── ToolServerError              an MCP server cannot be started/reached exit 5
    ├── ConversationError            no saved conversation matches           exit 1
    └── Stop                         the loop's control flow (not failures of the agent)
        ├── Submitted                the model gave its final answer         exit 0
        ├── LimitsExceeded
        │   ├── BudgetExceeded       ``--max-budget-usd`` would be passed    exit 3
        │   └── TurnLimit            ``--max-turns`` reached                 exit 4
        └── Interrupted              Ctrl-C / SIGINT / SIGTERM               exit 130

The loop raises these and catches them in one place (``loop.Agent.run``); the CLI maps
``exit_code`` to the process status.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of everything the agent raises on purpose."""

    exit_code = 1
    status = "error"


class UsageError(AgentError, ValueError):
    """The command line asks for something impossible."""

    exit_code = 2
    status = "usage_error"


class ConfigError(AgentError, ValueError):
    """A config file or value is invalid (the message names the file, line and key)."""

    exit_code = 2
    status = "config_error"


class ModelError(AgentError):
    """The model provider failed (the SDK already retried what can be retried)."""


class MissingKey(ModelError):
    """No API key for a provider."""


class ToolServerError(AgentError):
    """An MCP server could not be started or reached."""

    exit_code = 5
    status = "tool_server_failure"


class ConversationError(AgentError):
    """A saved conversation cannot be found or read."""


class Stop(AgentError):
    """Ends a run of the loop; carries no failure of the agent itself."""


class Submitted(Stop):
    """The model answered without asking for tools."""

    exit_code = 0
    status = "done"


class LimitsExceeded(Stop):
    """A limit set by the user was reached."""


class BudgetExceeded(LimitsExceeded):
    """The next turn would exceed ``--max-budget-usd`` (or the spend already has)."""

    exit_code = 3
    status = "budget_exceeded"


class TurnLimit(LimitsExceeded):
    """``--max-turns`` model turns were used."""

    exit_code = 4
    status = "turn_limit"


class Interrupted(Stop):
    """The user interrupted the run."""

    exit_code = 130
    status = "interrupted"
