"""Assertions and helpers on netfilter state: no change, new chains, rule counts, a service's rules.

Chain patterns are ``fnmatch`` globs (``KUBE-SVC-*``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from pytest_k8sstate.assertions._common import SHORT_LIST, as_list, did_you_mean, fail, nodes_of, short
from pytest_k8sstate.assertions.services import rule_comment
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.state import NodeDiff, Snapshot, StateDiff, node_diff_lines

__all__ = ["assert_new_chains", "assert_no_netfilter_change", "count_rules", "service_rules"]


def _node_diffs(diff: StateDiff, node: str | None) -> dict[str, NodeDiff]:
    if node is None:
        return dict(diff.nodes)
    if node not in diff.nodes:
        near = did_you_mean(node, diff.nodes, cutoff=0.3)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise AssertionError(f"no node {node!r} in the diff (nodes: {', '.join(diff.nodes) or 'none'}){hint}")
    return {node: diff.nodes[node]}


def _netfilter_lines(nd: NodeDiff, ignore_chains: Sequence[str]) -> list[str]:
    return node_diff_lines(nd, netfilter_only=True, ignore_names=ignore_chains)


def assert_no_netfilter_change(
    diff: StateDiff,
    node: str | None = None,
    ignore_chains: Iterable[str] = (),
    *,
    verbose: bool | None = None,
) -> None:
    """No iptables/nftables/ipset/IPVS change on ``node`` (or any node). ``ignore_chains``: chain
    (or set) name globs whose changes don't count."""
    __tracebackhide__ = True
    ign = list(ignore_chains)
    per_node = {n: _netfilter_lines(nd, ign) for n, nd in _node_diffs(diff, node).items()}
    changed = {n: lines for n, lines in per_node.items() if lines}
    if not changed:
        return
    parts = []
    full = []
    for n, lines in changed.items():
        parts.append(f"node {n}: {len(lines)} netfilter change(s):\n" + short(lines))
        full.append(f"node {n}:\n" + "\n".join(f"  {x}" for x in lines))
    raise fail("netfilter changed\n" + "\n".join(parts), "\n".join(full), verbose)


def _added_chains(nd: NodeDiff, table: str | None) -> list[str]:
    out = [c for t, c in nd.chains_added if table is None or t == table]
    for t, c in nd.nft_chains_added:
        if table is None or table == t or table == t.split(" ", 1)[-1]:
            out.append(c)
    return out


def assert_new_chains(
    diff: StateDiff,
    patterns: str | Iterable[str],
    table: str | None = "nat",
    node: str | None = None,
    *,
    verbose: bool | None = None,
) -> dict[str, list[str]]:
    """Each chain glob matches a chain added in ``table`` (iptables table name, nft ``"ip kube-proxy"``
    or ``"kube-proxy"``; None = any) on ``node`` — or on every node of the diff when ``node`` is None.
    Returns node → matched chains."""
    __tracebackhide__ = True
    pats = as_list(patterns)
    if not pats:
        raise ValueError("pass at least one chain pattern")
    nodes = _node_diffs(diff, node)
    if not nodes:
        raise AssertionError("the diff has no node state (were nodes captured?)")
    problems: list[str] = []
    found: dict[str, list[str]] = {}
    for n, nd in nodes.items():
        added = _added_chains(nd, table)
        found[n] = []
        for pat in pats:
            hits = [c for c in added if fnmatchcase(c, pat)]
            found[n].extend(hits)
            if hits:
                continue
            where = f"table {table}" if table else "any table"
            msg = f"node {n}: no new chain in {where} matches {pat!r}"
            other = [f"{t} {c}" for t, c in [*nd.chains_added, *nd.nft_chains_added] if fnmatchcase(c, pat)]
            if other:
                msg += f" (but in: {', '.join(other[:3])}; pass table=)"
            near = did_you_mean(pat, added)
            if near:
                msg += f"; did you mean {' or '.join(near)}?"
            elif added:
                msg += f"; {len(added)} new chain(s): {', '.join(added[:SHORT_LIST])}"
                msg += "..." if len(added) > SHORT_LIST else ""
            else:
                msg += f"; no chain was added in {where}"
            problems.append(msg)
    if problems:
        raise fail("\n".join(problems), diff.summary(full=False, limit=None), verbose)
    return found


