"""What one owner may open: its workspace roots, session quota and sandbox limits.

The local owner (stdio) is bound by the server's settings only. An HTTP principal is
bound by its token's policy, falling back to the per-principal settings; the global
session cap keeps ``reserved_sessions`` slots for principals holding none yet, so one
principal can never lock the others out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from coderx_mcp.config import Network, SandboxLimits, Settings, parse_size
from coderx_mcp.errors import ConfigError, SessionLimitReached
from coderx_mcp.principals import PrincipalPolicy
from coderx_mcp.workspace.policy import WorkspacePolicy

PrincipalsOf = Callable[[str], PrincipalPolicy | None]


class Quotas:
    """The per-owner rules of a session manager.

    Args:
        settings: Server settings (global and per-principal defaults).
        principals: The policy of an owner that is an HTTP principal; None for the local
            owner.
    """

    def __init__(self, settings: Settings, principals: PrincipalsOf) -> None:
        self.settings = settings
        self.principal = principals
        self._own_policies: dict[tuple[Path, ...], WorkspacePolicy] = {}

    def workspace_policy(self, owner: str, server: WorkspacePolicy) -> WorkspacePolicy:
        """``owner``'s workspace policy: its own roots when its token has some (the first is
        its default workspace), else the server's."""
        pp = self.principal(owner)
        if pp is None or not pp.roots:
            return server
        found = self._own_policies.get(pp.roots)
        if found is None:
            own = self.settings.model_copy(update={"workspace": pp.roots[0],
                                                   "workspace_roots": list(pp.roots)})
            found = WorkspacePolicy.from_settings(own, Path.cwd(), http=True)
            self._own_policies[pp.roots] = found
        return found

    def takes_pool(self, owner: str) -> bool:
        """Whether a default session of ``owner`` may come from the warm pool (whose
        sandboxes have the server's default workspace and limits)."""
        pp = self.principal(owner)
        return pp is None or (not pp.roots and pp.cpus is None and pp.memory is None)

    def egress_allow(self, owner: str) -> list[str]:
        """The hosts ``owner``'s allowlist sessions may reach: its token's list, else the
        server's."""
        pp = self.principal(owner)
        if pp is not None and pp.egress is not None:
            return list(pp.egress)
        return list(self.settings.egress.allow)

    def check_open(self, owner: str, total: int, mine: int) -> None:
        """Refuse a session beyond ``owner``'s quota, or one that would leave no room for
        principals holding none yet.

        Args:
            owner: Who opens.
            total: Sessions open or opening on the server.
            mine: Of those, ``owner``'s.

        Raises:
            SessionLimitReached: With the reason and what to do.
        """
        s = self.settings
        pp = self.principal(owner)
        if pp is None:
            if total >= s.max_sessions:
                raise SessionLimitReached(
                    f"{s.max_sessions} sessions are open, the maximum; close one with "
                    "session_close first")
            return
        quota = pp.max_sessions or s.max_sessions_per_principal
        if mine >= quota:
            raise SessionLimitReached(
                f"you have {mine} sessions open, your maximum; close one with session_close "
                "first")
        free = s.max_sessions - total
        if free <= 0 or (mine > 0 and free <= s.reserved_sessions):
            raise SessionLimitReached(
                f"the server has {total} of its {s.max_sessions} sessions open and keeps the "
                "rest for other principals; close one of yours with session_close first")

    def limits(self, owner: str, network: Network | None, cpus: float | None,
               memory: str | None) -> SandboxLimits:
        """The limits of a new session of ``owner``: asked ones, else its token's defaults,
        else the server's.

        Raises:
            ConfigError: Network not allowed, or a limit out of range.
        """
        s = self.settings
        pp = self.principal(owner)
        if network == "bridge" and network != s.network and not s.allow_network:
            raise ConfigError(
                "network access is the operator's decision and this server does not allow it "
                "for sessions (start it with --allow-network, or CODERX_ALLOW_NETWORK=1, to "
                "let session_open ask for network='bridge')")
        if network == "allowlist" and not s.egress.enabled:
            raise ConfigError(
                "network='allowlist' is off on this server: the operator enables it with "
                "CODERX_EGRESS__ENABLED=1 and the allowed hosts in CODERX_EGRESS__ALLOW")
        if network in ("bridge", "allowlist") and pp is not None and pp.network is False:
            raise ConfigError("your token does not allow network access for sessions")
        if pp is not None:
            cpus = cpus if cpus is not None else pp.cpus
            memory = memory if memory is not None else pp.memory
        if cpus is not None and not 0 < cpus <= s.max_cpus:
            raise ConfigError(f"cpus must be above 0 and at most {s.max_cpus}")
        if memory is not None:
            try:
                size = parse_size(memory)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if not 64 << 20 <= size <= parse_size(s.max_memory):
                raise ConfigError(f"memory must be between 64m and {s.max_memory}")
        return s.limits.model_copy(update={k: v for k, v in
                                           {"cpus": cpus, "memory": memory}.items()
                                           if v is not None})
