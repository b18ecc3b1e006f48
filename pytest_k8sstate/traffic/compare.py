"""Packets vs rules: the split a probe observed against the split the captured rules predict.

:func:`traced_outcomes` traces the probe's packet (its source, the target) through one node's captured
ruleset and names each outcome as a probe names what it saw: the backend's hostname for a DNAT (or direct
ACCEPT) to a pod the probe met, ``refused`` for REJECT, ``timeout`` for DROP.
:func:`assert_traffic_matches_trace` then runs :func:`~pytest_k8sstate.traffic.stats.split_test` and checks
the source address every backend saw against the masquerade the trace predicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.trace import Packet, TraceResult, trace
from pytest_k8sstate.traffic.probe import ProbeResult
from pytest_k8sstate.traffic.stats import DEFAULT_ALPHA, SplitTest, split_test

__all__ = ["assert_traffic_matches_trace", "outcome_name", "traced_outcomes"]

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
    snapshot: Any, observed: ProbeResult, *, node: str, src: str | None = None, mode: str | None = None
) -> tuple[TraceResult, dict[str, float], dict[str, bool]]:
    """Trace ``observed``'s connection through ``node``'s rules in ``snapshot``.

    ``src``: the client's address (default: ``observed.source_ip``); ``mode``: ``iptables`` or ``nftables``
    (default: the snapshot's proxy mode). Returns the trace, probability per outcome name and whether
    each outcome is masqueraded.
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
    local = state.local_ips if observed.source.startswith(("node/", "local")) else frozenset()
    result = trace(ruleset, Packet(dst=dst, dport=dport, src=source, local_ips=local | {"127.0.0.1"}))
    by_ip = {ip: host for host, ip in observed.backend_ips.items()}
    probs: dict[str, float] = {}
    masq: dict[str, bool] = {}
    for o in result.outcomes:
        name = outcome_name(o.dnat, o.verdict, dst, by_ip)
        probs[name] = probs.get(name, 0.0) + float(o.probability)
        masq[name] = masq.get(name, False) or o.masquerade
    return result, probs, masq


def assert_traffic_matches_trace(
    snapshot: Any,
    observed: ProbeResult,
    *,
    node: str,
    src: str | None = None,
    mode: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    check_source: bool = True,
) -> SplitTest:
    """The backends (and refusals/timeouts) ``observed`` met are a sample of the traced split, and each
    backend saw the source address the trace predicts.

    Split: chi-square goodness of fit at ``alpha`` (default 1e-4: a fair split fails once in 10⁴ runs;
    N=300 over 3 equal backends has 100 expected each, see :mod:`~pytest_k8sstate.traffic.stats`).
    Source (``check_source``): a backend the trace does not masquerade must see the client's own address;
    a masqueraded one must see one of ``node``'s addresses. The failure message shows traced vs observed
    side by side. Returns the :class:`~pytest_k8sstate.traffic.stats.SplitTest` when it passes.
    """
    result, probs, masq = traced_outcomes(snapshot, observed, node=node, src=src, mode=mode)
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
    if problems:
        lines = [
            f"traffic does not match the trace: {observed.target} from {observed.source} "
            f"(traced on {node}, packet {result.packet.src} -> {result.packet.dst}:{result.packet.dport})",
            *(f"  {p}" for p in problems),
            *(f"  {line}" for line in test.table()),
            "  masquerade traced: "
            + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in sorted(masq.items())),
            "  sources seen: "
            + ", ".join(
                f"{k}: {', '.join(sorted(v))}" for k, v in sorted(observed.clients_by_backend().items())
            ),
        ]
        raise AssertionError("\n".join(lines))
    return test
