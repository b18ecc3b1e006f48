"""Issue 14: every snapshot / CLI input gets one clear answer (exit 2, one line naming the file and the field)
in bounded time and memory — never a traceback, a hang, or a crash later in ``show`` / ``diff``."""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import signal
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_k8sstate.cli.main import main
from pytest_k8sstate.errors import ConfigError, K8sStateError, ParseError
from pytest_k8sstate.etcd.capture import EtcdEntry, EtcdState
from pytest_k8sstate.etcd.decode.result import Decoded
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.ipset import parse_ipset_save
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.parse.ipvs import parse_ipvsadm
from pytest_k8sstate.parse.nft import parse_nft_json
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.state.schema import MAX_DEPTH
from pytest_k8sstate.testing.iptables_gen import kube_proxy_iptables, make_services
from pytest_k8sstate.util.inputs import MAX_INPUT_ENV, gunzip_bounded

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

NFT_JSON = {
    "nftables": [
        {"metainfo": {"version": "1.0.9", "release_name": "x", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "kube-proxy", "handle": 1}},
        {"set": {"family": "ip", "table": "kube-proxy", "name": "cluster-ips", "type": "ipv4_addr",
                 "handle": 2, "elem": ["172.30.0.10"]}},
        {"map": {"family": "ip", "table": "kube-proxy", "name": "svc-ips", "type": ["ipv4_addr", "inet_proto",
                 "inet_service"], "map": "verdict", "handle": 3,
                 "elem": [[{"concat": ["172.30.0.10", "tcp", 80]}, {"goto": {"target": "svc-web"}}]]}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-prerouting", "handle": 4,
                   "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "svc-web", "handle": 5}},
        {"rule": {"family": "ip", "table": "kube-proxy", "chain": "nat-prerouting", "handle": 6, "expr": [
            {"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}},
                                         {"meta": {"key": "l4proto"}},
                                         {"payload": {"protocol": "th", "field": "dport"}}]},
                      "data": "@svc-ips"}}]}},
        {"rule": {"family": "ip", "table": "kube-proxy", "chain": "svc-web", "handle": 7,
                  "comment": "web", "expr": [{"dnat": {"addr": "10.180.0.1", "port": 8080}}]}},
    ]
}  # fmt: skip


def _entry(key: str, rev: int) -> EtcdEntry:
    fields = {"metadata": {"name": key.rsplit("/", 1)[-1], "labels": {"app": "web"}}, "spec": {"ports": [80]}}
    return EtcdEntry(
        key=key,
        mod_revision=rev,
        create_revision=rev,
        version=1,
        size=100,
        sha256="ab" * 32,
        decoded=Decoded("json", "v1", "Service", "default", "web", "uid-1", fields=fields, labels={"a": "b"}),
    )


def valid_snapshot() -> Snapshot:
    """A small snapshot with every part filled, each from the real parsers."""
    node = NodeState(
        "node-1",
        iptables=parse_iptables_save(kube_proxy_iptables(make_services(2, 2, node_ports=1))),
        nft=parse_nft_json(json.dumps(NFT_JSON)),
        ipsets=parse_ipset_save(
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n"
            "add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\n"
        ),
        ipvs=parse_ipvsadm((DATA / "ipvsadm-Sn.txt").read_text()),
        links=[{"ifname": "eth0", "mtu": 1500, "operstate": "UP", "linkinfo": {"info_kind": "veth"}}],
        addrs=[{"family": "inet", "local": "192.168.0.2", "prefixlen": 24, "ifname": "eth0"}],
        routes=[{"dst": "10.244.1.0/24", "gateway": "192.168.0.3", "dev": "eth0", "table": "main"}],
        errors={"ipvs": "an earlier failure"},
    )
    etcd = EtcdState(
        7, "/registry", {k: _entry(k, i + 2) for i, k in enumerate(["/registry/a", "/registry/b"])}
    )
    return Snapshot("before", 1_700_000_000.0, cluster={"name": "t", "nums": [1, 2.5]}, etcd=etcd,
                    nodes={"node-1": node})  # fmt: skip


VALID = valid_snapshot().to_json()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str, *must: str) -> None:
    assert err.count("\n") == 1, err
    assert err.startswith("k8sstate: error: "), err
    assert "Traceback" not in err
    for m in must:
        assert m in err, (m, err)


def _subprocess(
    *argv: str, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "pytest_k8sstate.cli", *argv], capture_output=True, env=e, timeout=60, **kw
    )


