"""The iptables diff parses only the chains whose dump text differs (state/nodediff.py), same result."""

from __future__ import annotations

from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.state.nodediff import diff_nodes

_HEAD = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n:OTHER - [0:0]\n{extra}"
_RULES = (
    '[0:0] -A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/a cluster IP" '
    "-m tcp --dport 80 -j KUBE-SVC-A\n"
    "[{n}:{b}] -A KUBE-SVC-A -j KUBE-SEP-1\n"
    "[7:420] -A OTHER -s 10.0.0.0/8 -j RETURN\n"
    "{more}COMMIT\n"
)


def _node(extra: str = "", n: int = 0, more: str = "") -> NodeState:
    text = _HEAD.format(extra=extra) + _RULES.format(n=n, b=n * 60, more=more)
    return NodeState("n1", iptables=parse_iptables_save(text.encode(), source="test"))


def _built(ns: NodeState) -> set[str]:
    assert ns.iptables is not None
    return {c.name for c in ns.iptables.tables["nat"].chains.values() if c.rules_text() is None}


def test_equal_chains_are_not_parsed_and_changes_are_found() -> None:
    a, b = _node(), _node()
    d = diff_nodes(a, b)
    assert not d.rules_added
    assert not d.rules_removed
    assert _built(a) == _built(b) == set()  # nothing parsed
    # counters only: the chain is parsed (text differs) but no rule changed
    a, b = _node(), _node(n=5)
    d = diff_nodes(a, b)
    assert (d.rules_added, d.rules_removed) == ([], [])
    assert _built(b) == {"KUBE-SVC-A"}
    # a rule added in one chain, a chain added (with its line numbers shifted): only that chain parsed
    a = _node()
    b = _node(extra=":KUBE-SEP-2 - [0:0]\n", more="[0:0] -A KUBE-SVC-A -j KUBE-SEP-2\n")
    d = diff_nodes(a, b)
    assert d.rules_added == [("nat", "KUBE-SVC-A", "-j KUBE-SEP-2")]
    assert d.rules_removed == []
    assert d.chains_added == [("nat", "KUBE-SEP-2")]
    assert "OTHER" not in _built(a) | _built(b)  # (KUBE-SERVICES: read by the service summary)
    # the reverse: removed, including a whole chain's rules
    d = diff_nodes(b, a)
    assert d.rules_removed == [("nat", "KUBE-SVC-A", "-j KUBE-SEP-2")]
    assert d.chains_removed == [("nat", "KUBE-SEP-2")]


def test_a_parsed_chain_compares_by_rules() -> None:
    a, b = _node(), _node()
    assert a.iptables is not None
    _ = a.iptables.tables["nat"].chains["KUBE-SERVICES"].rules  # built: the text is gone
    assert diff_nodes(a, b).rules_added == []
    b2 = _node(more="[0:0] -A KUBE-SVC-A -j KUBE-SEP-2\n")
    assert diff_nodes(a, b2).rules_added == [("nat", "KUBE-SVC-A", "-j KUBE-SEP-2")]
