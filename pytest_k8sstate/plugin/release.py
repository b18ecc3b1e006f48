"""Delete a marker-spec cluster as soon as no test left in the session needs it.

Without this, every distinct ``@pytest.mark.k8sstate(…)`` spec kept its cluster until the end of the session:
the findings suite on kind asks for nine specs (four CNIs × one and two nodes, dual-stack), so up to ten kind
clusters ran at once on a two-core machine, and the session cluster's kube-proxy needed minutes to sync.

pytest groups the tests of one session-scoped parameter together, so once the last collected test of a spec
has torn down, its cluster goes (the default cluster stays to the end, as do kept, reused and shared ones).
A test that asks the pool for a spec in its body (``k8s_clusters.get(nodes=1, cni="ptp")``) counts as a user
only of the run it is in: the cluster is deleted after it unless a later test is marked with that spec, and
a later ``get`` creates it again. Under xdist the order a worker runs its tests is the scheduler's, not the
collection's, so nothing is released early there.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.plugin.pool import ClusterKey, ClusterPool

__all__ = ["last_users", "pytest_runtest_teardown"]

_LAST_KEY = pytest.StashKey[tuple[dict[str, int], dict[ClusterKey, int]]]()


def last_users(pool: ClusterPool, items: list[pytest.Item]) -> tuple[dict[str, int], dict[ClusterKey, int]]:
    """(index of each test by node id, index of the last test marked with each spec)."""
    from pytest_k8sstate.plugin.hooks import _marker_key

    index: dict[str, int] = {}
    last: dict[ClusterKey, int] = {}
    for i, item in enumerate(items):
        index[item.nodeid] = i
        try:
            key = _marker_key(pool, item)
        except K8sStateError:
            continue  # reported when the test runs
        if key is not None:
            last[key] = i
    return index, last


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    result = yield  # the test's fixtures are torn down first
    from pytest_k8sstate.plugin.hooks import POOL_KEY

    pool: ClusterPool | None = item.config.stash.get(POOL_KEY, None)
    if pool is None or pool.worker != "main" or nextitem is None:  # the end: pool.close deletes the rest
        return result
    if _LAST_KEY not in item.config.stash:
        item.config.stash[_LAST_KEY] = last_users(pool, list(item.session.items))
    index, last = item.config.stash[_LAST_KEY]
    here = index.get(item.nodeid)
    if here is None:
        return result
    for key in pool.live_keys():
        if last.get(key, -1) <= here:
            pool.release(key)
    return result
