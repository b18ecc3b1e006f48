"""The deprecated ``k8s`` fixture (registered by the plugin only when no other plugin defines ``k8s``).

It keeps 0.1's behaviour: a helper whose default namespace is ``default`` (no namespace per test), so a
0.1 test runs unchanged; ``k8s_api`` is the helper in the test's own namespace.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.k8s.helper import K8sHelper
from pytest_k8sstate.plugin.options import K8sStateDeprecationWarning

if TYPE_CHECKING:
    from pytest_k8sstate.plugin.pool import ClusterPool
    from pytest_k8sstate.providers.base import Cluster


@pytest.fixture
def k8s(
    request: pytest.FixtureRequest, k8s_cluster: Cluster, k8s_clusters: ClusterPool
) -> Iterator[K8sHelper]:
    """Deprecated: ``k8s_api`` (which works in the test's own namespace; this one in ``default``)."""
    warnings.warn(
        K8sStateDeprecationWarning(
            "the k8s fixture is deprecated and will be removed in the next release: use k8s_api "
            "(k8s clashes with pytest-kubernetes; k8s_api works in the test's own namespace, "
            "@pytest.mark.k8sstate(namespace='default') keeps 'default')"
        ),
        stacklevel=2,
    )
    try:
        dynamic = k8s_clusters.dynamic_client(k8s_cluster)
    except K8sStateError as exc:
        raise pytest.fail.Exception(f"k8sstate: cluster {k8s_cluster.name}: {exc}", pytrace=False) from None
    helper = K8sHelper(
        k8s_clusters.api_client(k8s_cluster),
        namespace="default",
        cluster=k8s_cluster,
        manifests_dir=request.config.rootpath / "manifests",
        dynamic=dynamic,
    )
    yield helper
    for problem in helper.cleanup(timeout=30):
        warnings.warn(
            pytest.PytestWarning(f"k8sstate: cleanup after {request.node.nodeid}: {problem}"), stacklevel=1
        )