def _agree(per_node: dict[str, Any], what: str) -> Any:
    values = list(per_node.values())
    if all(v == values[0] for v in values[1:]):
        return values[0]
    detail = ", ".join(f"{n}: {v if isinstance(v, int) else len(v)}" for n, v in per_node.items())
    raise AssertionError(f"{what} differs between nodes ({detail}); pass node=")


def _count_one(ns: NodeState, chain_pattern: str, table: str | None) -> int:
    n = 0
    if ns.iptables is not None and (table is None or table in ns.iptables.tables):
        for tname, t in ns.iptables.tables.items():
            if table is not None and tname != table:
                continue
            n += sum(c.rule_count() for cname, c in t.chains.items() if fnmatchcase(cname, chain_pattern))
        if table is not None:
            return n
    if ns.nft is not None:
        for fam, tname in ns.nft.omitted:  # left out of the nft part: its rules are in the iptables part
            part = ns.iptables if fam == "ip" else ns.ip6tables
            if table == f"{fam} {tname}" and part is not None and tname in part.tables:
                chains = part.tables[tname].chains.items()
                return sum(c.rule_count() for cname, c in chains if fnmatchcase(cname, chain_pattern))
        for (fam, tname), nt in ns.nft.tables.items():
            if table is not None and table not in (tname, f"{fam} {tname}"):
                continue
            if (
                table is None
                and ns.iptables is not None
                and fam in ("ip", "ip6")
                and tname in ns.iptables.tables
            ):
                continue  # iptables-nft: the same rules, already counted
            n += sum(len(c.rules) for cname, c in nt.chains.items() if fnmatchcase(cname, chain_pattern))
    return n


def count_rules(
    state: Snapshot | NodeState, chain_pattern: str, table: str | None = "nat", node: str | None = None
) -> int:
    """Rules in chains matching ``chain_pattern`` (glob) in ``table`` (iptables table, or nft table name
    such as ``kube-proxy``; None = all). On a multi-node snapshot without ``node`` the count must be the
    same on every node."""
    __tracebackhide__ = True
    per = {n: _count_one(ns, chain_pattern, table) for n, ns in nodes_of(state, node).items()}
    return int(_agree(per, f"count_rules({chain_pattern!r})"))


def _service_re(service: str) -> re.Pattern[str]:
    esc = re.escape(service)
    tail = "" if ":" in service else r"(?::\S+)?"
    return re.compile(rf"(?:^|\s){esc}{tail}(?=$|\s)")


def _service_rules_one(ns: NodeState, service: str) -> list[str]:
    out: list[str] = []
    rx = _service_re(service)
    if ns.iptables is not None:
        for tname, t in ns.iptables.tables.items():
            for cname, c in t.chains.items():
                for r in c.rules:
                    if service not in r.spec:
                        continue
                    com = rule_comment(r)
                    if com is not None and rx.search(com):
                        out.append(f"-t {tname} -A {cname} {r.spec}")
    if ns.nft is not None:
        base, _, pname = service.partition(":")
        marker = f"-{base}/"
        for (fam, tname), nt in ns.nft.tables.items():
            for cname, nc in nt.chains.items():
                if marker in cname and (not pname or cname.endswith(f"/{pname}") or f"/{pname}__" in cname):
                    out.extend(f"{fam} {tname} {cname}: {nr.text}" for nr in nc.rules)
            for sname, s in {**nt.sets, **nt.maps}.items():
                for el in s.elements:
                    val = el.value or ""
                    if (marker in val and (not pname or val.endswith(f"/{pname}"))) or (
                        el.comment and rx.search(el.comment)
                    ):
                        out.append(f"{fam} {tname} @{sname}: {el.text}")
    return out


def service_rules(state: Snapshot | NodeState, service: str, node: str | None = None) -> list[str]:
    """kube-proxy's rules for ``service`` (``ns/name`` or ``ns/name:port``): iptables rules whose comment
    names it (as ``-t TABLE -A CHAIN spec``), nft rules of its chains and its map elements. On a
    multi-node snapshot without ``node`` the rules must be the same on every node."""
    __tracebackhide__ = True
    per = {n: _service_rules_one(ns, service) for n, ns in nodes_of(state, node).items()}
    return list(_agree(per, f"service_rules({service!r})"))
