"""``needs`` is checked before session fixtures: an unsatisfiable cluster is never created just to skip."""

from __future__ import annotations

import json
from typing import Any

# The inner run's conftest wraps the pool's provider factory: every provider it hands out records each
# create()/get() of a cluster in created.json (written at session finish, with what the pool holds).
RECORDING_CONFTEST = """
import json

import pytest

from pytest_k8sstate.plugin.hooks import POOL_KEY

CALLS = []


class Recording:
    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def create(self, spec):
        CALLS.append(("create", spec.name))
        raise AssertionError(f"cluster {spec.name} created")

    def get(self, name):
        CALLS.append(("get", name))
        raise AssertionError(f"cluster {name} looked up")


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    pool = config.stash[POOL_KEY]
    real_factory = pool._provider_factory
    pool._provider_factory = lambda name: Recording(real_factory(name))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    pool = session.config.stash[POOL_KEY]
    seen = {
        "calls": CALLS,
        "clusters": [key.describe() for key in pool._clusters],
        "failed": [key.describe() for key in pool._failed],
    }
    (session.config.rootpath / "created.json").write_text(json.dumps(seen))
"""


def test_ipvs_marker_with_needs_skips_without_creating_a_cluster(plugin: Any) -> None:
    plugin.pytester.makeconftest(RECORDING_CONFTEST)
    plugin.pytester.makepyfile(
        test_ipvs="""
        import pytest

        @pytest.mark.k8sstate(proxy_mode="ipvs")
        @pytest.mark.k8sstate_needs("ipvs")
        def test_ipvs(k8s_cluster):
            raise AssertionError("must not run")
        """
    )
    result = plugin.run("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs ipvs:*"])
    seen = json.loads((plugin.pytester.path / "created.json").read_text())
    assert seen == {"calls": [], "clusters": [], "failed": []}
