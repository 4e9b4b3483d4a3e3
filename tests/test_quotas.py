"""Per-owner rules without a server: session quotas, room kept for others, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from coderx_mcp.config import Settings
from coderx_mcp.errors import ConfigError, SessionLimitReached
from coderx_mcp.principals import PrincipalPolicy
from coderx_mcp.quotas import Quotas
from coderx_mcp.workspace.policy import WorkspacePolicy

POLICIES = {"principal:greedy": PrincipalPolicy(),
            "principal:small": PrincipalPolicy(max_sessions=1, cpus=0.5, memory="256m",
                                               network=False)}


@pytest.fixture
def quotas(tmp_path: Path) -> Quotas:
    # The operator allows network; each token may still forbid it.
    settings = Settings(max_sessions=8, reserved_sessions=2, max_sessions_per_principal=6,
                        state_dir=tmp_path / "state", data_dir=tmp_path / "data",
                        allow_network=True)
    return Quotas(settings, POLICIES.get)


def test_local_owner_bound_by_the_global_cap_only(quotas: Quotas) -> None:
    quotas.check_open("local", total=7, mine=7)
    with pytest.raises(SessionLimitReached, match="8 sessions are open, the maximum"):
        quotas.check_open("local", total=8, mine=8)


def test_a_principal_cannot_take_the_slots_kept_for_others(quotas: Quotas) -> None:
    quotas.check_open("principal:greedy", total=5, mine=5)  # 3 free > 2 kept
    with pytest.raises(SessionLimitReached, match="keeps the rest for other principals"):
        quotas.check_open("principal:greedy", total=6, mine=5)
    quotas.check_open("principal:small", total=7, mine=0)  # a first session fits any slot
    with pytest.raises(SessionLimitReached, match="keeps the rest"):
        quotas.check_open("principal:small", total=8, mine=0)


def test_a_principal_quota_from_its_token_or_the_setting(quotas: Quotas) -> None:
    with pytest.raises(SessionLimitReached, match="you have 1 sessions open, your maximum"):
        quotas.check_open("principal:small", total=1, mine=1)
    with pytest.raises(SessionLimitReached, match="you have 6 sessions open"):
        quotas.check_open("principal:greedy", total=6, mine=6)


def test_limits_default_to_the_token_and_network_follows_it(quotas: Quotas) -> None:
    small = quotas.limits("principal:small", None, None, None)
    assert (small.cpus, small.memory) == (0.5, "256m")
    asked = quotas.limits("principal:small", None, 1.0, None)
    assert (asked.cpus, asked.memory) == (1.0, "256m")
    with pytest.raises(ConfigError, match="your token does not allow network access"):
        quotas.limits("principal:small", "bridge", None, None)
    assert quotas.limits("principal:greedy", "bridge", None, None).cpus == 1.0
    assert not quotas.takes_pool("principal:small") and quotas.takes_pool("local")


def test_network_is_the_operators_decision_before_the_tokens(tmp_path: Path) -> None:
    closed = Quotas(Settings(state_dir=tmp_path / "state", data_dir=tmp_path / "data"),
                    POLICIES.get)
    with pytest.raises(ConfigError, match="--allow-network"):
        closed.limits("principal:greedy", "bridge", None, None)


def test_roots_give_a_principal_its_own_policy(quotas: Quotas, tmp_path: Path) -> None:
    own = tmp_path / "alice"
    own.mkdir()
    server = WorkspacePolicy(roots=(), default=None, rule="scratch")
    q = Quotas(quotas.settings, {"principal:alice": PrincipalPolicy(roots=(own,))}.get)
    mine = q.workspace_policy("principal:alice", server)
    assert mine.roots == (own,) and mine.default == own
    assert q.workspace_policy("principal:bob", server) is server
