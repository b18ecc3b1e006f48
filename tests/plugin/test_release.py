"""A marker-spec cluster is deleted once no test left in the session needs it (plugin/release.py), on real
``local`` clusters (control plane only: each costs seconds). Skipped when the local provider cannot run."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

PluginRunner = Any  # tests/plugin/conftest.py

RELEASE_TESTS = """
import json
import pathlib

import pytest

NAMES = {}


def _live(k8s_clusters):
    return set(k8s_clusters.provider("local").list())


def test_a_session_cluster(k8s_cluster):
    NAMES["session"] = k8s_cluster.name


@pytest.mark.k8sstate(proxy_mode="nftables")
def test_b1_spec(k8s_cluster):
    NAMES["spec"] = k8s_cluster.name


@pytest.mark.k8sstate(proxy_mode="nftables")
def test_b2_spec_again(k8s_cluster, k8s_clusters):
    assert k8s_cluster.name == NAMES["spec"]  # the same cluster while tests of the spec remain


def test_c_spec_asked_in_the_body(k8s_cluster, k8s_clusters):
    live = _live(k8s_clusters)
    assert NAMES["spec"] not in live, "the spec's cluster outlived its last test"
    assert NAMES["session"] in live
    again = k8s_clusters.get(proxy_mode="nftables")  # created again on demand
    assert again.name != NAMES["spec"]
    NAMES["again"] = again.name


def test_d_after(k8s_cluster, k8s_clusters):
    live = _live(k8s_clusters)
    assert NAMES["again"] not in live, "a cluster asked for in a test's body outlived that test"
    assert k8s_cluster.name == NAMES["session"] in live
    pathlib.Path("names.json").write_text(json.dumps(NAMES))
"""


@pytest.mark.usefixtures("local_provider_ok")
def test_spec_clusters_go_after_their_last_test(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(test_release=RELEASE_TESTS)
    result = plugin.run_subprocess("--k8sstate-nodes=0", "-p", "no:randomly", "-v")
    out = result.stdout.str()
    result.assert_outcomes(passed=5)
    released = re.findall(r"deleted cluster (\S+) in [\d.]+s \(no test left needs it\)", out)
    names = json.loads((plugin.pytester.path / "names.json").read_text())
    assert released == [names["spec"], names["again"]], out
    # the session cluster goes at the end, as before
    result.stdout.fnmatch_lines([f"*deleted cluster {names['session']} in *s", "*5 passed*"])
