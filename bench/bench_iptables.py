#!/usr/bin/env python3
"""Benchmark: parse and trace a real kube-proxy-sized iptables dump (prints medians).

    python bench/bench_iptables.py [--services 10000 --endpoints 3 --runs 5 --backend legacy|nft]

Generates kube-proxy's iptables-mode rules for N services × M endpoints
(``pytest_k8sstate.testing``), loads them with ``iptables-restore`` into a temporary network
namespace, then per run times ``iptables-save -c`` itself and ``parse_iptables_save`` of its
output; finally times tracing one packet (first call builds and caches the KUBE-SERVICES index,
then the median of many). Goal (issue 2): parse ≤ 0.5 × iptables-save, trace ≤ 5 ms per packet.
Needs root (network namespace); the namespace is deleted on exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_k8sstate.node import netns
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.testing import kube_proxy_iptables, make_services
from pytest_k8sstate.trace import Packet
from pytest_k8sstate.trace.iptables import trace_iptables


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=3)
    ap.add_argument("--node-ports", type=int, default=0, help="services that also get a NodePort")
    ap.add_argument("--runs", type=int, default=5, help="iptables-save/parse runs (median; at least 5)")
    ap.add_argument("--trace-reps", type=int, default=500)
    ap.add_argument(
        "--backend",
        choices=["legacy", "nft"],
        default="legacy" if shutil.which("iptables-legacy-save") else "nft",
        help="iptables-legacy-{restore,save} (default when installed) or the nf_tables ones "
        "(iptables-nft-save is much slower on 100k rules)",
    )
    ap.add_argument("--timeout", type=float, default=900, help="per iptables command, seconds")
    a = ap.parse_args(argv)
    if a.runs < 5:
        ap.error("--runs must be at least 5")
    netns.require_root("bench_iptables (loads rules into a network namespace)")
    restore, save = (
        ("iptables-legacy-restore", "iptables-legacy-save")
        if a.backend == "legacy"
        else ("iptables-nft-restore", "iptables-nft-save")
    )
    for prog in (restore, save):
        if shutil.which(prog) is None:
            print(f"{prog} not found: apt-get install iptables", file=sys.stderr)
            return 2

    t0 = time.perf_counter()
    svcs = make_services(a.services, a.endpoints, node_ports=a.node_ports)
    text = kube_proxy_iptables(svcs)
    gen_s = time.perf_counter() - t0
    mb = len(text) / 1e6
    print(f"generated {a.services} services x {a.endpoints} endpoints: {mb:.1f} MB in {gen_s:.2f}s")

    with netns.temporary("bench") as ns:
        t0 = time.perf_counter()
        ns.run([restore], input=text.encode(), timeout=a.timeout)
        print(f"{restore}: {time.perf_counter() - t0:.2f}s")
        save_times: list[float] = []
        parse_times: list[float] = []
        save_cpu: list[float] = []
        parse_cpu: list[float] = []
        dump = ""
        for i in range(a.runs):
            c0 = _children_cpu()
            t0 = time.perf_counter()
            dump = ns.run([save, "-c"], timeout=a.timeout).text
            save_times.append(time.perf_counter() - t0)
            save_cpu.append(_children_cpu() - c0)
            c0 = time.process_time()
            t0 = time.perf_counter()
            rs = parse_iptables_save(dump, source=f"{save} -c")
            parse_times.append(time.perf_counter() - t0)
            parse_cpu.append(time.process_time() - c0)
            del rs
            print(
                f"  run {i + 1}: {save} -c {save_times[-1]:.3f}s (cpu {save_cpu[-1]:.3f}s), "
                f"parse {parse_times[-1]:.3f}s (cpu {parse_cpu[-1]:.3f}s)",
                flush=True,
            )

    rs = parse_iptables_save(dump, source=f"{save} -c")
    rules = rs.rule_count()
    t0 = time.perf_counter()
    for t in rs.tables.values():
        for ch in t.chains.values():
            ch.rules  # noqa: B018 - builds the Rule objects
    materialize_s = time.perf_counter() - t0
    rs = parse_iptables_save(dump, source=f"{save} -c")
    t0 = time.perf_counter()
    rs.validate()
    validate_s = time.perf_counter() - t0

    with_eps = [s for s in svcs if s.endpoints] or svcs
    t0 = time.perf_counter()
    first = trace_iptables(rs, Packet(with_eps[0].cluster_ip, 80))
    first_ms = (time.perf_counter() - t0) * 1000
    assert first.outcomes, "no outcome"
    trace_times: list[float] = []
    for k in range(a.trace_reps):
        s = with_eps[(k * 7919) % len(with_eps)]
        pkt = Packet(s.cluster_ip, 80)
        t0 = time.perf_counter()
        trace_iptables(rs, pkt)
        trace_times.append(time.perf_counter() - t0)

    med_save = statistics.median(save_times)
    med_parse = statistics.median(parse_times)
    print()
    print(f"dump size            {len(dump) / 1e6:.1f} MB, {rules} rules, backend {a.backend}")
    print(f"iptables-save -c     median {med_save:.3f}s over {a.runs} runs")
    print(f"parse                median {med_parse:.3f}s over {a.runs} runs")
    print(f"parse / save         {med_parse / med_save:.2f}  (goal <= 0.5)")
    mc_save, mc_parse = statistics.median(save_cpu), statistics.median(parse_cpu)
    print(
        f"cpu time             iptables-save {mc_save:.3f}s, parse {mc_parse:.3f}s, "
        f"ratio {mc_parse / mc_save:.2f}"
    )
    print(f"build all Rule objs  {materialize_s:.3f}s  (Chain.rules is built on first access)")
    print(f"validate (all rules) {validate_s:.3f}s  (Rule objects + every rule's matches/target)")
    print(f"trace first packet   {first_ms:.1f} ms  (builds + caches the KUBE-SERVICES index)")
    print(
        f"trace one packet     median {statistics.median(trace_times) * 1000:.3f} ms over {a.trace_reps} "
        "(goal <= 5 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
