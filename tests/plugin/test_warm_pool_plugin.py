"""``--k8sstate-pool N``: sessions take their local cluster from a warm pool (real clusters, real server).

The first session starts the pool's server and takes the cluster it was creating; the server makes the
next one at once, so the second session's cluster is already there. Both clusters are deleted at their
session's end like any other; the server is stopped at the end of the test, whatever happened.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

import pytest_k8sstate.providers.local.state as local_state
from pytest_k8sstate.node import netns
from pytest_k8sstate.providers.local import warm

PluginRunner = Any  # tests/plugin/conftest.py

SPEC = warm.WarmSpec(0, "iptables")

TESTS = """
def test_cluster_comes_from_the_pool(k8s_cluster, k8s_api):
    assert k8s_cluster.name.startswith("wp")
    assert k8s_api.nodes() == [k8s_cluster.nodes[0].name]
"""


def _waiting() -> tuple[str, ...]:
    return next((s.waiting for s in warm.statuses() if s.slug == SPEC.slug()), ())


def _gone(name: str) -> bool:
    ours = [ns for ns in netns.list_ours() if ns.startswith(f"k8ss-{name}-")]
    return not local_state.cluster_dir(name).exists() and not ours


def test_sessions_take_their_cluster_from_the_warm_pool(
    plugin: PluginRunner, local_provider_ok: None
) -> None:
    plugin.pytester.makepyfile(test_pooled=TESTS)
    args = ("--k8sstate-nodes=0", "--k8sstate-pool=1", "-p", "no:randomly")
    try:
        first = plugin.run_subprocess(*args)
        first.assert_outcomes(passed=1)
        out1 = first.stdout.str()
        assert f"started the warm pool {SPEC.slug()} (1 ready;" in out1, out1
        (name1,) = re.findall(r"took cluster (wp[0-9a-f]+) \(local, 1 control plane \+ 0 workers", out1)
        assert f"deleted cluster {name1}" in out1
        assert _gone(name1)

        # the server replaced it while the first session ran (or right after): the next one waits
        deadline = time.monotonic() + 120
        while len(_waiting()) != 1:
            assert time.monotonic() < deadline, "the pool never made a replacement"
            time.sleep(0.1)
        (ready,) = _waiting()
        second = plugin.run_subprocess(*args)
        second.assert_outcomes(passed=1)
        out2 = second.stdout.str()
        assert "started the warm pool" not in out2
        took = re.findall(r"took cluster (wp[0-9a-f]+) .* from the warm pool in ([0-9.]+)s", out2)
        assert [t[0] for t in took] == [ready], out2
        assert float(took[0][1]) < 2.0  # taken, not created
        assert _gone(ready)
    finally:
        warm.stop(spec=SPEC)
        from pytest_k8sstate.providers.local.reaper import reap

        reap()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--k8sstate-pool=many"],
            "--k8sstate-pool: invalid value 'many' (from command line --k8sstate-pool)",
        ),
        (["--k8sstate-pool=9"], "expected a whole number of warm clusters from 0 to 8"),
        (
            ["--k8sstate-pool=1", "--k8sstate-provider=kind"],
            "expected 0 with --k8sstate-provider kind (the warm pool keeps local clusters",
        ),
    ],
)
def test_bad_pool_values_are_usage_errors(plugin: PluginRunner, args: list[str], expected: str) -> None:
    with pytest.raises(pytest.UsageError) as excinfo:
        plugin.configure(*args)
    assert expected in str(excinfo.value)


def test_pool_setting_from_env(plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    assert plugin.settings().pool == 0
    monkeypatch.setenv("K8SSTATE_POOL", "2")
    assert plugin.settings().pool == 2
    # a machine-wide setting does not break runs on another provider: it does not apply there
    assert plugin.settings("--k8sstate-provider=kind").pool == 0


def test_a_bad_idle_limit_is_a_usage_error(plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K8SSTATE_POOL_IDLE", "soon")
    with pytest.raises(
        pytest.UsageError, match="--k8sstate-pool 1: K8SSTATE_POOL_IDLE='soon': expected seconds"
    ):
        plugin.configure("--k8sstate-pool=1")
    assert plugin.settings().pool == 0  # no pool: the variable is not read
