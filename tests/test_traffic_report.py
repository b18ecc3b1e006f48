"""plugin/traffic_report.py through pytester: the ``k8sstate traffic`` report section and ``traffic.txt``
for tests that compared traffic with the trace; the conntrack switch (option, marker)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TESTS = """
import os
import sys

import pytest

sys.path.insert(0, {repo!r})
from tests.test_traffic_compare import _probe, _snapshot

from pytest_k8sstate.node import conntrack
from pytest_k8sstate.traffic import assert_traffic_matches_trace


def test_fair():
    assert_traffic_matches_trace(_snapshot(), _probe({{"web-a": 97, "web-b": 104, "web-c": 99}}), node="n1")


def test_skewed():
    assert_traffic_matches_trace(_snapshot(), _probe({{"web-a": 160, "web-b": 70, "web-c": 70}}), node="n1")


def test_no_traffic():
    assert conntrack.enabled() is {session_on}


@pytest.mark.k8sstate_conntrack
def test_marked():
    assert conntrack.enabled()


def test_after_marked():
    assert conntrack.enabled() is {session_on}
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> pytest.RunResult:
    monkeypatch.delenv("K8SSTATE_CONNTRACK", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    installed = any(ep.value == "pytest_k8sstate.plugin" for ep in entry_points(group="pytest11"))
    plugin = () if installed else ("-p", "pytest_k8sstate.plugin")
    return pytester.runpytest_subprocess(
        *plugin, "-p", "no:cacheprovider", "-rP", "-p", "no:randomly", *args, timeout=120
    )


def test_traffic_section_and_artifact(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_traffic=TESTS.format(repo=str(REPO), session_on=False))
    arts = pytester.path / "arts"
    result = _run(pytester, monkeypatch, f"--k8sstate-artifacts={arts}")
    result.assert_outcomes(passed=4, failed=1)
    out = result.stdout.str()
    # the passing test's section (-rP) and the failing one's, each with the table
    assert out.count("k8sstate traffic") == 2, out
    assert (
        "10.96.0.50:80 from node/n1 (traced on n1, packet 172.18.0.2 -> 10.96.0.50:80): matches the trace"
        in out
    )
    assert "DOES NOT match the trace" in out
    assert "backend  traced share  observed  expected        p  masq  sources seen" in out
    files = sorted(p.relative_to(arts).as_posix() for p in arts.rglob("traffic.txt"))
    assert len(files) == 2
    assert any("test_fair" in f for f in files)
    assert any("test_skewed" in f for f in files)
    fair = next(p for p in arts.rglob("traffic.txt") if "test_fair" in str(p)).read_text()
    assert fair.splitlines()[0].endswith("matches the trace")
    assert "N=300" in fair
    # tests without traffic get no section (the marker's switch is on only during the marked test)
    assert "test_no_traffic" not in out.split("PASSES")[1].split("short test summary")[0]


def test_conntrack_option_turns_it_on_for_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_traffic=TESTS.format(repo=str(REPO), session_on=True))
    result = _run(pytester, monkeypatch, "--k8sstate-conntrack", "-k", "not fair and not skewed")
    result.assert_outcomes(passed=3)
