"""The deprecated ``k8s`` fixture (registered by the plugin only when no other plugin defines ``k8s``)."""

from __future__ import annotations

import warnings

import pytest

from pytest_k8sstate.k8s.helper import K8sHelper
from pytest_k8sstate.plugin.options import K8sStateDeprecationWarning


@pytest.fixture
def k8s(k8s_api: K8sHelper) -> K8sHelper:
    """Deprecated: ``k8s_api``."""
    warnings.warn(
        K8sStateDeprecationWarning(
            "the k8s fixture is deprecated and will be removed in the next release: use k8s_api "
            "(k8s clashes with pytest-kubernetes)"
        ),
        stacklevel=2,
    )
    return k8s_api