# --------------------------------------------------------------------------------------------------
# snapshots: the cases of the issue fail at load, with the file and the JSON path


def _mutated(path: list[Any], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(VALID)
    node: Any = d
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return d


HOSTILE_FIELDS = [
    (["taken_at"], 1e20, "$.taken_at", "1e+20"),
    (["taken_at"], math.nan, "$.taken_at", "nan"),
    (["taken_at"], 10**400, "$.taken_at", "a 401-digit integer"),
    (["taken_at"], -1, "$.taken_at", "-1"),
    (["etcd", "entries", 0, "mod_revision"], math.inf, '$.etcd.entries["/registry/a"].mod_revision', "inf"),
    (["etcd", "entries", 0, "version"], -5, '$.etcd.entries["/registry/a"].version', "-5"),
    (["etcd", "revision"], 1.5, "$.etcd.revision", "1.5"),
    (["etcd", "entries", 1, "key"], 5, "$.etcd.entries[1].key", "5"),
    (["etcd", "entries", 1, "key"], None, "$.etcd.entries[1].key", "null"),
    (["etcd", "entries", 1, "key"], "/registry/a", '$.etcd.entries["/registry/a"]', "a duplicate"),
    (["etcd", "entries", 0, "decoded", "labels"], {"a": 1}, '"/registry/a"].decoded.labels.a', "1"),
    (["nodes", "node-1", "links", 0, "linkinfo"], "veth", "$.nodes.node-1.links[0].linkinfo", '"veth"'),
    (["nodes", "node-1", "addrs", 0, "prefixlen"], "24", "$.nodes.node-1.addrs[0].prefixlen", '"24"'),
    (["nodes", "node-1", "nft", "tables", 0, "sets", 0, "elements", 0, "key"], [None], "elements[0].key[0]",
     "null"),
    (["nodes", "node-1", "nft", "tables", 0, "chains", 0, "rules", 0, "text"], {}, "rules[0].text",
     "an object"),
    (["nodes", "node-1", "iptables", "tables", "nat", "KUBE-SERVICES", "rules", 0], [1],
     "KUBE-SERVICES.rules[0]", "an array"),
    (["nodes", "node-1", "ipvs", 0, "port"], 70000, "$.nodes.node-1.ipvs[0].port", "70000"),
    (["nodes", "node-1", "errors"], {"nft": ["x"]}, "$.nodes.node-1.errors.nft", "an array"),
    (["cluster", "x"], -math.inf, "$.cluster.x", "-inf"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "where", "shown"), HOSTILE_FIELDS)
def test_a_bad_field_fails_at_load_naming_the_file_and_its_json_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: list[Any], value: Any, where: str, shown: str
) -> None:
    p = tmp_path / "snap.json"
    p.write_text(json.dumps(_mutated(path, value)))  # NaN/Infinity as Python's json writes them
    with pytest.raises(ParseError) as ei:
        Snapshot.load(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p} at $"), msg
    assert where in msg
    assert f"got {shown!r}" in msg
    assert len(msg) < 400
    for cmd in (("show", str(p)), ("diff", str(p), str(p))):
        rc, out, err = _cli(capsys, *cmd)
        assert (rc, out) == (2, "")
        _one_error_line(err, str(p), where)


def test_the_valid_snapshot_loads_shows_and_diffs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "snap.json.gz"
    valid_snapshot().save(p)
    assert Snapshot.load(p) == valid_snapshot()
    rc, out, err = _cli(capsys, "diff", str(p), str(p))
    assert (rc, err) == (0, "")
    assert "no changes" in out


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 100_000])
def test_deeply_nested_json_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], depth: int
) -> None:
    inner = "[" * depth + "]" * depth
    p = tmp_path / "deep.json"
    text = json.dumps(_mutated(["cluster", "y"], "HERE"))
    p.write_text(text.replace('"HERE"', inner))
    with pytest.raises(ParseError, match=f"nested at most {MAX_DEPTH} deep"):
        Snapshot.load(p)
    rc, _, err = _cli(capsys, "show", str(p))
    assert rc == 2
    _one_error_line(err, str(p), "nested at most")
    assert len(err) < 400


def test_deep_free_form_value_inside_an_entry_names_its_path(tmp_path: Path) -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH):
        deep = {"a": deep}
    p = tmp_path / "s.json"
    p.write_text(json.dumps(_mutated(["etcd", "entries", 0, "decoded", "fields"], deep)))
    with pytest.raises(ParseError, match=r'entries\["/registry/a"\]\.decoded\.fields\.a\.a') as ei:
        Snapshot.load(p)
    assert len(str(ei.value)) < 400  # the path is abbreviated in the middle


