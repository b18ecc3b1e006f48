"""Fixtures for the seed article's findings (``pytest tests/findings --k8sstate-provider local``).

Every finding test creates objects named ``f<NN>-…`` in the ``default`` namespace (as the article
does), so a test never sees another test's objects: the autouse :func:`_settled_rules` fixture waits,
before the ``before`` snapshot and again after the ``k8s_api`` helper deleted what the test applied,
until no kube-proxy rule on any node mentions a ``default/fNN-`` object.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import SYNC_TIMEOUT, wait_settled


@pytest.fixture(autouse=True)
def _settled_rules(request: pytest.FixtureRequest) -> Iterator[None]:
    """Before and after each finding: no findings pod left, no kube-proxy rule mentions a findings object.

    The teardown first has the ``k8s_api`` helper delete what the test applied (the helper's own teardown
    would run only after this fixture's), then waits. A test that uses no cluster (or is skipped) is not
    touched.
    """
    if "k8s_cluster" not in request.fixturenames:
        yield
        return
    cluster = request.getfixturevalue("k8s_cluster")
    k8s_api = request.getfixturevalue("k8s_api")
    wait_settled(cluster, k8s_api, "before the test")
    yield
    problems = k8s_api.cleanup(timeout=SYNC_TIMEOUT)
    assert not problems, f"deleting the test's objects failed: {problems}"
    wait_settled(cluster, k8s_api, "after the test's objects were deleted")


FINDINGS_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The article's claims are about objects in ``default`` (``/registry/pods/default/…``, kube-proxy's
    ``default/fNN-web`` comments): every finding opts out of its own namespace with the marker."""
    for item in items:
        if item.path.is_relative_to(FINDINGS_DIR):
            item.add_marker(pytest.mark.k8sstate(namespace="default"))
