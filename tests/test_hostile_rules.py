"""Large, deep and hostile rule inputs: a documented error (ParseError/TraceError) or an answer, in bounded
time — never a RecursionError, a hang or a stray ValueError/TypeError (issue 14).

The dumps here are generated in the test (FAKE INPUT where the kernel would refuse them, named so). Each
case runs under ``signal.alarm``: a hang guard with a generous bound, not a timing assertion.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_k8sstate.errors import MAX_ERROR_LINE, ParseError, TraceError
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.parse.nft import MAX_NESTING, NftRuleset, parse_nft_json
from pytest_k8sstate.parse.numbers import parse_port, parse_probability
from pytest_k8sstate.testing import kube_proxy_iptables, make_services
from pytest_k8sstate.trace import EXACT_BITS, Packet, parse_hostport
from pytest_k8sstate.trace.iptables import trace_iptables
from pytest_k8sstate.trace.nft import trace_nft

GUARD_S = 60


class _Hang(Exception):
    pass


@contextmanager
def hang_guard(seconds: int = GUARD_S) -> Iterator[None]:
    def _raise(signum: int, frame: object) -> None:
        raise _Hang(f"still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- iptables: valid but large


def test_service_with_1500_endpoints_traces_evenly() -> None:
    svcs = make_services(2, 1500)
    rs = parse_iptables_save(kube_proxy_iptables(svcs, saved=True))
    with hang_guard():
        r = trace_iptables(rs, Packet(svcs[0].cluster_ip, 80))
    eps = r.endpoints
    assert len(eps) == 1500
    assert set(eps) == set(svcs[0].endpoints)
    assert sum(o.probability for o in r.outcomes) == 1  # exactly, also past EXACT_BITS
    assert all(abs(p - Fraction(1, 1500)) < Fraction(1, 10**6) for p in eps.values())
    # the first endpoints' probabilities are still exact (no rounding before EXACT_BITS)
    svc_rules = rs.tables["nat"].chains[svcs[0].svc_chain].rules

    def prob(k: int) -> Fraction:
        o = svc_rules[k].matches[-1].get("--probability")
        assert o is not None
        return parse_probability(o.value or "")

    p0, p1 = prob(1), prob(2)
    assert eps[svcs[0].endpoints[0]] == p0
    assert eps[svcs[0].endpoints[1]] == (1 - p0) * p1
    assert max(p.denominator.bit_length() for p in eps.values()) <= 2 * EXACT_BITS


def test_1500_jumps_to_an_empty_chain() -> None:
    text = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:EMPTY - [0:0]\n"
        + "-A PREROUTING -j EMPTY\n" * 1500
        + "-A PREROUTING -d 10.0.0.1/32 -j DNAT --to-destination 10.1.1.1:80\nCOMMIT\n"
    )
    with hang_guard():
        r = trace_iptables(parse_iptables_save(text), Packet("10.0.0.1", 80))
    assert r.endpoints == {"10.1.1.1:80": 1}


def test_jump_loop_with_statistic_forks_is_a_clear_error() -> None:
    # FAKE INPUT: the kernel refuses chain loops. Each level forks: without loop detection this is 2^64 paths.
    text = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n-A PREROUTING -j A\n"
        "-A A -m statistic --mode random --probability 0.5 -j B\n-A A -j B\n-A B -j A\nCOMMIT\n"
    )
    with hang_guard(), pytest.raises(TraceError, match=r"jump loop A -> B -> A in table nat at line 8"):
        trace_iptables(parse_iptables_save(text), Packet("10.0.0.1", 80))


@pytest.mark.parametrize(
    "tail",
    [
        "\n" * 20000,
        "# comment\n" * 20000,
    ],
)
def test_blank_lines_after_the_last_block_parse_in_linear_time(tail: str) -> None:
    text = kube_proxy_iptables(make_services(3, 2)) + tail
    with hang_guard(10):
        rs = parse_iptables_save(text)
    assert rs.rule_count() > 0


def test_16000_declared_chains() -> None:
    text = (
        "*filter\n"
        + "".join(f":C{i} - [0:0]\n" for i in range(16000))
        + "".join(f"-A C{i} -j ACCEPT\n" for i in range(0, 16000, 2))
        + "COMMIT\n"
    )
    with hang_guard(10):
        rs = parse_iptables_save(text)
    assert len(rs.tables["filter"].chains) == 16000
    assert rs.rule_count() == 8000


# ---------------------------------------------------------------- iptables: malformed


def _big_chain(extra: str) -> str:
    rules = "".join(
        f"-A KUBE-SERVICES -d 10.96.0.{i}/32 -p tcp -m tcp --dport 80 -j ACCEPT\n" for i in range(40)
    )
    head = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\n"
    return head + extra + rules + "COMMIT\n"


def test_unicode_digit_in_an_address_is_a_parse_error_naming_the_line() -> None:
    rs = parse_iptables_save(_big_chain("-A KUBE-SERVICES -d \u00b2.0.0.1/32 -j DROP\n"))
    with pytest.raises(ParseError, match=r"iptables-save:5: expected an ASCII value after -d"):
        trace_iptables(rs, Packet("10.96.0.3", 80))


@pytest.mark.parametrize("port", ["+80", " 80", "8_0", "\u0668\u0660", "99999"])
def test_ports_are_ascii_decimal(port: str) -> None:
    rs = parse_iptables_save(_big_chain(f'-A KUBE-SERVICES -p tcp -m tcp --dport "{port}" -j DROP\n'))
    with pytest.raises(TraceError, match="cannot read port"):
        trace_iptables(rs, Packet("10.96.0.3", 80))
    assert parse_port(port) is None
    with pytest.raises(ParseError, match="IPv4:PORT"):
        parse_hostport(f"1.2.3.4:{port}")


@pytest.mark.parametrize(
    ("prob", "why"),
    [
        ("1e-30000000", "exponent"),
        ("1" + "0" * 100, "digits"),
        ("1.5", "outside"),
        ("0x1", "decimal"),
        ("\u0660.5", "decimal"),
    ],
)
def test_bad_probabilities_fail_fast(prob: str, why: str) -> None:
    text = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n"
        f"-A PREROUTING -m statistic --mode random --probability {prob} -j ACCEPT\nCOMMIT\n"
    )
    with hang_guard(5), pytest.raises(TraceError, match=rf"at line 3: cannot read probability: .*{why}"):
        trace_iptables(parse_iptables_save(text), Packet("10.0.0.1", 80))


def test_probability_parsing_is_exact() -> None:
    assert parse_probability("0.3333333333") == Fraction(3333333333, 10**10)
    assert parse_probability("5e-1") == Fraction(1, 2)
    assert parse_probability("1") == 1
    assert parse_probability("0.") == 0


def test_ipv4_packet_dnat_to_ipv6_is_an_error() -> None:
    text = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DNAT --to-destination [fd00::2]:8080\nCOMMIT\n"
    with pytest.raises(TraceError, match=r"DNAT of an IPv4 packet to '\[fd00::2\]:8080'"):
        trace_iptables(parse_iptables_save(text), Packet("10.0.0.1", 80))


def test_error_lines_are_bounded() -> None:
    name = "X" * 10_000_000
    text = f"*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j {name}\nCOMMIT\n"
    with pytest.raises(TraceError) as ei:
        trace_iptables(parse_iptables_save(text), Packet("10.0.0.1", 80))
    msg = str(ei.value)
    assert len(msg) <= MAX_ERROR_LINE
    assert "(source: iptables-save)" in msg
    assert "chars]" in msg
    with pytest.raises(ParseError) as pe:
        parse_iptables_save(f"*nat\n-A {name} -j ACCEPT\nCOMMIT\n")
    assert len(str(pe.value)) <= MAX_ERROR_LINE


_LINES = st.sampled_from(
    [
        "*nat",
        "*filter",
        "COMMIT",
        ":PREROUTING ACCEPT [0:0]",
        ":A - [0:0]",
        ":B - [1:2]",
        "-A PREROUTING -j A",
        "-A A -j B",
        "-A B -j A",
        "-A A -m statistic --mode random --probability 0.5 -j A",
        "-A PREROUTING -d 10.0.0.1/32 -j DNAT --to-destination 10.1.1.1:80",
        "-A PREROUTING -d \u00b9.0.0.1 -j DROP",
        "-A A -p tcp --dport 8_0 -j DROP",
        "-A A -m statistic --mode random --probability 1e-999999 -j DROP",
        "-A A -j RETURN",
        "-A B -g A",
        "[5:6] -A A -m mark --mark 0x4000/0x4000 -j ACCEPT",
        "",
        "# x",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, max_size=60), st.integers(0, 3))
def test_fuzz_iptables_only_documented_errors(lines: list[str], repeat: int) -> None:
    text = "\n".join(lines * (1 + repeat * 20)) + "\n"
    with hang_guard(30):
        try:
            rs = parse_iptables_save(text)
            rs.validate()
            r = trace_iptables(rs, Packet("10.0.0.1", 80))
        except (ParseError, TraceError) as exc:
            msg = str(exc)
        else:
            msg = ""
    if msg:
        assert all(len(line) <= MAX_ERROR_LINE for line in msg.split("\n"))
        return
    assert sum(o.probability for o in r.outcomes) == 1


# ---------------------------------------------------------------- nft


def _nft(rules: list[list[Any]], sets: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    objs: list[dict[str, Any]] = [
        {"table": {"family": "ip", "name": "kube-proxy"}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "pre", "type": "nat", "hook": "prerouting",
                   "prio": -100, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "c2"}},
    ]  # fmt: skip
    for s in sets or []:
        objs.append({"map": {"family": "ip", "table": "kube-proxy", **s}})
    for expr in rules:
        objs.append({"rule": {"family": "ip", "table": "kube-proxy", "chain": "pre", "expr": expr}})
    return {"nftables": objs}


def test_nft_map_type_nested_deep_is_a_parse_error() -> None:
    deep: Any = "ipv4_addr"
    for _ in range(500):
        deep = {"x": deep}
    obj = _nft([], [{"name": "m", "type": "ipv4_addr", "map": deep}])
    with pytest.raises(
        ParseError, match=rf"nested at most {MAX_NESTING} levels .* at nftables\[3\]\.map\.map"
    ):
        parse_nft_json(obj)


def test_nft_rule_nested_deep_is_a_parse_error() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ParseError, match=r"at nftables\[3\]\.rule\.expr"):
        parse_nft_json(_nft([[{"match": {"op": "==", "left": deep, "right": 1}}]]))


@pytest.mark.parametrize("offset", ["x", 0.5, -1, True])
def test_nft_numgen_bad_offset_names_the_rule(offset: Any) -> None:
    ng = {"numgen": {"mode": "random", "mod": 2, "offset": offset}}
    for expr in (
        {"vmap": {"key": ng, "data": {"set": [[0, {"accept": None}]]}}},
        {"dnat": {"addr": {"map": {"key": ng, "data": {"set": [[0, "10.0.0.1"], [1, "10.0.0.2"]]}}}}},
    ):
        rs = parse_nft_json(_nft([[expr]]), source="nodes/a.nft.json")
        with pytest.raises(TraceError, match=r"cannot evaluate rule .*numgen .*source: nodes/a\.nft\.json"):
            trace_nft(rs, Packet("10.0.0.1", 80))


def test_nft_numgen_huge_modulus_is_arithmetic() -> None:
    mod = 10**12
    vmap = {
        "vmap": {
            "key": {"numgen": {"mode": "random", "mod": mod}},
            "data": {
                "set": [[0, {"drop": None}], [7, {"jump": {"target": "c2"}}], [mod + 3, {"drop": None}]]
            },
        }
    }
    rs = parse_nft_json(_nft([[vmap], [{"accept": None}]]))
    with hang_guard(5):
        r = trace_nft(rs, Packet("10.0.0.1", 80))
    got = {o.verdict: o.probability for o in r.outcomes}
    assert got == {"DROP": Fraction(1, mod), "ACCEPT": 1 - Fraction(1, mod)}
    dnat = {"dnat": {"addr": {"map": {"key": {"numgen": {"mode": "random", "mod": mod}},
                                      "data": {"set": [[0, "10.0.0.1"]]}}}}}  # fmt: skip
    with hang_guard(5), pytest.raises(TraceError, match="numgen value 1 has no dnat target"):
        trace_nft(parse_nft_json(_nft([[dnat]])), Packet("10.0.0.1", 80))


def test_nft_jump_loop_is_a_clear_error() -> None:
    # FAKE INPUT: nft refuses loops. Each level forks in two: without loop detection, 2^64 paths.
    jump = {"jump": {"target": "c2"}}
    fork = {
        "vmap": {"key": {"numgen": {"mode": "random", "mod": 2}}, "data": {"set": [[0, jump], [1, jump]]}}
    }
    obj = _nft([[{"jump": {"target": "c2"}}]])
    obj["nftables"].append({"rule": {"family": "ip", "table": "kube-proxy", "chain": "c2", "expr": [fork]}})
    with hang_guard(10), pytest.raises(TraceError, match=r"jump loop c2 -> c2 .*source: x\.json"):
        trace_nft(parse_nft_json(obj, source="x.json"), Packet("10.0.0.1", 80))


def _to_json_with(path: str, value: Any) -> dict[str, Any]:
    rs = parse_nft_json(
        _nft(
            [[{"accept": None}]],
            [{"name": "m", "type": "ipv4_addr", "map": "verdict", "elem": [["10.0.0.1", {"accept": None}]]}],
        )
    )
    d = rs.to_json()
    obj: Any = d
    *parts, last = path.split(".")
    for p in parts:
        obj = obj[int(p)] if p.isdigit() else obj[p]
    obj[int(last) if last.isdigit() else last] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("tables.0.maps.0.elements.0.key", [None], r"tables\[0\]\.maps\[0\]\.elements\[0\]\.key"),
        ("tables.0.chains.0.rules.0.text", {}, r"tables\[0\]\.chains\[0\]\.rules\[0\]\.text"),
        ("tables.0.chains.0.prio", True, r"tables\[0\]\.chains\[0\]\.prio"),
        ("tables.0.name", 5, r"tables\[0\]\.name"),
        ("source", None, r"top level\.source"),
    ],
)
def test_nft_from_json_rejects_bad_fields_with_their_path(path: str, value: Any, named: str) -> None:
    NftRuleset.from_json(_to_json_with("source", "ok"))  # the untouched document loads
    with pytest.raises(ParseError, match=rf"snap\.json: expected .* at {named}"):
        NftRuleset.from_json(_to_json_with(path, value), source="snap.json")


_NUMS: st.SearchStrategy[Any] = st.one_of(
    st.integers(-3, 5),
    st.integers(10**6, 10**15),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["x", "1", None, True, [], {}]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mod=_NUMS,
    offset=_NUMS,
    keys=st.lists(_NUMS, max_size=6),
    depth=st.integers(0, 200),
    dnat=st.booleans(),
)
def test_fuzz_nft_numgen_and_nesting_only_documented_errors(
    mod: Any, offset: Any, keys: list[Any], depth: int, dnat: bool
) -> None:
    ng = {"numgen": {"mode": "random", "mod": mod, "offset": offset}}
    nested: Any = "10.0.0.9"
    for _ in range(depth):
        nested = {"concat": [nested]}
    if dnat:
        expr: dict[str, Any] = {
            "dnat": {"addr": {"map": {"key": ng, "data": {"set": [[k, nested] for k in keys]}}}}
        }
    else:
        expr = {"vmap": {"key": ng, "data": {"set": [[k, {"jump": {"target": "c2"}}] for k in keys]}}}
    with hang_guard(10):
        try:
            rs = parse_nft_json(_nft([[expr], [{"accept": None}]]), source="fuzz.json")
            r = trace_nft(rs, Packet("10.0.0.1", 80))
        except (ParseError, TraceError) as exc:
            msg = str(exc)
        else:
            msg = ""
    if msg:
        assert "fuzz.json" in msg
        assert len(msg) <= MAX_ERROR_LINE
        return
    assert sum(o.probability for o in r.outcomes) == 1
