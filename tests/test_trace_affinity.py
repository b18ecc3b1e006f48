"""Session affinity (``-m recent``) for a first and a returning connection, on rules in the shape kube-proxy
(iptables mode) writes for ``sessionAffinity: ClientIP`` Services — as written, and as the real
iptables-save prints them back from a test netns."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from fractions import Fraction

import pytest

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.node import netns
from pytest_k8sstate.parse.iptables import IptablesRuleset, Match, Opt, parse_iptables_save
from pytest_k8sstate.testing import sep_chain, svc_chain
from pytest_k8sstate.trace import Packet, trace
from pytest_k8sstate.trace.affinity import is_sticky, trace_affinity
from pytest_k8sstate.trace.ipsets import CannotEvaluate
from pytest_k8sstate.trace.recent import match_recent

VIP = "172.30.0.45"
PORT = 80
EPS = ("10.180.0.3:80", "10.180.1.4:80", "10.180.2.5:80")
PORT_ID = "ns5/svc5:p80"
# kube-proxy's %0.10f probabilities for 3 endpoints: 1/3 then 1/2
P = [Fraction("0.3333333333"), Fraction("0.5000000000")]
FIRST = {
    EPS[0]: P[0],
    EPS[1]: (1 - P[0]) * P[1],
    EPS[2]: (1 - P[0]) * (1 - P[1]),
}


def affinity_rules(
    *,
    set_lists: bool = True,
    check_jumps: dict[int, int] | None = None,
    timeout: int = 10800,
) -> str:
    """A ClientIP Service as kube-proxy writes it: per endpoint an ``--rcheck`` rule at the top of the
    service chain, then the statistic rules; each endpoint chain ``--set``s its list on the DNAT rule.
    ``check_jumps``: endpoint i's rcheck rule jumps to endpoint j's chain (a broken ruleset);
    ``set_lists=False``: the endpoint chains record nothing (also broken)."""
    svc = svc_chain(PORT_ID, "tcp")
    seps = [sep_chain(PORT_ID, "tcp", ep) for ep in EPS]
    jumps = check_jumps or {}
    nat = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        f":{svc} - [0:0]",
        *(f":{s} - [0:0]" for s in seps),
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        f'-A KUBE-SERVICES -m comment --comment "{PORT_ID} cluster IP" -m tcp -p tcp -d {VIP} --dport {PORT} '
        f"-j {svc}",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE',
        f'-A {svc} -m comment --comment "{PORT_ID} cluster IP" -m tcp -p tcp -d {VIP} --dport {PORT} '
        "! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
    ]
    for i, ep in enumerate(EPS):
        j = jumps.get(i, i)
        nat.append(
            f'-A {svc} -m comment --comment "{PORT_ID} -> {ep}" -m recent --name {seps[i]} --rcheck '
            f"--seconds {timeout} --reap -j {seps[j]}"
        )
    for i, ep in enumerate(EPS):
        stat = f"-m statistic --mode random --probability {float(P[i]):.10f} " if i < len(P) else ""
        nat.append(f'-A {svc} -m comment --comment "{PORT_ID} -> {ep}" {stat}-j {seps[i]}')
    for i, ep in enumerate(EPS):
        ip = ep.rpartition(":")[0]
        nat.append(f"-A {seps[i]} -m comment --comment {PORT_ID} -s {ip} -j KUBE-MARK-MASQ")
        rec = f"-m recent --name {seps[i]} --set " if set_lists else ""
        nat.append(
            f"-A {seps[i]} -m comment --comment {PORT_ID} {rec}-m tcp -p tcp -j DNAT --to-destination {ep}"
        )
    nat.append("COMMIT")
    return "\n".join(nat) + "\n"


RULES = parse_iptables_save(affinity_rules(), source="affinity rules")


def test_first_connection_ignores_rcheck() -> None:
    res = trace(RULES, Packet(VIP, PORT))
    assert res.endpoints == FIRST
    assert all(o.masquerade for o in res.outcomes)  # from outside 10.0.0.0/8: KUBE-MARK-MASQ


@pytest.mark.parametrize("first", EPS)
def test_returning_client_lands_on_its_first_backend(first: str) -> None:
    res = trace(RULES, Packet(VIP, PORT, affinity="returning", first_backend=first))
    assert res.endpoints == {first: 1}
    assert [o.masquerade for o in res.outcomes] == [True]
    # the follow-up took the rcheck rule, not a statistic rule
    svc = svc_chain(PORT_ID, "tcp")
    assert any(step.startswith(f"nat/{svc}#") for step in res.path_examples[0])
    assert res.notes == (f"returning client whose first connection went to {first}",)


def test_trace_affinity_every_case() -> None:
    cases = trace_affinity(RULES, Packet(VIP, PORT, src="10.244.9.9"))
    assert {k: c.first_probability for k, c in cases.items()} == FIRST
    assert is_sticky(cases)
    for first, case in cases.items():
        assert case.returning.endpoints == {first: 1}
        assert not any(o.masquerade for o in case.returning.outcomes)  # a pod client: no masquerade


def test_returning_averaged_over_first_backends() -> None:
    res = trace(RULES, Packet(VIP, PORT, affinity="returning"))
    assert res.endpoints == FIRST
    assert res.notes == ("returning client: averaged over the first connection's outcomes",)


def test_broken_affinity_is_not_sticky() -> None:
    # endpoint chains that never --set: a returning client is balanced anew
    unset = parse_iptables_save(affinity_rules(set_lists=False))
    cases = trace_affinity(unset, Packet(VIP, PORT))
    assert not is_sticky(cases)
    assert cases[EPS[0]].returning.endpoints == FIRST
    # endpoint 0's rcheck rule jumps to endpoint 2's chain
    crossed = parse_iptables_save(affinity_rules(check_jumps={0: 2}))
    cases = trace_affinity(crossed, Packet(VIP, PORT))
    assert not is_sticky(cases)
    assert cases[EPS[0]].returning.endpoints == {EPS[2]: 1}
    assert cases[EPS[1]].returning.endpoints == {EPS[1]: 1}


def test_first_backend_errors() -> None:
    with pytest.raises(
        TraceError, match=r"first_backend 10\.9\.9\.9:80: .* never DNATed there \(its backends: "
    ):
        trace(RULES, Packet(VIP, PORT, affinity="returning", first_backend="10.9.9.9:80"))
    with pytest.raises(TraceError, match="only meaningful with affinity='returning'"):
        trace(RULES, Packet(VIP, PORT, first_backend=EPS[0]))


def test_hitcount_and_statistic_combination_are_named() -> None:
    text = affinity_rules().replace("--rcheck --seconds 10800", "--rcheck --hitcount 2 --seconds 10800", 1)
    with pytest.raises(TraceError, match=r"at line \d+: cannot evaluate -m recent --hitcount 2"):
        trace(parse_iptables_save(text), Packet(VIP, PORT))
    sep0 = sep_chain(PORT_ID, "tcp", EPS[0])
    text = affinity_rules().replace(
        f"-m recent --name {sep0} --set -m tcp",
        f"-m statistic --mode random --probability 0.5 -m recent --name {sep0} --set -m tcp",
    )
    with pytest.raises(TraceError, match="--set/--remove after -m statistic in one rule"):
        trace(parse_iptables_save(text), Packet(VIP, PORT))


def _m(*opts: Opt) -> Match:
    return Match("recent", opts)


def test_recent_options() -> None:
    held = frozenset({("L", "10.0.0.1"), ("D", "10.96.0.1")})
    # --rsource is the default; --mask applies to the stored address
    assert match_recent(_m(Opt("--name", ("L",)), Opt("--rcheck")), "10.0.0.1", "x", held) == (True, None)
    assert match_recent(_m(Opt("--name", ("L",)), Opt("--rcheck", (), True)), "10.0.0.1", "x", held) == (
        False,
        None,
    )
    assert match_recent(_m(Opt("--name", ("L",)), Opt("--update")), "10.0.0.2", "x", held) == (False, None)
    masked = _m(Opt("--name", ("L",)), Opt("--rcheck"), Opt("--mask", ("255.255.255.0",)))
    assert match_recent(masked, "10.0.0.77", "x", frozenset({("L", "10.0.0.0")})) == (True, None)
    assert match_recent(
        _m(Opt("--name", ("D",)), Opt("--rcheck"), Opt("--rdest")), "1.1.1.1", "10.96.0.1", held
    )[0]
    hit, after = match_recent(_m(Opt("--name", ("L",)), Opt("--remove")), "10.0.0.1", "x", held)
    assert hit
    assert after == frozenset({("D", "10.96.0.1")})
    hit, after = match_recent(_m(Opt("--set")), "10.0.0.5", "x", frozenset())
    assert hit
    assert after == frozenset({("DEFAULT", "10.0.0.5")})
    v6 = _m(Opt("--name", ("L",)), Opt("--set"), Opt("--mask", ("ffff:ffff:ffff:ffff::",)))
    assert match_recent(v6, "fd00::1:2", "x", frozenset())[1] == frozenset({("L", "fd00::")})
    with pytest.raises(CannotEvaluate, match=r"--mask 255\.255\.255\.255 for an IPv6 packet"):
        match_recent(_m(Opt("--set"), Opt("--mask", ("255.255.255.255",))), "fd00::1", "x", frozenset())
    with pytest.raises(CannotEvaluate, match="both --set and --rcheck"):
        match_recent(_m(Opt("--set"), Opt("--rcheck")), "10.0.0.1", "x", frozenset())
    with pytest.raises(CannotEvaluate, match="option --frobnicate"):
        match_recent(_m(Opt("--set"), Opt("--frobnicate")), "10.0.0.1", "x", frozenset())


def test_set_happens_even_when_a_later_match_fails() -> None:
    """The kernel evaluates matches in order: a --set before a failing match still records the client."""
    text = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -m recent --name SEEN --rcheck -j DNAT --to-destination 10.1.1.1:80
-A PREROUTING -m recent --name SEEN --set -m tcp -p tcp --dport 9999 -j ACCEPT
-A PREROUTING -j DNAT --to-destination 10.2.2.2:80
COMMIT
"""
    rs = parse_iptables_save(text)
    assert trace(rs, Packet("10.96.0.1", 80)).endpoints == {"10.2.2.2:80": 1}
    back = trace(rs, Packet("10.96.0.1", 80, affinity="returning", first_backend="10.2.2.2:80"))
    assert back.endpoints == {"10.1.1.1:80": 1}


