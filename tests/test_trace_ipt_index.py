"""The tracer's destination index of a large chain and its two memos (trace/ipt_index.py): a chain of the
same text shares one index, a chain whose counters or rules changed gets the index a fresh build gives,
and no memo hides a bad line."""

from __future__ import annotations

import random
import re

import pytest

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.parse.iptables import Chain, parse_iptables_save
from pytest_k8sstate.testing import kube_proxy_iptables, make_services
from pytest_k8sstate.trace import Packet, ipt_index
from pytest_k8sstate.trace.iptables import trace_iptables


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipt_index, "_chains", {})
    monkeypatch.setattr(ipt_index, "_lines", {})


def _svc(text: str) -> Chain:
    return parse_iptables_save(text).tables["nat"].chains["KUBE-SERVICES"]


def _unmemoised(text: str, monkeypatch: pytest.MonkeyPatch) -> ipt_index.Index:
    with monkeypatch.context() as m:
        m.setattr(ipt_index, "_chains", {})
        m.setattr(ipt_index, "_lines", {})
        return ipt_index.chain_index(_svc(text))


def _counters(text: str, rng: random.Random) -> str:
    """Every KUBE-SERVICES line with other counters (what traffic does between two snapshots)."""
    return re.sub(
        r"^(\[\d+:\d+\] )?(-A KUBE-SERVICES )",
        lambda m: f"[{rng.randrange(5)}:{rng.randrange(900)}] {m.group(2)}",
        text,
        flags=re.M,
    )


def test_a_chain_of_the_same_text_shares_the_index_and_still_reads_line_by_line(fresh: None) -> None:
    text = kube_proxy_iptables(make_services(300, 2))
    a, b = _svc(text), _svc(text)  # two nodes, or two snapshots, with the same rules
    ia = ipt_index.chain_index(a)
    ib = ipt_index.chain_index(b)
    assert ib is ia
    assert b.unbuilt_lines() is not None, "the walk builds only the rules it meets"
    assert not b._rules
    assert b.rule_getter() == b.rule


@pytest.mark.parametrize("seed", range(4))
def test_changed_counters_or_rules_give_what_a_fresh_build_gives(
    seed: int, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    base = kube_proxy_iptables(make_services(200, 2))
    ipt_index.chain_index(_svc(base))  # the memos now know every line of it
    texts = [
        _counters(base, rng),
        # another Service set: addresses moved between lines, some lines new, some gone
        kube_proxy_iptables(make_services(150 + 10 * seed, 3)),
        base.replace("-d 10.96.0.20/32", "-d 10.96.0.21/32", 1),
        base.replace("-d 10.96.0.20/32", "! -d 10.96.0.20/32", 1),
    ]
    for text in texts:
        got = ipt_index.chain_index(_svc(text))
        assert got == _unmemoised(text, monkeypatch)
    assert ipt_index.chain_index(_svc(texts[2]))[0].get("10.96.0.21"), "the changed line is indexed anew"


def test_a_memo_never_hides_a_bad_line(fresh: None) -> None:
    text = kube_proxy_iptables(make_services(120, 2))
    pkt = Packet("10.96.0.20", 80, "tcp", local_ips=frozenset({"172.18.0.2"}))
    trace_iptables(parse_iptables_save(text), pkt)  # memos filled from the good text
    line = next(x for x in text.splitlines() if x.startswith("-A KUBE-SERVICES -d ") and "10.96.0.50/" in x)
    bad = text.replace(line, line.replace(" -m tcp", ' -m comment --comment "oops -m tcp', 1), 1)
    with pytest.raises(ParseError, match="closed double quote") as exc:
        trace_iptables(parse_iptables_save(bad), pkt)
    lineno = next(i for i, x in enumerate(bad.splitlines(), 1) if "oops" in x)
    assert f"iptables-save:{lineno}:" in str(exc.value)


def test_the_chain_memo_is_bounded(fresh: None) -> None:
    for n in range(ipt_index.CHAIN_MEMO + 3):
        ipt_index.chain_index(_svc(kube_proxy_iptables(make_services(40 + n, 1))))
    assert len(ipt_index._chains) == ipt_index.CHAIN_MEMO


def test_the_line_memo_is_bounded(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipt_index, "LINE_MEMO", 50)
    a = _svc(kube_proxy_iptables(make_services(120, 1, namespace="one")))
    b = _svc(kube_proxy_iptables(make_services(120, 1, namespace="two")))  # other lines, as many
    ipt_index.chain_index(a)
    held = len(ipt_index._lines)
    assert held > 50
    ipt_index.chain_index(b)  # over the bound: a's lines are forgotten first, then b's are kept
    assert len(ipt_index._lines) == held
