"""Packets vs rules: the split a probe observed against the split the captured rules predict.

:func:`traced_outcomes` traces the probe's packet (its source, the target) through one node's captured
ruleset and names each outcome as a probe names what it saw: the backend's hostname for a DNAT (or direct
ACCEPT) to a pod the probe met, ``refused`` for REJECT, ``timeout`` for DROP.
:func:`assert_traffic_matches_trace` then runs :func:`~pytest_k8sstate.traffic.stats.split_test` and checks
the source address every backend saw against the masquerade the trace predicts, and returns a
:class:`TrafficComparison`: traced vs observed side by side (:meth:`TrafficComparison.table`: backend |
traced share | observed count | expected | p), which it also records (passed or failed) for the test
report (:mod:`pytest_k8sstate.util.evidence`, shown by the plugin's traffic section and ``traffic.txt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.trace import Packet, TraceResult, trace
from pytest_k8sstate.traffic.probe import ProbeResult
from pytest_k8sstate.traffic.stats import DEFAULT_ALPHA, SplitTest, chi2_sf, split_test
from pytest_k8sstate.util import evidence

__all__ = ["TrafficComparison", "assert_traffic_matches_trace", "outcome_name", "traced_outcomes"]

_VERDICT_NAMES = {"REJECT": "refused", "DROP": "timeout"}


def _split_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"probe target {target!r}: expected IP:PORT")
    return host.strip("[]"), int(port)


def outcome_name(dnat: str | None, verdict: str, dst: str, by_ip: Mapping[str, str]) -> str:
    """The probe's name for one traced outcome (``by_ip``: pod IP → hostname of the backends seen)."""
    if verdict in _VERDICT_NAMES:
        return _VERDICT_NAMES[verdict]
    ip = dnat.rpartition(":")[0] if dnat else dst
    if ip in by_ip:
        return by_ip[ip]
    return f"{dnat or dst} (no backend answered from it)"


def traced_outcomes(
    snapshot: Any,
    observed: ProbeResult,
    *,
    node: str,
    src: str | None = None,
    mode: str | None = None,
    affinity: Literal["new", "returning"] = "new",
    first_backend: str | None = None,
) -> tuple[TraceResult, dict[str, float], dict[str, bool]]:
    """Trace ``observed``'s connection through ``node``'s rules in ``snapshot``.

    ``src``: the client's address (default: ``observed.source_ip``); ``mode``: ``iptables`` or ``nftables``
    (default: the snapshot's proxy mode); ``affinity``/``first_backend``: trace a client's follow-up
    connection (session affinity, see :mod:`pytest_k8sstate.trace.affinity`). Returns the trace,
    probability per outcome name and whether each outcome is masqueraded.
    """
    if node not in snapshot.nodes:
        raise ConfigError(
            f"snapshot {snapshot.label!r} has no node {node!r}; it has {', '.join(snapshot.nodes)}"
        )
    state = snapshot.nodes[node]
    mode = mode or str(snapshot.cluster.get("proxy_mode") or "iptables")
    ruleset = state.nft if mode == "nftables" else state.iptables
    if ruleset is None:
        raise ConfigError(f"snapshot {snapshot.label!r} has no {mode} state for node {node}: {state.errors}")
    source = src or observed.source_ip
    if not source:
        raise ConfigError("the probe's source address is unknown; pass src= (the client's IP)")
    dst, dport = _split_target(observed.target)
    # the traced node's addresses (addrtype LOCAL: NodePorts); the client is "on the node" iff its address is
    local = state.local_ips
    packet = Packet(
        dst=dst,
        dport=dport,
        src=source,
        local_ips=local | {"127.0.0.1"},
        affinity=affinity,
        first_backend=first_backend,
    )
    result = trace(ruleset, packet)
    by_ip = {ip: host for host, ip in observed.backend_ips.items()}
    probs: dict[str, float] = {}
    masq: dict[str, bool] = {}
    for o in result.outcomes:
        name = outcome_name(o.dnat, o.verdict, dst, by_ip)
        probs[name] = probs.get(name, 0.0) + float(o.probability)
        masq[name] = masq.get(name, False) or o.masquerade
    return result, probs, masq