# ---- as iptables-save prints it -------------------------------------------------------------------


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates a network namespace and loads rules with iptables-restore"
    for prog in ("ip", "iptables-restore", "iptables-save"):
        if shutil.which(prog) is None:
            return f"{prog} not installed (apt-get install iptables iproute2)"
    return None


@pytest.fixture(scope="module")
def saved() -> Iterator[IptablesRuleset]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with netns.temporary("aff") as ns:
        res = ns.run(["iptables-restore"], input=affinity_rules().encode(), timeout=60, check=False)
        if res.returncode != 0:
            pytest.fail(f"iptables-restore refused the rules: {res.stderr.decode(errors='replace')}")
        text = ns.run(["iptables-save", "-t", "nat"], timeout=60).text
        yield parse_iptables_save(text, source="iptables-save")


@pytest.mark.needs_root
def test_saved_spelling(saved: IptablesRuleset) -> None:
    svc = saved.chain("nat", svc_chain(PORT_ID, "tcp"))
    assert svc is not None
    specs = [r.spec for r in svc.rules if "recent" in r.spec]
    # iptables-save's own spelling: command first, then --name, --mask and --rsource
    assert all("--rcheck --seconds 10800 --reap --name KUBE-SEP-" in s for s in specs), specs
    assert all("--mask 255.255.255.255 --rsource" in s for s in specs), specs
    cases = trace_affinity(saved, Packet(VIP, PORT))
    assert {k: c.first_probability for k, c in cases.items()} != {}
    assert is_sticky(cases)
    assert sum(c.first_probability for c in cases.values()) == 1
    assert set(cases) == set(EPS)


