#!/usr/bin/env python3
"""Benchmark: scaling of the iptables tracer and parser on large inputs (prints medians and ratios).

    python bench/bench_scale.py [--endpoints 10000 --lines 100000 --runs 3]

* trace: one packet to a Service with ``--endpoints`` endpoints (kube-proxy's statistic chain) and
  to one with a tenth of them, in the same run (CPU time); the ratio is ideally 10 (linear in endpoints);
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
from pytest_k8sstate.trace import Packet
from pytest_k8sstate.trace.iptables import trace_iptables

_median = median_seconds


def _cpu_median(fn: Callable[[], object], runs: int) -> float:
    """The median CPU time of ``runs`` calls (the machine is shared: wall time measures the others too)."""
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def _trace_time(endpoints: int, runs: int) -> float:
    svcs = make_services(2, endpoints)
    rs = parse_iptables_save(kube_proxy_iptables(svcs))
    rs.validate()
    pkt = Packet(svcs[0].cluster_ip, 80)
    r = trace_iptables(rs, pkt)  # warm: builds the KUBE-SERVICES index
    assert len(r.outcomes) == endpoints, r.outcomes[:3]
    return _cpu_median(lambda: trace_iptables(rs, pkt), runs)


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
    t_small = _trace_time(small_ep, a.runs)
    t_big = _trace_time(a.endpoints, a.runs)
    print(f"trace {small_ep:>6} endpoints   median {t_small * 1000:9.1f} ms CPU")
    print(f"trace {a.endpoints:>6} endpoints   median {t_big * 1000:9.1f} ms CPU")
    print(f"ratio                     {t_big / t_small:9.1f}  (linear: 10)")
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
