"""Data-plane assertions: trace a new connection through each node's kube-proxy rules and check where it goes.

``assert_dnat_to`` (DNAT to exactly these endpoints, balanced) and ``assert_masquerade``; the target is a
Service (``ns/name[:port]``, resolved by :mod:`pytest_k8sstate.assertions.services`) or ``IP:PORT``.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from pytest_k8sstate.assertions._common import SHORT_LIST, did_you_mean, fail, nodes_of
from pytest_k8sstate.assertions.services import KUBE_PROXY_NFT, resolve_service
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.gcpause import gc_pause, gc_resume
from pytest_k8sstate.parse.iptables import IptablesRuleset
from pytest_k8sstate.parse.nft import NftRuleset
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.trace import Packet, TraceResult, parse_hostport, trace

__all__ = ["assert_dnat_to", "assert_masquerade", "local_ips"]


def local_ips(ns: NodeState) -> frozenset[str]:
    """The node's own IPv4 addresses, for ``addrtype LOCAL`` / ``fib daddr type local``."""
    return ns.local_ips


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

    Returns a description of the target, node → trace result, and each node's packet paths as text.
    The callers pause the cyclic GC first thing (:func:`~pytest_k8sstate.parse.gcpause.gc_pause`): a
    collection that a snapshot's many objects made due (a full one over a large session's heap takes
    0.1–0.5 s with a few 2,000-Service snapshots) would otherwise land inside the assertion that
    allocates first after it."""
    if (service is None) == (dst is None):
        raise ValueError("pass exactly one of service='ns/name[:port]' or dst='IP:PORT'")
    if service is not None:
        vip = resolve_service(state, service, proto, node)
        ip, port = vip.ip, vip.port
        what = f"service {vip.port_id} ({ip}:{port}/{proto})"
    else:
        assert dst is not None
        ip, port = parse_hostport(dst, what="dst")
        what = f"{ip}:{port}/{proto}"
    results: dict[str, TraceResult] = {}
    traces: list[str] = []
    for name, ns in nodes_of(state, node).items():
        pkt_kwargs: dict[str, Any] = {"local_ips": local_ips(ns)}
        if src is not None:
            pkt_kwargs["src"] = src
        rs = _ruleset(ns)
        extra: dict[str, Any] = {}
        if isinstance(rs, IptablesRuleset):  # -m set needs the sets; IPVS mode when virtual servers exist
            extra = {"ipsets": ns.ipsets, "ipvs": ns.ipvs or None}
        res = trace(rs, Packet(ip, port, proto, **pkt_kwargs), **extra)  # type: ignore[arg-type]
        results[name] = res
        traces.append(f"node {name}:\n{_trace_text(res)}")
    return what, results, traces


def _fail_traced(head: str, problems: list[str], traces: list[str], verbose: bool | None) -> AssertionError:
    """The failure: ``head`` and one line per problem; verbose: each node's packet paths."""
    return fail(head + "\n" + "\n".join(problems), "\n".join(traces), verbose, "the packet paths")


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
    was = gc_pause()  # first, before anything is allocated (see _trace_each_node)
    try:
        return _dnat_to(state, service, dst, endpoints, node, balanced, proto, src, verbose)
    finally:
        gc_resume(was)


def _dnat_to(
    state: Snapshot | NodeState,
    service: str | None,
    dst: str | None,
    endpoints: Iterable[str],
    node: str | None,
    balanced: bool,
    proto: str,
    src: str | None,
    verbose: bool | None,
) -> dict[str, TraceResult]:
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
            near = [n for e in missing for n in did_you_mean(e, actual, n=1)]
            if near:
                problems[-1] += f"\n  did you mean {' or '.join(near)}?"
    if problems:
        exp = ", ".join(expected) or "no DNAT"
        raise _fail_traced(f"{what} expected DNAT to {exp}", problems, traces, verbose)
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
    was = gc_pause()  # first, before anything is allocated (see _trace_each_node)
    try:
        return _masquerade(state, dst, src, node, expected, service, proto, verbose)
    finally:
        gc_resume(was)


def _masquerade(
    state: Snapshot | NodeState,
    dst: str | None,
    src: str | None,
    node: str | None,
    expected: bool,
    service: str | None,
    proto: str,
    verbose: bool | None,
) -> dict[str, TraceResult]:
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
        src_txt = src or "an outside client"  # Packet.src "" (203.0.113.10 or 2001:db8::10)
        raise _fail_traced(f"{what} from {src_txt}: expected {verb}", problems, traces, verbose)
    return results
