"""Assertion helpers over snapshots and diffs: pure functions, no pytest import.

Each ``assert_*`` raises :class:`AssertionError` with a short message — what was expected, what was
found, the nearest candidates (``did you mean /registry/endpointslices/default/web-x7k2p?``) — and,
when verbose, the full diff (or the packet paths). ``verbose=None`` (the default) follows the global
verbosity that the pytest plugin sets from ``-v`` via :func:`set_verbosity` (initially from the
``K8SSTATE_VERBOSITY`` environment variable, default 0).

Key patterns are globs (``*``/``?`` within a ``/`` segment, ``**`` across); a pattern without a leading
``/`` is relative to ``/registry/`` (see :mod:`pytest_k8sstate.state.model`). Chain patterns are ``fnmatch``
globs (``KUBE-SVC-*``). Positive key assertions look at every change; ``exact=True`` and
``assert_no_new_keys()`` without patterns ignore the diff's ignore patterns (leases, events, …).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from fractions import Fraction
from typing import Any

from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.iptables import IptablesRuleset, Rule
from pytest_k8sstate.parse.nft import NftRuleset
from pytest_k8sstate.state.model import KeyChange, NodeDiff, Snapshot, StateDiff, key_matches, node_diff_lines
from pytest_k8sstate.trace import Packet, TraceResult, parse_hostport, trace

__all__ = [
    "ServiceVip",
    "assert_dnat_to",
    "assert_masquerade",
    "assert_modified_keys",
    "assert_new_chains",
    "assert_new_keys",
    "assert_no_netfilter_change",
    "assert_no_new_keys",
    "assert_removed_keys",
    "count_rules",
    "find_services",
    "get_verbosity",
    "local_ips",
    "service_rules",
    "set_verbosity",
]

_verbosity = 0
try:
    _verbosity = int(os.environ.get("K8SSTATE_VERBOSITY", "0"))
except ValueError:
    _verbosity = 0

SHORT_LIST = 5
"""How many items a short (non-verbose) message lists."""


def set_verbosity(level: int) -> None:
    """Set the global verbosity (the plugin passes pytest's ``-v`` count); ≥ 1 appends full diffs."""
    global _verbosity
    _verbosity = int(level)


def get_verbosity() -> int:
    return _verbosity


def _verbose(verbose: bool | None) -> bool:
    return _verbosity >= 1 if verbose is None else verbose


def _fail(
    message: str, full: str | None, verbose: bool | None, what: str = "the full diff"
) -> AssertionError:
    if full:
        if _verbose(verbose):
            message += "\n\n" + full
        else:
            message += f"\n(run pytest -v for {what})"
    return AssertionError(message)


def _as_list(patterns: str | Iterable[str] | None) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def _short(items: Sequence[str], n: int = SHORT_LIST) -> str:
    shown = [f"  {x}" for x in items[:n]]
    if len(items) > n:
        shown.append(f"  ... and {len(items) - n} more")
    return "\n".join(shown)


def _did_you_mean(word: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """Up to ``n`` candidates close to ``word``: the best, and others nearly as close (within 0.1)."""
    cands = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(word, cands, n=n, cutoff=cutoff)
    if not close:
        return []
    ratios = {c: difflib.SequenceMatcher(None, word, c).ratio() for c in close}
    best = max(ratios.values())
    return [c for c in close if ratios[c] >= best - 0.1]


def _abs_pattern(p: str) -> str:
    return p if p.startswith("/") else "/registry/" + p


# --------------------------------------------------------------------------------------------------
# etcd key assertions

_CHANGE_WORD = {"added": "new", "removed": "removed", "modified": "modified"}


def _changes(diff: StateDiff, change: str, include_ignored: bool) -> list[KeyChange]:
    return {"added": diff.etcd_added, "removed": diff.etcd_removed, "modified": diff.etcd_modified}[change](
        include_ignored
    )


def _describe(c: KeyChange) -> str:
    return f"{c.key} ({c.kind})" if c.kind else c.key


def _assert_keys(
    diff: StateDiff,
    change: str,
    patterns: str | Iterable[str],
    exact: bool,
    verbose: bool | None,
    fields: Iterable[str] | None = None,
) -> list[KeyChange]:
    pats = _as_list(patterns)
    if not pats:
        raise ValueError("pass at least one key pattern")
    items = _changes(diff, change, include_ignored=True)
    word = _CHANGE_WORD[change]
    problems: list[str] = []
    matched: list[KeyChange] = []
    for pat in pats:
        hits = [c for c in items if key_matches(pat, c.key)]
        if not hits:
            problems.append(_no_match_message(diff, change, pat))
            continue
        if fields is not None:
            wanted = list(fields)
            for c in hits:
                missing = [f for f in wanted if not _field_changed(f, c.changed_fields)]
                if missing:
                    got = (
                        "not decodable" if c.changed_fields is None else ", ".join(c.changed_fields) or "none"
                    )
                    problems.append(
                        f"{c.key} was modified but not in field(s) {', '.join(missing)} (changed: {got})"
                    )
        matched.extend(hits)
    if exact:
        extra = [
            c
            for c in _changes(diff, change, include_ignored=False)
            if not any(key_matches(p, c.key) for p in pats)
        ]
        if extra:
            problems.append(
                f"{len(extra)} unexpected {word} etcd key(s) (exact=True):\n"
                + _short([_describe(c) for c in extra])
            )
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n" + "\n".join(problems)
        raise _fail(head, diff.summary(full=True, limit=None), verbose)
    return matched


def _field_changed(field: str, changed: Sequence[str] | None) -> bool:
    if not changed:
        return False
    return any(
        c == field or c.startswith((field + ".", field + "[")) or field.startswith(c + ".") for c in changed
    )


def _no_match_message(diff: StateDiff, change: str, pattern: str) -> str:
    word = _CHANGE_WORD[change]
    items = _changes(diff, change, include_ignored=True)
    msg = f"no {word} etcd key matches {pattern!r}"
    # the key may be in the diff under another change type
    for other in ("added", "removed", "modified"):
        if other == change:
            continue
        hits = [c.key for c in _changes(diff, other, include_ignored=True) if key_matches(pattern, c.key)]
        if hits:
            msg += f"; it was {other}, not {change}: {hits[0]}" + (
                f" (+{len(hits) - 1})" if len(hits) > 1 else ""
            )
            break
    near = _did_you_mean(_abs_pattern(pattern), [c.key for c in items])
    if near:
        msg += f"\ndid you mean {' or '.join(near)}?"
    if items:
        visible = _changes(diff, change, include_ignored=False)
        msg += f"\n{len(visible)} {word} key(s)" + (
            ":\n" + _short([_describe(c) for c in visible]) if visible else ""
        )
    else:
        msg += f"\n(no key was {change} at all)"
    return msg


def assert_new_keys(
    diff: StateDiff, patterns: str | Iterable[str], exact: bool = False, *, verbose: bool | None = None
) -> list[KeyChange]:
    """Every pattern matches at least one added key; ``exact``: and no other (non-ignored) key was added.
    Returns the matched changes."""
    __tracebackhide__ = True
    return _assert_keys(diff, "added", patterns, exact, verbose)


def assert_removed_keys(
    diff: StateDiff, patterns: str | Iterable[str], exact: bool = False, *, verbose: bool | None = None
) -> list[KeyChange]:
    __tracebackhide__ = True
    return _assert_keys(diff, "removed", patterns, exact, verbose)


def assert_modified_keys(
    diff: StateDiff,
    patterns: str | Iterable[str],
    exact: bool = False,
    *,
    fields: Iterable[str] | None = None,
    verbose: bool | None = None,
) -> list[KeyChange]:
    """Every pattern matches a modified key; ``fields``: dotted paths (``spec.replicas``) that must be
    among (or contain) each matched key's ``changed_fields``."""
    __tracebackhide__ = True
    return _assert_keys(diff, "modified", patterns, exact, verbose, fields=fields)


def assert_no_new_keys(
    diff: StateDiff, patterns: str | Iterable[str] | None = None, *, verbose: bool | None = None
) -> None:
    """No key was added (``patterns=None``: no non-ignored key; else none matching the patterns)."""
    __tracebackhide__ = True
    pats = _as_list(patterns)
    if pats:
        bad = [c for c in diff.etcd_added(include_ignored=True) if any(key_matches(p, c.key) for p in pats)]
        what = f"matching {', '.join(map(repr, pats))}"
    else:
        bad = diff.etcd_added()
        what = "(outside the ignore patterns)"
    if bad:
        raise _fail(
            f"{len(bad)} new etcd key(s) {what}:\n" + _short([_describe(c) for c in bad]),
            diff.summary(full=True, limit=None),
            verbose,
        )


# --------------------------------------------------------------------------------------------------
# node / netfilter assertions on diffs


def _node_diffs(diff: StateDiff, node: str | None) -> dict[str, NodeDiff]:
    if node is None:
        return dict(diff.nodes)
    if node not in diff.nodes:
        near = _did_you_mean(node, diff.nodes, cutoff=0.3)
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
        parts.append(f"node {n}: {len(lines)} netfilter change(s):\n" + _short(lines))
        full.append(f"node {n}:\n" + "\n".join(f"  {x}" for x in lines))
    raise _fail("netfilter changed\n" + "\n".join(parts), "\n".join(full), verbose)


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
    pats = _as_list(patterns)
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
            near = _did_you_mean(pat, added)
            if near:
                msg += f"; did you mean {' or '.join(near)}?"
            elif added:
                msg += f"; {len(added)} new chain(s): {', '.join(added[:SHORT_LIST])}"
                msg += "..." if len(added) > SHORT_LIST else ""
            else:
                msg += f"; no chain was added in {where}"
            problems.append(msg)
    if problems:
        raise _fail("\n".join(problems), diff.summary(full=False, limit=None), verbose)
    return found


# --------------------------------------------------------------------------------------------------
# state helpers: nodes, rulesets, local IPs, services


def _nodes_of(state: Snapshot | NodeState, node: str | None) -> dict[str, NodeState]:
    if isinstance(state, Snapshot):
        if node is None:
            if not state.nodes:
                raise AssertionError(f"snapshot {state.label!r} has no node state (were nodes captured?)")
            return dict(state.nodes)
        if node not in state.nodes:
            near = _did_you_mean(node, state.nodes, cutoff=0.3)
            hint = f"; did you mean {' or '.join(near)}?" if near else ""
            known = ", ".join(state.nodes) or "none"
            raise AssertionError(f"no node {node!r} in snapshot {state.label!r} (nodes: {known}){hint}")
        return {node: state.nodes[node]}
    if node is not None and node != state.node:
        raise AssertionError(f"node state is for {state.node!r}, not {node!r}")
    return {state.node: state}


def local_ips(ns: NodeState) -> frozenset[str]:
    """The node's own IPv4 addresses, for ``addrtype LOCAL`` / ``fib daddr type local``."""
    return ns.local_ips


KUBE_PROXY_NFT = ("ip", "kube-proxy")


def _ruleset(ns: NodeState) -> IptablesRuleset | NftRuleset:
    """The ruleset kube-proxy programs on this node: nft ``ip kube-proxy`` table, else iptables."""
    if ns.nft is not None and ns.nft.table(*KUBE_PROXY_NFT) is not None:
        return ns.nft
    if ns.iptables is not None:
        return ns.iptables
    if ns.nft is not None:
        return ns.nft
    errs = "; ".join(f"{k}: {v}" for k, v in (ns.errors or {}).items())
    raise AssertionError(
        f"node {ns.node}: neither iptables nor nftables rules were captured ({errs or 'no errors'})"
    )


@dataclass(frozen=True)
class ServiceVip:
    """One service port: ``port_id`` is kube-proxy's ``ns/name:portname`` (``ns/name`` if unnamed)."""

    port_id: str
    ip: str
    port: int
    proto: str
    has_endpoints: bool = True

    @property
    def service(self) -> str:
        return self.port_id.split(":", 1)[0]

    @property
    def port_name(self) -> str:
        return self.port_id.split(":", 1)[1] if ":" in self.port_id else ""


_CLUSTER_IP_SUFFIX = " cluster IP"
_NO_EP_SUFFIX = " has no endpoints"
_NFT_CHAIN_RE = re.compile(r"^(?:goto|jump) service-[A-Z0-9]+-([^/]+)/([^/]+)/([a-z]+)/(.*)$")


def _comment(rule: Rule) -> str | None:
    for m in rule.matches:
        if m.module == "comment":
            o = m.get("--comment")
            if o is not None:
                return o.value
    return None


def _rule_vip(rule: Rule, port_id: str, has_endpoints: bool) -> ServiceVip | None:
    d = rule.basic("-d")
    p = rule.basic("-p")
    if d is None or p is None or d.value is None or p.value is None:
        return None
    dport = None
    for m in rule.matches:
        o = m.get("--dport")
        if o is not None and o.value is not None and o.value.isdigit():
            dport = int(o.value)
    if dport is None:
        return None
    ip = d.value.removesuffix("/32")
    return ServiceVip(port_id, ip, dport, p.value, has_endpoints)


def _iptables_services(rs: IptablesRuleset) -> tuple[ServiceVip, ...]:
    """Service ports from kube-proxy's KUBE-SERVICES comments (cached on the ruleset)."""
    cached = rs.cache.get(_CACHE_KEY)
    if cached is None:
        cached = rs.cache[_CACHE_KEY] = tuple(_scan_iptables_services(rs))
    return cached


_CACHE_KEY = "pytest_k8sstate.assertions.dataplane.services"


def _scan_iptables_services(rs: IptablesRuleset) -> Iterator[ServiceVip]:
    for table, suffix, has_eps in (("nat", _CLUSTER_IP_SUFFIX, True), ("filter", _NO_EP_SUFFIX, False)):
        chain = rs.chain(table, "KUBE-SERVICES")
        if chain is None:
            continue
        for rule in chain.rules:
            if suffix.strip() not in rule.spec:
                continue
            c = _comment(rule)
            if c is None or not c.endswith(suffix):
                continue
            if table == "filter" and rule.basic("-d") is None:
                continue  # NodePort reject rules
            vip = _rule_vip(rule, c[: -len(suffix)], has_eps)
            if vip is not None:
                yield vip


def _nft_services(rs: NftRuleset) -> Iterator[ServiceVip]:
    t = rs.table(*KUBE_PROXY_NFT)
    if t is None:
        return
    for set_name, has_eps in (("service-ips", True), ("no-endpoint-services", False)):
        s = t.lookup_set(set_name)
        if s is None:
            continue
        for el in s.elements:
            if len(el.key) != 3 or not el.key[2].isdigit():
                continue
            ip, proto, port = el.key
            port_id: str | None = None
            if has_eps and el.value is not None:
                m = _NFT_CHAIN_RE.match(el.value)
                if m:
                    ns_, name, _proto, pname = m.groups()
                    port_id = f"{ns_}/{name}" + (f":{pname}" if pname else "")
            elif el.comment:
                port_id = el.comment
            if port_id is not None:
                yield ServiceVip(port_id, ip, int(port), proto, has_eps)


def _etcd_services(snap: Snapshot) -> Iterator[ServiceVip]:
    """ClusterIPs from Service objects whose decoded fields are named (JSON storage)."""
    if snap.etcd is None:
        return
    for key, entry in snap.etcd.entries.items():
        if not key.startswith("/registry/services/specs/"):
            continue
        f = entry.decoded.fields
        spec = f.get("spec") if isinstance(f, Mapping) else None
        if not isinstance(spec, Mapping):
            continue
        ip = spec.get("clusterIP")
        if not isinstance(ip, str) or ip in ("", "None"):
            continue
        ns_, name = entry.decoded.namespace, entry.decoded.name
        for port in spec.get("ports") or []:
            if not isinstance(port, Mapping) or not isinstance(port.get("port"), int):
                continue
            pname = port.get("name") or ""
            yield ServiceVip(
                f"{ns_}/{name}" + (f":{pname}" if pname else ""),
                ip,
                port["port"],
                str(port.get("protocol") or "TCP").lower(),
            )


def find_services(state: Snapshot | NodeState, node: str | None = None) -> list[ServiceVip]:
    """Every service port found in etcd (JSON-stored Services) and in kube-proxy's rules."""
    found: dict[tuple[str, str], ServiceVip] = {}
    if isinstance(state, Snapshot):
        for v in _etcd_services(state):
            found.setdefault((v.port_id, v.proto), v)
    for ns in _nodes_of(state, node).values():
        for rs in (ns.iptables, ns.nft):
            if isinstance(rs, IptablesRuleset):
                vips: Iterable[ServiceVip] = _iptables_services(rs)
            elif isinstance(rs, NftRuleset):
                vips = _nft_services(rs)
            else:
                continue
            for v in vips:
                prev = found.get((v.port_id, v.proto))
                if prev is None or (prev.has_endpoints is False and v.has_endpoints):
                    found[(v.port_id, v.proto)] = v
    return list(found.values())


def _resolve_service(state: Snapshot | NodeState, service: str, proto: str, node: str | None) -> ServiceVip:
    if "/" not in service:
        raise ValueError(f"service={service!r}: expected 'namespace/name' or 'namespace/name:port'")
    base, _, port = service.partition(":")
    vips = find_services(state, node)
    same = [v for v in vips if v.service == base and v.proto == proto]
    if port:
        same = [v for v in same if v.port_name == port or str(v.port) == port]
    if len(same) == 1:
        return same[0]
    if len(same) > 1:
        opts = ", ".join(f"{v.port_id} ({v.port}/{v.proto})" for v in same)
        raise AssertionError(
            f"service {service!r} has several ports: {opts}; pass service='{same[0].port_id}'"
        )
    others = [v for v in vips if v.service == base]
    if others:
        opts = ", ".join(f"{v.port_id} ({v.port}/{v.proto})" for v in others)
        raise AssertionError(
            f"service {service!r} has no {proto} port {port or ''}: it has {opts}".replace("  ", " ")
        )
    names = sorted({v.service for v in vips} | {v.port_id for v in vips})
    near = _did_you_mean(service, names)
    msg = f"service {service!r} not found in etcd or kube-proxy rules"
    if near:
        msg += f"; did you mean {' or '.join(near)}?"
    elif names:
        msg += f" ({len(names)} known, e.g. {', '.join(names[:SHORT_LIST])})"
    else:
        msg += " (no kube-proxy service rules captured)"
    raise AssertionError(msg)


def _fmt_prob(p: Fraction) -> str:
    return f"{float(p):.4g}"


def _trace_text(result: TraceResult) -> str:
    lines = []
    for o, path in zip(result.outcomes, result.path_examples or [()] * len(result.outcomes), strict=False):
        lines.append(
            f"  p={_fmt_prob(o.probability)} dnat={o.dnat or '-'} "
            f"masquerade={'yes' if o.masquerade else 'no'} verdict={o.verdict}"
        )
        if path:
            lines.append("    via " + " → ".join(path))
    return "\n".join(lines)


def _endpoint_matches(expected: str, actual: str) -> bool:
    if ":" in expected:
        return expected == actual
    return actual.rpartition(":")[0] == expected


def _trace_each_node(
    state: Snapshot | NodeState,
    service: str | None,
    dst: str | None,
    proto: str,
    node: str | None,
    src: str | None,
) -> tuple[str, dict[str, TraceResult], list[str]]:
    """Resolve ``service`` or ``dst`` to IP:port and trace a new connection on every node (or ``node``).

    Returns a description of the target, node → trace result, and each node's packet paths as text."""
    if (service is None) == (dst is None):
        raise ValueError("pass exactly one of service='ns/name[:port]' or dst='IP:PORT'")
    if service is not None:
        vip = _resolve_service(state, service, proto, node)
        ip, port = vip.ip, vip.port
        what = f"service {vip.port_id} ({ip}:{port}/{proto})"
    else:
        assert dst is not None
        ip, port = parse_hostport(dst, what="dst")
        what = f"{ip}:{port}/{proto}"
    results: dict[str, TraceResult] = {}
    traces: list[str] = []
    for name, ns in _nodes_of(state, node).items():
        pkt_kwargs: dict[str, Any] = {"local_ips": local_ips(ns)}
        if src is not None:
            pkt_kwargs["src"] = src
        res = trace(_ruleset(ns), Packet(ip, port, proto, **pkt_kwargs))  # type: ignore[arg-type]
        results[name] = res
        traces.append(f"node {name}:\n{_trace_text(res)}")
    return what, results, traces


def assert_dnat_to(
    state: Snapshot | NodeState,
    service: str | None = None,
    *,
    dst: str | None = None,
    endpoints: Iterable[str],
    node: str | None = None,
    balanced: bool = True,
    proto: str = "tcp",
    src: str | None = None,
    verbose: bool | None = None,
) -> dict[str, TraceResult]:
    """A new connection to ``service`` (``ns/name[:port]``, port name or number) or ``dst`` (``IP:PORT``)
    is DNATed to exactly ``endpoints`` (``IP:PORT``, or ``IP`` for any port) on every node (or ``node``);
    ``balanced``: with equal probabilities (±1e-6). ``endpoints=[]`` asserts that no DNAT happens.
    Returns node → trace result."""
    __tracebackhide__ = True
    expected = list(endpoints)
    what, results, traces = _trace_each_node(state, service, dst, proto, node, src)
    problems: list[str] = []
    for name, res in results.items():
        eps = res.endpoints
        actual = {k: v for k, v in eps.items() if k is not None}
        missing = [e for e in expected if not any(_endpoint_matches(e, a) for a in actual)]
        extra = [a for a in actual if not any(_endpoint_matches(e, a) for e in expected)]
        issues: list[str] = []
        if missing:
            issues.append(f"missing {', '.join(missing)}")
        if extra:
            issues.append(f"unexpected {', '.join(extra)}")
        undnat = eps.get(None, Fraction(0))
        if expected and undnat > 0:
            verdicts = sorted({o.verdict for o in res.outcomes if o.dnat is None})
            issues.append(f"p={_fmt_prob(undnat)} of connections not DNATed ({'/'.join(verdicts)})")
        if balanced and len(actual) > 1 and not missing and not extra:
            ps = list(actual.values())
            if max(ps) - min(ps) > Fraction(1, 10**6):
                issues.append(
                    "unbalanced: " + ", ".join(f"{k} p={_fmt_prob(v)}" for k, v in sorted(actual.items()))
                )
        if issues:
            got = ", ".join(f"{k} (p={_fmt_prob(v)})" for k, v in sorted(actual.items())) or "no DNAT"
            problems.append(f"node {name}: {'; '.join(issues)}\n  DNAT: {got}")
            near = [n for e in missing for n in _did_you_mean(e, actual, n=1)]
            if near:
                problems[-1] += f"\n  did you mean {' or '.join(near)}?"
    if problems:
        exp = ", ".join(expected) or "no DNAT"
        raise _fail(
            f"{what} expected DNAT to {exp}\n" + "\n".join(problems),
            "\n".join(traces),
            verbose,
            "the packet paths",
        )
    return results


def assert_masquerade(
    state: Snapshot | NodeState,
    dst: str | None = None,
    src: str | None = None,
    node: str | None = None,
    expected: bool = True,
    *,
    service: str | None = None,
    proto: str = "tcp",
    verbose: bool | None = None,
) -> dict[str, TraceResult]:
    """Every outcome of a new connection from ``src`` (default an outside client) to ``dst`` (``IP:PORT``)
    or ``service`` is masqueraded (``expected=True``) / not masqueraded, on every node (or ``node``)."""
    __tracebackhide__ = True
    what, results, traces = _trace_each_node(state, service, dst, proto, node, src)
    problems: list[str] = []
    for name, res in results.items():
        wrong = [o for o in res.outcomes if o.masquerade != expected]
        if wrong:
            p = sum((o.probability for o in wrong), Fraction(0))
            desc = ", ".join(f"{o.dnat or 'no DNAT'} ({o.verdict})" for o in wrong[:SHORT_LIST])
            problems.append(f"node {name}: p={_fmt_prob(p)} {'not ' if expected else ''}masqueraded: {desc}")
    if problems:
        verb = "masqueraded" if expected else "not masqueraded"
        src_txt = src or Packet.src  # the default outside client
        raise _fail(
            f"{what} from {src_txt}: expected {verb}\n" + "\n".join(problems),
            "\n".join(traces),
            verbose,
            "the packet paths",
        )
    return results


# --------------------------------------------------------------------------------------------------
# counting / listing helpers


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
    per = {n: _count_one(ns, chain_pattern, table) for n, ns in _nodes_of(state, node).items()}
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
                    com = _comment(r)
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
    per = {n: _service_rules_one(ns, service) for n, ns in _nodes_of(state, node).items()}
    return list(_agree(per, f"service_rules({service!r})"))
