"""Snapshot JSON round trip, atomic save (gzip too), and load errors that name the file and the place."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from state_netns import capture, needs_root, ns_fixture, restore, snap  # noqa: F401 - the ns fixture

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.testing.iptables_gen import kube_proxy_iptables, make_services
from pytest_k8sstate.testing.nft_gen import generate_services, render_ruleset


@needs_root
def test_snapshot_round_trip_atomic_save_and_gzip(ns: NetnsExec, tmp_path: Path) -> None:
    restore(ns, kube_proxy_iptables(make_services(2, 3, node_ports=1)))
    ns.run(["nft", "-f", "-"], input=render_ruleset(generate_services(2, 2)).encode(), timeout=30)
    st = capture(ns)
    s = snap("before", {ns.node: st})
    path = tmp_path / "snap.json"
    path.write_text("old content")
    assert s.save(path) == path
    assert Snapshot.load(path) == s
    assert Snapshot.from_json(json.loads(path.read_text())) == s
    assert [p.name for p in tmp_path.iterdir()] == ["snap.json"]  # no temp file left behind
    gz = s.save(tmp_path / "snap.json.gz")
    assert gzip.decompress(gz.read_bytes())[:1] == b"{"
    assert Snapshot.load(gz) == s
    assert "iptables nat" in s.summary()
    assert "nft ip kube-proxy" in s.summary()
    assert s.diff(Snapshot.load(path)).summary().endswith("no changes")


def test_save_failure_leaves_old_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    Snapshot("x", 1.0).save(path)
    good = path.read_bytes()
    bad = Snapshot("y", 2.0, cluster={"oops": object()})
    with pytest.raises(TypeError):
        bad.save(path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_load_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "broken.json"
    p.write_text('{"schema": 1,\n "label": "x",\n "taken_at": oops}\n')
    with pytest.raises(ParseError) as ei:
        Snapshot.load(p)
    assert ei.value.line == 3
    assert str(ei.value).startswith(f"{p}:3: expected valid JSON")


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], "at $: expected a JSON object"),
        ({"schema": 7}, "at $.schema: expected schema 1"),
        ({"schema": 1, "label": "x", "taken_at": "now", "cluster": {}, "nodes": {}}, "at $.taken_at"),
        ({"schema": 1, "label": "x", "taken_at": 1, "cluster": {}}, "at $.nodes: expected field 'nodes'"),
        (
            {"schema": 1, "label": "x", "taken_at": 1, "cluster": {}, "nodes": {"n1": {"links": 3}}},
            "at $.nodes.n1",
        ),
        (
            {"schema": 1, "label": "x", "taken_at": 1, "cluster": {}, "nodes": {}, "etcd": {"x": 1}},
            "at $.etcd",
        ),
    ],
)
def test_load_bad_schema_names_json_path(tmp_path: Path, doc: object, where: str) -> None:
    p = tmp_path / "s.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ParseError) as ei:
        Snapshot.load(p)
    assert str(ei.value).startswith(f"{p} {where}"), str(ei.value)


def test_load_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    from pytest_k8sstate.errors import K8sStateError

    with pytest.raises(K8sStateError, match=r"nope\.json: cannot read snapshot"):
        Snapshot.load(tmp_path / "nope.json")


# --------------------------------------------------------------------------------------------------
# fuzz: malformed snapshot files raise ParseError only

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_node_like = st.fixed_dictionaries(
    {},
    optional={
        "node": _json_values,
        "iptables": _json_values,
        "nft": _json_values,
        "ipsets": _json_values,
        "ipvs": _json_values,
        "links": _json_values,
        "addrs": _json_values,
        "routes": _json_values,
        "errors": _json_values,
    },
)
_snapshot_like = st.fixed_dictionaries(
    {
        "schema": st.just(1),
        "label": st.text(max_size=5),
        "taken_at": st.floats(0, 2e9),
        "cluster": st.just({}),
    },
    optional={
        "nodes": st.dictionaries(st.text(max_size=5), _node_like | _json_values, max_size=2),
        "etcd": st.fixed_dictionaries(
            {}, optional={"revision": _json_values, "prefix": _json_values, "entries": _json_values}
        )
        | _json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_snapshot_like | _json_values)
def test_fuzz_from_json_raises_only_parse_error(doc: object) -> None:
    msg = "fuzz.json at $"
    try:
        Snapshot.from_json(doc, source="fuzz.json")
    except ParseError as exc:
        msg = str(exc)
    assert msg.startswith("fuzz.json at $")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=200))
def test_fuzz_load_bytes_raises_only_parse_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    p = tmp_path_factory.mktemp("fz") / "s.json"
    p.write_bytes(data)
    msg = str(p)
    try:
        Snapshot.load(p)
    except ParseError as exc:
        msg = str(exc)
    assert msg.startswith(str(p))
