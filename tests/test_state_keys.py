"""etcd key globs (state.keys)."""

from __future__ import annotations

import pytest

from pytest_k8sstate.state import key_matches


@pytest.mark.parametrize(
    ("pattern", "key", "ok"),
    [
        ("/registry/leases/**", "/registry/leases/kube-node-lease/n1", True),
        ("/registry/leases/**", "/registry/leases", True),
        ("/registry/leases/**", "/registry/leasesx/a", False),
        ("/registry/pods/*/web", "/registry/pods/default/web", True),
        ("/registry/pods/*/web", "/registry/pods/a/b/web", False),
        ("/registry/**/web-*", "/registry/endpointslices/default/web-x7k2p", True),
        ("services/specs/default/*", "/registry/services/specs/default/web", True),
        ("services/specs/default/*", "/registry/services/specs/kube-system/dns", False),
        ("/registry/pods/default/we?", "/registry/pods/default/web", True),
        ("/registry/minions/*", "/registry/minions/n1", True),
        ("/registry/pods/default/web.1", "/registry/pods/default/webx1", False),
    ],
)
def test_key_patterns(pattern: str, key: str, ok: bool) -> None:
    assert key_matches(pattern, key) is ok