def test_no_backend_is_not_sticky() -> None:
    assert trace_affinity(RULES, Packet("172.30.0.99", PORT)) == {}
    assert not is_sticky({})


def test_recent_with_unknown_interfaces_and_established() -> None:
    """-m recent on main's interface branching: the rcheck rule guarded by ``-i eth0`` is followed both
    ways, each branch keeps its own recent entries, and the weights still sum to 1."""
    svc = svc_chain(PORT_ID, "tcp")
    text = affinity_rules().replace(
        f'-A {svc} -m comment --comment "{PORT_ID} -> {EPS[0]}" -m recent',
        f'-A {svc} -i eth0 -m comment --comment "{PORT_ID} -> {EPS[0]}" -m recent',
    )
    rs = parse_iptables_save(text)
    res = trace(rs, Packet(VIP, PORT, affinity="returning", first_backend=EPS[0]))
    assert sum(res.shares) == 1
    by = {(o.dnat, o.assumes) for o in res.outcomes}
    # arriving on eth0 the rcheck rule sends the client back to EPS[0]; otherwise it is balanced anew
    assert (EPS[0], ("-i eth0",)) in by
    assert {d for d, a in by if a == ("! -i eth0",)} == set(EPS)
    assert res.endpoints[EPS[0]] == Fraction(1, 2) + Fraction(1, 2) * FIRST[EPS[0]]
    # ESTABLISHED: the follow-up connection's later packets keep its NAT
    est = trace(RULES, Packet(VIP, PORT, affinity="returning", first_backend=EPS[1], ctstate="ESTABLISHED"))
    assert est.endpoints == {EPS[1]: 1}
    assert est.to_json()["notes"] == [f"returning client whose first connection went to {EPS[1]}"]
    assert "notes" not in trace(RULES, Packet(VIP, PORT)).to_json()


def test_nft_refuses_first_backend_only() -> None:
    from pytest_k8sstate.parse.nft import parse_nft_json

    rs = parse_nft_json({"nftables": [{"table": {"family": "ip", "name": "kube-proxy"}}]}, source="empty")
    assert trace(rs, Packet(VIP, PORT, affinity="returning")).endpoints == {None: 1}
    with pytest.raises(TraceError, match=r"first_backend='10\.180\.0\.3:80' is traced through iptables"):
        trace(rs, Packet(VIP, PORT, affinity="returning", first_backend=EPS[0]))
