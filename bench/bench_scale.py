#!/usr/bin/env python3
"""Benchmark: scaling of the iptables tracer and parser on large inputs (prints medians and ratios).

    python bench/bench_scale.py [--endpoints 10000 --lines 100000 --runs 3]

* trace: packets to a Service with ``--endpoints`` endpoints (kube-proxy's statistic chain) and to
  one with a tenth of them, in the same run (CPU time). The first packet walks the rules (the ratio
  of the two is ideally 10: linear in endpoints); later packets **from other source addresses and
  ports** reuse that walk when the rules cannot tell them apart (trace/ipt_classes.py): their median
  is compared with the issue-2 goal of 5 ms per packet. A packet the rules *can* tell apart is walked
  again: the first from a pod address (``-s`` pod CIDR rule), and each from an endpoint's own address
  (its ``-s ep/32`` hairpin rule) — reported as "new class";
* parse: ``parse_iptables_save`` of three ``--lines``-line dumps (kube-proxy rules; the same with
  its rules followed by blank lines; chain declarations with one rule each) and of the same shapes
  at a tenth of the size; the ratio is ideally 10 (linear in lines).

No root needed (generated text, no kernel). The issue-2 goals (parse ≤ 0.5 × iptables-save on 110k
rules, ≤ 5 ms per packet for normal Services) are measured by ``bench/bench_iptables.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import median_seconds

from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.testing import kube_proxy_iptables, make_services
from pytest_k8sstate.trace import Packet, TraceResult
from pytest_k8sstate.trace.iptables import trace_iptables

_median = median_seconds


GOAL_MS = 5.0


def _cpu(fn: Callable[[], object]) -> float:
    """CPU seconds of one call (the machine is shared: wall time measures the others too)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _trace_times(endpoints: int, runs: int) -> dict[str, float]:
    """CPU seconds: the first packet, the median of later ones from other outside sources (runs × 3), the
    first pod-sourced packet, the median of pod-sourced packets from other pod addresses (not endpoints),
    the median of hairpin packets (each from another endpoint's address: a new class each)."""
    svcs = make_services(2, endpoints)
    rs = parse_iptables_save(kube_proxy_iptables(svcs))
    rs.validate()
    vip = svcs[0].cluster_ip
    eps = [e.rpartition(":")[0] for e in svcs[0].endpoints]
    out: dict[str, float] = {}
    res: list[TraceResult] = []
    out["first"] = _cpu(lambda: res.append(trace_iptables(rs, Packet(vip, 80))))
    assert len(res[0].outcomes) == endpoints, res[0].outcomes[:3]
    later = [
        _cpu(partial(trace_iptables, rs, Packet(vip, 80, src=f"198.51.100.{i % 250 + 1}", sport=20000 + i)))
        for i in range(3 * runs)
    ]
    out["later"] = statistics.median(later)
    out["pod first"] = _cpu(partial(trace_iptables, rs, Packet(vip, 80, src="10.244.255.1", sport=1000)))
    pods = [
        _cpu(partial(trace_iptables, rs, Packet(vip, 80, src=f"10.244.255.{i + 2}", sport=1001 + i)))
        for i in range(3 * runs)
    ]
    out["pod later"] = statistics.median(pods)
    hair = [
        _cpu(partial(trace_iptables, rs, Packet(vip, 80, src=eps[i * 7 % len(eps)]))) for i in range(runs)
    ]
    out["hairpin"] = statistics.median(hair)
    return out


def _dumps(lines: int) -> dict[str, str]:
    n_svc = max(1, lines * 10 // 64)  # kube-proxy: ~6.4 lines per 1-endpoint Service
    kube = kube_proxy_iptables(make_services(n_svc, 1))
    head = kube_proxy_iptables(make_services(max(1, n_svc // 10), 1))  # a tenth: rules, then blank lines
    half = lines // 2
    chains = (
        "*filter\n"
        + "".join(f":C{i} - [0:0]\n" for i in range(half))
        + "".join(f"-A C{i} -j ACCEPT\n" for i in range(half))
        + "COMMIT\n"
    )
    return {
        "kube-proxy rules": kube,
        "rules + blank tail": head + "\n" * max(0, lines - head.count("\n")),
        "chain declarations": chains,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoints", type=int, default=10_000)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3, help="median of this many runs per case")
    a = ap.parse_args(argv)

    small_ep = max(1, a.endpoints // 10)
    rows = {n: _trace_times(n, a.runs) for n in (small_ep, a.endpoints)}
    print(f"trace: CPU ms per packet; goal {GOAL_MS:g} ms (ratio = time / goal)")
    for n, t in rows.items():
        first, later = t["first"] * 1000, t["later"] * 1000
        print(
            f"trace {n:>6} endpoints  first packet {first:8.1f} ms  later packets (other sources) median "
            f"{later:7.3f} ms  ratio {later / GOAL_MS:6.3f}"
        )
        print(
            f"      {'':>6}   new class: first pod source {t['pod first'] * 1000:8.1f} ms, other pod sources "
            f"median {t['pod later'] * 1000:7.3f} ms, hairpin (endpoint's own address) median "
            f"{t['hairpin'] * 1000:8.1f} ms"
        )
    t_small, t_big = rows[small_ep]["first"], rows[a.endpoints]["first"]
    print(f"first-packet ratio {a.endpoints} / {small_ep} endpoints {t_big / t_small:6.1f}  (linear: 10)")
    print()
    big, small = _dumps(a.lines), _dumps(a.lines // 10)
    for name in big:
        tb = _median(partial(parse_iptables_save, big[name]), a.runs)
        ts = _median(partial(parse_iptables_save, small[name]), a.runs)
        nb, ns = big[name].count("\n"), small[name].count("\n")
        print(
            f"parse {name:<20} {nb:>7} lines {tb * 1000:8.1f} ms, {ns:>6} lines {ts * 1000:7.1f} ms, "
            f"ratio {tb / ts:5.1f}  (linear: {nb / ns:.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
