#!/usr/bin/env python3
"""Benchmark: node capture of iptables-nft rules — netlink fast path vs ``iptables-save`` (medians, ratio).

    python bench/bench_capture_nft.py [--services 1000,10000 --endpoints 3 --node-ports 2000 --runs 3]
                                      [--whole]

Per size: kube-proxy's iptables-mode rules for N Services × M endpoints (``pytest_k8sstate.testing``)
are loaded with ``iptables-nft-restore`` into a fresh network namespace ``k8ss-bench-nft-…``; then
``collect_node(ns, parts=["iptables"])`` runs interleaved with the fast path (``nft_fast=True``: the
netlink dump + translation + parse) and without it (``iptables-save -c`` + parse), and the medians
and their ratio are printed. The two captures must give the same ruleset (checked once per size).
Reuse of unchanged parts (node/reuse.py) is off for every capture. ``--whole`` also times the capture
of the whole node (every part): as it is now (iptables
over netlink, the nft part without iptables-nft's own tables, :mod:`pytest_k8sstate.node.nftomit`)
against the plain commands (``iptables-save -c`` and the whole ``nft -j list ruleset``), interleaved;
their iptables parts and the nft tables both hold must be equal. Goal (issue 15): ≤ 5 s per node at
10,000 Services. Needs root; the namespace is deleted on exit,
on failure and on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import sys
import time
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_k8sstate.node import iptfast, netns, nftomit, reuse
from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.testing import kube_proxy_iptables, make_services


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through netns.temporary, which deletes the namespace


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (the node-side commands)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ru.ru_utime + ru.ru_stime


def _capture(ns: NetnsExec, fast: bool, timeout: float) -> tuple[float, float, NodeState]:
    t0, c0 = time.perf_counter(), _cpu()
    st = collect_node(ns, parts=["iptables"], nft_fast=fast, timeout=timeout)
    el, cpu = time.perf_counter() - t0, _cpu() - c0
    if st.errors:
        raise SystemExit(f"capture failed: {st.errors}")
    if fast and st.methods.get("iptables") != "nf_tables netlink":
        raise SystemExit(f"the fast path was not used: {st.methods}")
    return el, cpu, st


def _whole(ns: NetnsExec, now: bool, timeout: float) -> tuple[float, NodeState]:
    """The whole node, reuse off: as captured now, or with the plain commands."""
    saved = {k: os.environ.get(k) for k in (reuse.ENV, nftomit.ENV)}
    os.environ[reuse.ENV] = "0"
    os.environ[nftomit.ENV] = "1" if now else "0"
    try:
        t0 = time.perf_counter()
        st = collect_node(ns, ipvs=False, nft_fast=now, timeout=timeout)
        el = time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if st.errors:
        raise SystemExit(f"capture failed: {st.errors}")
    return el, st


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--services", default="1000,10000", help="comma-separated sizes")
    ap.add_argument("--endpoints", type=int, default=3)
    ap.add_argument("--node-ports", type=int, default=2000, help="Services that also get a NodePort (max)")
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs of each method (median)")
    ap.add_argument("--timeout", type=float, default=900, help="per capture, seconds")
    ap.add_argument("--whole", action="store_true", help="also time the whole node's capture")
    a = ap.parse_args(argv)
    netns.require_root("bench_capture_nft (loads rules into a network namespace)")
    iptfast.MIN_CHAINS = 0  # the fast path at every size (captures leave small ones to iptables-save)
    os.environ[reuse.ENV] = "0"  # every capture reads its node (no part reused from the previous one)
    signal.signal(signal.SIGTERM, _sigterm)
    rows = []
    wholes: list[tuple[int, float, float]] = []
    for n in (int(x) for x in a.services.split(",")):
        text = kube_proxy_iptables(make_services(n, a.endpoints, node_ports=min(n, a.node_ports)))
        print(f"{n} services x {a.endpoints} endpoints: {len(text) / 1e6:.1f} MB of rules", flush=True)
        with netns.temporary("bench-nft") as ns:
            t0 = time.perf_counter()
            ns.run(["iptables-nft-restore"], input=text.encode(), timeout=a.timeout)
            print(f"  iptables-nft-restore {time.perf_counter() - t0:.1f}s", flush=True)
            fast_t: list[float] = []
            slow_t: list[float] = []
            fast_c: list[float] = []
            slow_c: list[float] = []
            for i in range(a.runs):
                ft, fc, fst = _capture(ns, True, a.timeout)
                st, sc, sst = _capture(ns, False, a.timeout)
                fast_t.append(ft)
                slow_t.append(st)
                fast_c.append(fc)
                slow_c.append(sc)
                if i == 0:
                    assert fst.iptables == sst.iptables, "the fast path gave another ruleset"
                    rules = fst.iptables.rule_count() if fst.iptables is not None else 0
                print(
                    f"  run {i + 1}: fast path {ft:.2f}s (cpu {fc:.2f}s), iptables-save {st:.2f}s "
                    f"(cpu {sc:.2f}s)",
                    flush=True,
                )
            if a.whole:
                now_t: list[float] = []
                old_t: list[float] = []
                for i in range(a.runs):
                    nt, nst = _whole(ns, True, a.timeout)
                    ot, ost = _whole(ns, False, a.timeout)
                    now_t.append(nt)
                    old_t.append(ot)
                    if i == 0:
                        assert nst.iptables == ost.iptables, "the whole captures differ in iptables"
                        assert nst.nft is not None
                        assert ost.nft is not None
                        assert nst.nft.omitted, "nothing was left out of the nft part"
                        kept = {k: t for k, t in ost.nft.tables.items() if k not in nst.nft.omitted}
                        assert nst.nft.tables == kept, "the whole captures differ in the nft part"
                    print(f"  whole node {i + 1}: now {nt:.2f}s, plain commands {ot:.2f}s", flush=True)
                wholes.append((n, statistics.median(now_t), statistics.median(old_t)))
        med = statistics.median
        rows.append((n, rules, med(fast_t), med(slow_t), med(fast_c), med(slow_c)))
    print()
    head = ("services", "rules", "fast path", "iptables-save", "ratio", "cpu ratio")
    print("{:>9} {:>8} {:>10} {:>14} {:>7} {:>10}".format(*head))
    for n, rules, f, s, fc, sc in rows:
        print(f"{n:>9} {rules:>8} {f:>9.2f}s {s:>13.2f}s {f / s:>7.3f} {fc / sc:>10.3f}")
    print("(medians of interleaved runs of the wall time; ratio = fast / iptables-save; cpu = this process")
    print(" + the node-side commands; goal: fast path <= 5 s per node at 10,000 Services)")
    for n, now, old in wholes:
        ratio = now / old
        print(f"whole node, {n} services: {now:.2f}s now vs {old:.2f}s, plain commands (ratio {ratio:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
