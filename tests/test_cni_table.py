"""``k8sstate findings cni-table``: JUnit XML of finding runs → the side-by-side CNI table.

``tests/data/cni-table/*.xml`` are the real JUnit files of findings 2 and 26 on kind with ptp, bridge and
flannel (the runs ``docs/cnis.md`` "Regenerate the table" describes). The pytester test runs the plugin
itself; its cluster is a fake (the boundary that needs kind: a ``cluster_state`` whose snapshots are built
here), so the recording and the generator are checked without Docker.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_k8sstate.cli.main import main
from pytest_k8sstate.report.cnitable import END_MARKER, START_MARKER, read_runs, render_table

DATA = Path(__file__).resolve().parent / "data" / "cni-table"
RUNS = [str(DATA / f"{cni}-iptables.xml") for cni in ("flannel", "ptp", "bridge")]
# f26-all-nftables.xml: one run of every f26 test, three clusters in one file
ALL = [*RUNS, str(DATA / "flannel-host-gw-iptables.xml"), str(DATA / "f26-all-nftables.xml")]
DOC = Path(__file__).resolve().parent.parent / "docs" / "findings.md"


def _rows(table: str) -> dict[str, list[str]]:
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0].isdigit():
            out[cells[0]] = cells
    return out


def test_real_runs_give_one_column_per_cni_in_a_fixed_order() -> None:
    table = render_table(read_runs(RUNS))
    head = table.splitlines()[0]
    assert head == "| # | step | ptp × iptables | bridge × iptables | flannel × iptables |"
    rows = _rows(table)
    assert sorted(rows) == ["2", "26"]
    _, title, ptp, bridge, flannel = rows["26"]
    assert title == "CNI footprint"  # the common part of the per-CNI tests' titles
    # ptp: a veth and a /32 route to the pod, no rule
    assert "+route `<pod IP> dev veth*`" in ptp
    assert "chain" not in ptp
    assert "rule" not in ptp
    # bridge: a per-pod chain jumped to from nat POSTROUTING for the pod's address
    assert "+chain `nat CNI-…`" in bridge
    assert "+rule `nat POSTROUTING: -s <pod IP>/32" in bridge
    # flannel: a port on cni0, no route to the pod, no rule
    assert "veth* (veth)" in flannel
    assert "<pod IP>" not in flannel
    assert "rule" not in flannel
    summary = table.split("\n\n", 1)[1]
    assert re.search(r"\| ptp × iptables \| \d+ s \(2 nodes\) \| 2 / 0 / 0 \| ptp-iptables.xml \|", summary)


def test_the_committed_table_is_what_the_committed_runs_generate(tmp_path: Path) -> None:
    doc = DOC.read_text()
    copy = tmp_path / "findings.md"
    copy.write_text(doc)
    assert main(["findings", "cni-table", *ALL, "--write", str(copy)]) == 0
    # the runs are committed as tests/data; docs/findings.md holds the table generated from them
    assert copy.read_text() == doc
    before, after = doc.split(START_MARKER)[0], doc.split(END_MARKER)[1]
    copy.write_text(doc.replace(doc.split(START_MARKER)[1].split(END_MARKER)[0], "\nstale\n"))
    assert main(["findings", "cni-table", *ALL, "--write", str(copy)]) == 0
    new = copy.read_text()
    assert new == doc
    assert new.startswith(before)
    assert new.endswith(after)


def test_one_run_of_several_clusters_fills_a_column_per_cluster() -> None:
    table = render_table(read_runs([str(DATA / "f26-all-nftables.xml")]))
    head = table.splitlines()[0]
    assert head == "| # | step | ptp × nftables | bridge × nftables | flannel × nftables |"
    rows = _rows(table)
    assert rows["2"][3:] == ["not run", "not run"]  # f02 ran on the run's own (ptp) cluster only
    assert "+chain `nat CNI-…`" in rows["26"][3]
    assert "| bridge × nftables |" in table.split("\n\n", 1)[1]


def test_a_new_finding_is_a_new_row_without_edits_to_it() -> None:
    # finding 32 (hostPort; another branch's test file, run with this plugin on kind with bridge)
    rows = _rows(render_table(read_runs([str(DATA / "more" / "f32-bridge-iptables.xml")])))
    assert sorted(rows) == ["2", "32"]
    cell = rows["32"][2]
    assert "+chain `nat CNI-DN-…`" in cell
    assert "-j DNAT --to-destination <pod IP>:8080`" in cell
    assert "+4 more rules" in cell  # at most MAX_ITEMS per node and category


def test_stdout_without_write(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["findings", "cni-table", RUNS[1]]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| # | step | ptp × iptables |")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not xml at all", "JUnit XML (pytest --junitxml)"),
        ("<html><body/></html>", "a <testsuites> or <testsuite> root"),
        (
            '<testsuites><testsuite><testcase classname="a" name="b"/></testsuite></testsuites>',
            "no k8sstate_footprint property",
        ),
        (
            "<testsuites><testsuite><testcase classname='a' name='b'><properties>"
            "<property name='k8sstate_finding' value=\"['2', 'x']\"/>"
            "<property name='k8sstate_footprint' value='{not json'/>"
            "</properties></testcase></testsuite></testsuites>",
            "the JSON of property k8sstate_footprint",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            "<testsuites>&b;</testsuites>",
            "without a DOCTYPE",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "run.xml"
    if content is not None:
        path.write_text(content)
    assert main(["findings", "cni-table", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("k8sstate: error: ")
    assert str(path) in err
    assert message in err


def test_a_document_without_markers_is_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "f.md"
    doc.write_text(f"# x\n{START_MARKER}\n")
    assert main(["findings", "cni-table", *RUNS, "--write", str(doc)]) == 2
    assert "needs exactly one" in capsys.readouterr().err
    assert doc.read_text() == f"# x\n{START_MARKER}\n"


CONFTEST = """
import types
import pytest
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.state import Snapshot