def test_corrupt_truncated_and_oversized_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = gzip.compress(json.dumps(VALID).encode())
    bad = bytearray(data)
    for i in range(20, 40):
        bad[i] ^= 0xA5
    p = tmp_path / "s.json.gz"
    p.write_bytes(bytes(bad))
    with pytest.raises(ParseError, match=f"^{p}: expected a valid gzip file, got 'corrupt data"):
        Snapshot.load(p)
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match=f"^{p}: expected a complete gzip file"):
        Snapshot.load(p)
    # a gzip bomb: 64 KiB of zeros → stops at the cap, never inflates it all
    monkeypatch.setenv(MAX_INPUT_ENV, "16K")
    p.write_bytes(gzip.compress(b"\0" * (64 << 10)))
    with pytest.raises(
        ConfigError, match=rf"{p} \(decompressed\): larger than the input limit of 16384 bytes"
    ):
        Snapshot.load(p)
    assert gunzip_bounded(gzip.compress(b"a") + gzip.compress(b"b"), "x") == b"ab"  # concatenated members
    with pytest.raises(ParseError):
        gunzip_bounded(b"\x1f\x8b" + os.urandom(64), "x")


def test_huge_integer_literal_is_a_parse_error(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_text(json.dumps(VALID)[:-1] + ', "x": ' + "9" * 5000 + "}")
    with pytest.raises(ParseError, match="numbers of at most 4300 digits"):
        Snapshot.load(p)


# --------------------------------------------------------------------------------------------------
# fuzz: mutated valid snapshots → only ParseError / K8sStateError at load; what loads can be shown and diffed


class _Hang(Exception):
    pass


@pytest.fixture
def alarm() -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise _Hang("a case took more than 20 s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


ALL_PATHS = _paths(VALID)[1:]
HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [None, True, 0, -1, 5, 2**64, 10**400, 1e20, math.nan, math.inf, "", "x", [], {}, [None], {"a": None},
         [[[[[]]]]], {"info_kind": 5}, [1, "a"], "\0\udcff"]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.recursive(st.none() | st.integers() | st.text(max_size=3), lambda c: st.lists(c, max_size=3)
                 | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=8),
)  # fmt: skip


def _apply(tree: dict[str, Any], path: tuple[Any, ...], op: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(tree)
    parent: Any = d
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "rename" and isinstance(parent, dict):
        parent[f"{last}x" if isinstance(value, str) else 5] = parent.pop(last)
    else:
        parent[last] = value
    return d


def _load_and_use(p: Path) -> None:
    """Load ``p`` within 20 s: a K8sStateError, or a snapshot that show / diff take without any error."""
    signal.alarm(20)
    try:
        try:
            s = Snapshot.load(p)
        except K8sStateError:
            return
        other = Snapshot.from_json(VALID)
        s.summary()
        s.diff(other).summary(full=True)
        other.diff(s).to_json(full=True)
        json.dumps(s.to_json())
    finally:
        signal.alarm(0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(ALL_PATHS),
    op=st.sampled_from(["set", "set", "set", "delete", "rename"]),
    value=HOSTILE_VALUES,
)
def test_fuzz_mutated_snapshots(
    tmp_path: Path, alarm: None, path: tuple[Any, ...], op: str, value: Any
) -> None:
    tree = _apply(VALID, path, op, value)
    p = tmp_path / "fuzz.json"
    try:
        p.write_text(json.dumps(tree))
    except (ValueError, UnicodeEncodeError):  # a value JSON cannot hold (lone surrogates): not an input
        return
    _load_and_use(p)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutated_bytes(tmp_path: Path, alarm: None, data: st.DataObject) -> None:
    raw = bytearray(json.dumps(VALID).encode())
    if data.draw(st.booleans()):
        raw = bytearray(gzip.compress(bytes(raw)))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from(b'{}[]",:0-9eE.nNaIx\x00\xff '))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    p = tmp_path / "fuzz.json"
    p.write_bytes(bytes(raw))
    _load_and_use(p)


def test_zlib_error_type_is_not_leaked() -> None:
    with pytest.raises(ParseError) as ei:
        gunzip_bounded(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"\xff" * 32, "f.gz")
    assert not isinstance(ei.value, zlib.error)
    assert str(ei.value).startswith("f.gz: expected")