@dataclass(frozen=True)
class TrafficComparison:
    """Traced vs observed for one probe: the split test, masquerade traced and sources seen per backend."""

    title: str
    split: SplitTest
    masquerade: Mapping[str, bool]
    sources: Mapping[str, frozenset[str]]
    problems: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def p_value(self) -> float:
        return self.split.p_value

    @property
    def total(self) -> int:
        return self.split.total

    def row_p(self, traced: float, observed: int) -> float:
        """Two-sided p of one outcome's count against its traced share (chi-square, 1 df: this outcome
        vs the rest); 1.0 for a certain outcome, 0.0 for an observed impossible one."""
        n = self.split.total
        if traced <= 1e-9:
            return 0.0 if observed else 1.0
        if traced >= 1 - 1e-9 or n == 0:
            return 1.0 if observed == n else 0.0
        expected = traced * n
        return chi2_sf((observed - expected) ** 2 / (expected * (1 - traced)), 1)

    def table(self) -> list[str]:
        """Traced vs observed, side by side: backend | traced share | observed | expected | p | masquerade
        traced | sources the backend saw; then the chi-square line."""
        t = self.split
        width = max([len("backend"), *(len(r[0]) for r in t.rows)])
        head = f"{'backend':<{width}}  traced share  observed  expected        p  masq  sources seen"
        lines = [head]
        for name, p, expected, observed in t.rows:
            traced_masq = self.masquerade.get(name)
            masq = "-" if traced_masq is None else ("yes" if traced_masq else "no")
            seen = ", ".join(sorted(self.sources.get(name, ()))) or "-"
            mark = "  <- never traced" if name in t.impossible else ""
            lines.append(
                f"{name:<{width}}  {p:12.5f}  {observed:8d}  {expected:8.1f}  {self.row_p(p, observed):7.3g}"
                f"  {masq:<4}  {seen}{mark}"
            )
        lines.append(
            f"N={t.total}  chi2={t.statistic:.2f}  df={t.df}  p={t.p_value:.3g}  "
            f"(fails below alpha={t.alpha:g})"
        )
        return lines

    def render(self) -> str:
        verdict = "matches the trace" if self.passed else "DOES NOT match the trace"
        return "\n".join([f"{self.title}: {verdict}", *(f"  {p}" for p in self.problems), *self.table()])


def assert_traffic_matches_trace(
    snapshot: Any,
    observed: ProbeResult,
    *,
    node: str,
    src: str | None = None,
    mode: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    check_source: bool = True,
    affinity: Literal["new", "returning"] = "new",
    first_backend: str | None = None,
) -> TrafficComparison:
    """The backends (and refusals/timeouts) ``observed`` met are a sample of the traced split, and each
    backend saw the source address the trace predicts.

    Split: chi-square goodness of fit at ``alpha`` (default 1e-4: a fair split fails once in 10⁴ runs;
    N=300 over 3 equal backends has 100 expected each, see :mod:`~pytest_k8sstate.traffic.stats`).
    Source (``check_source``): a backend the trace does not masquerade must see the client's own address;
    a masqueraded one must see one of ``node``'s addresses. ``affinity``/``first_backend``: compare
    against a client's follow-up connection (:func:`traced_outcomes`). The failure message shows traced
    vs observed side by side (:meth:`TrafficComparison.table`). Returns the :class:`TrafficComparison`
    when it passes; either way it is recorded for the test report.
    """
    result, probs, masq = traced_outcomes(
        snapshot, observed, node=node, src=src, mode=mode, affinity=affinity, first_backend=first_backend
    )
    test = split_test(probs, observed.counts(), alpha=alpha)
    problems: list[str] = []
    if not test.passed:
        why = (
            f"observed outcomes the trace never produces: {', '.join(test.impossible)}"
            if test.impossible
            else f"the observed split is unlikely under the traced one (p={test.p_value:.3g} < {alpha:g})"
        )
        problems.append(why)
    source = src or observed.source_ip
    node_ips = snapshot.nodes[node].local_ips
    if check_source:
        for backend, seen in sorted(observed.clients_by_backend().items()):
            if backend not in masq:
                continue
            if masq[backend] and not seen <= node_ips:
                problems.append(
                    f"{backend}: traced masqueraded (source = an address of {node}: "
                    f"{', '.join(sorted(node_ips))}) but it saw {', '.join(sorted(seen))}"
                )
            if not masq[backend] and seen != {source}:
                problems.append(
                    f"{backend}: traced not masqueraded (source {source}) "
                    f"but it saw {', '.join(sorted(seen))}"
                )
    title = (
        f"{observed.target} from {observed.source} (traced on {node}, packet {result.packet.src} -> "
        f"{result.packet.dst}:{result.packet.dport}"
        + (f", {affinity} client after {first_backend}" if first_backend else "")
        + ")"
    )
    sources = {k: frozenset(v) for k, v in observed.clients_by_backend().items()}
    comparison = TrafficComparison(title, test, masq, sources, tuple(problems))
    evidence.record("traffic", title, comparison.render(), passed=comparison.passed)
    if problems:
        raise AssertionError(f"traffic does not match the trace: {comparison.render()}")
    return comparison