# a fake of the kind boundary: a cluster with a CNI whose "after" snapshot has one more veth and route
def _node(extra):
    links = [{"ifname": "eth0", "link_type": "ether", "linkinfo": {"info_kind": "veth"}, "mtu": 1500}]
    routes = [{"dst": "default", "gateway": "172.18.0.1", "dev": "eth0"}]
    if extra:
        links.append({"ifname": "veth0badc0de", "linkinfo": {"info_kind": "veth"}, "mtu": 1500})
        routes.append({"dst": "10.244.1.9", "dev": "veth0badc0de"})
    return NodeState(node="fk-worker", links=links, routes=routes)

@pytest.fixture(scope="session")
def k8s_cluster():
    return types.SimpleNamespace(
        name="fk", provider="kind", capabilities=frozenset({"cni", "cni-ptp"}), proxy_mode="nftables",
        nodes=[object(), object()],
    )

@pytest.fixture
def cluster_state(k8s_cluster):
    snap = lambda label, extra: Snapshot(label=label, taken_at=0.0, cluster={"name": "fk"}, etcd=None,
                                         nodes={"fk-worker": _node(extra)})
    return types.SimpleNamespace(cluster=k8s_cluster, before=snap("before", False), after=snap("after", True),
                                 ignore=())
"""

TESTS = """
import pytest

@pytest.mark.k8sstate_finding(40, "a fake step: one veth")
def test_step(k8s_cluster, cluster_state):
    pass

@pytest.mark.k8sstate_finding(41, "skipped here")
def test_skipped(k8s_cluster, cluster_state):
    pytest.skip("needs something")

def test_not_a_finding(k8s_cluster, cluster_state):
    pass

@pytest.mark.k8sstate_finding(43, "no diff taken")
def test_no_diff(k8s_cluster, cluster_state):
    cluster_state.after = None

@pytest.mark.k8sstate_finding(42, "a step diffed from a later snapshot")
def test_since(k8s_cluster, cluster_state):
    cluster_state.steps = [(cluster_state.after, cluster_state.after)]  # diff(since=<snapshot with the veth>)

@pytest.mark.k8sstate_finding(44, "two steps")
def test_two_steps(k8s_cluster, cluster_state):
    before, after = cluster_state.before, cluster_state.after
    cluster_state.steps = [(before, after), (after, after)]
"""


def test_the_plugin_records_footprints_that_the_generator_reads(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_fake=TESTS)
    junit = pytester.path / "run.xml"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--junitxml={junit}")
    result.assert_outcomes(passed=5, skipped=1)
    xml = junit.read_text()
    assert xml.count('name="k8sstate_footprint"') == 4  # the finding tests that ran, not the plain one
    assert xml.count('name="k8sstate_cluster"') == 4
    capsys.readouterr()
    assert main(["findings", "cni-table", str(junit)]) == 0
    table = capsys.readouterr().out
    rows = _rows(table)
    assert list(rows) == ["40", "42", "43", "44"]
    assert rows["40"][2] == "**worker**: +link `veth* (veth)`<br>+route `10.244.1.9 dev veth*`"
    assert rows["42"][2] == "no node change"  # the last diff's own start, not the test's before
    assert rows["43"][2] == "footprint not computed: the test took no snapshot after its before"
    assert rows["44"][2] == f"*diff 1*: {rows['40'][2]}<br>*diff 2*: no node change"
    assert "| ptp × nftables |" in table.splitlines()[0]
    assert re.search(r"\| ptp × nftables \| \d+ s \(2 nodes\) \| 4 / 1 / 0 \| run.xml \|", table), table
