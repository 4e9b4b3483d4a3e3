"""Against a real cluster: only when ``KUBECONFIG`` is set (CI has none, so CI skips these).

``CODERX_TEST_KUBE_NAMESPACE`` (default ``coderx``) must exist with the Role of
docs/kubernetes.md; ``CODERX_TEST_KUBE_IMAGE`` (default the test image) must be pullable
by the nodes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from tests.conftest import IMAGE
from tests.sandbox.conftest import out, sh

from coderx_mcp.config import KubernetesSettings
from coderx_mcp.sandbox.instance import Instance
from coderx_mcp.sandbox.kubernetes import KubernetesBackend
from coderx_mcp.sessions import SessionManager

pytestmark = [pytest.mark.kubernetes,
              pytest.mark.skipif(not os.environ.get("KUBECONFIG"),
                                 reason="needs a real cluster: set KUBECONFIG")]


async def test_session_on_a_real_cluster(make_settings: Callable[..., Any]) -> None:
    kube = KubernetesSettings(namespace=os.environ.get("CODERX_TEST_KUBE_NAMESPACE", "coderx"),
                              api_timeout_s=180)
    s = make_settings(backend="kubernetes", kubernetes=kube,
                      image=os.environ.get("CODERX_TEST_KUBE_IMAGE", IMAGE))
    instance = Instance.current()
    manager = SessionManager(s, KubernetesBackend(s, instance), instance=instance)
    await manager.start()
    try:
        session = await manager.open("tester")
        r = await sh(session, "id -u; touch /etc/x 2>&1; echo hi > f && cat f")
        lines = out(r).splitlines()
        assert lines[0] == "1000" and "Read-only" in lines[1] and lines[2] == "hi"
    finally:
        await manager.shutdown()
