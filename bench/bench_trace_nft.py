#!/usr/bin/env python3
"""Benchmark: the nftables tracer on a kube-proxy-shaped ruleset (goal: ≤ 5 ms per packet).

    sudo python bench/bench_trace_nft.py [--services 5000 --endpoints 3 --packets 200 --runs 7]
                                         [--class-endpoints 1000,10000] [--only-classes]

Renders ``--services`` Services (``pytest_k8sstate.testing.nft_gen``, kube-proxy's nftables layout),
loads them with ``nft -f`` into a network namespace of our own, reads them back with ``nft -j`` and
traces one packet to each of the first ``--packets`` ClusterIPs from a pod, from outside (masqueraded)
and, on the IPv6 copy of the same Services (``ip6 kube-proxy``), from an IPv6 pod. Prints the CPU
time per packet (best and median of ``--runs`` passes). Needs root and the nft binary.

Then, per ``--class-endpoints`` size, one Service of that many endpoints (``trace/nft_classes.py``):
the first packet of a class (its walk; median of ``--runs``, the kept classes dropped before each),
and later packets of known classes — other outside clients (masqueraded) and other pod clients — as
the median per packet, each against the 5 ms goal and the first packet, measured in the same run.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_k8sstate.node import netns
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.testing.nft_gen import generate_services, render_ruleset
from pytest_k8sstate.trace import Packet
from pytest_k8sstate.trace.nft import trace_nft
from pytest_k8sstate.trace.nft_classes import RESULTS_KEY

GOAL = 0.005

NODE = "192.168.0.2"
NODE6 = "2001:db8::2"


def _v6(addr: str) -> str:
    """10.180.1.2 → fd00:10:180::1:2 (the same Service/endpoint layout, IPv6 addresses)."""
    a, b, c, d = (int(x) for x in addr.split("."))
    return str(ipaddress.IPv6Address(f"fd00:{a}:{b}::{c:x}:{d:x}"))


def _ipv6_text(text: str) -> str:
    out = []
    for line in text.splitlines():
        line = line.replace("ip kube-proxy", "ip6 kube-proxy").replace("ipv4_addr", "ipv6_addr")
        line = (
            line.replace("ip saddr", "ip6 saddr")
            .replace("ip daddr", "ip6 daddr")
            .replace("dnat ip ", "dnat ip6 ")
        )
        words = []
        for w in line.split(" "):
            core = w.rstrip(",;}")
            tail = w[len(core) :]
            host, sep, port = core.partition(":") if core.count(":") == 1 else (core, "", "")
            pfx, slash, ln = host.partition("/")
            try:
                ipaddress.IPv4Address(pfx)
            except ValueError:
                words.append(w)
                continue
            new = _v6(pfx) + (f"/{int(ln) + 96}" if slash else "")
            words.append((f"[{new}]:{port}" if sep else new) + tail)
        out.append(" ".join(words))
    return "\n".join(out).replace(_v6(NODE), NODE6)


def _load(text: str) -> NftRuleset:
    with netns.temporary("benchnft") as ns:
        ns.run(["nft", "-f", "-"], input=text.encode(), timeout=900)
        return parse_nft_json(ns.run(["nft", "-j", "list", "ruleset"], timeout=900).text, source="bench")


def _time(rs: NftRuleset, packets: list[Packet], runs: int) -> tuple[float, float]:
    for p in packets[:5]:
        trace_nft(rs, p)  # warm: base chains and set indexes are built once
    per = []
    for _ in range(runs):
        rs.cache.pop(RESULTS_KEY, None)  # every packet walked (each is its class's first)
        t0 = time.process_time()
        for p in packets:
            trace_nft(rs, p)
        per.append((time.process_time() - t0) / len(packets))
    return min(per), statistics.median(per)


def _classes(n_eps: int, runs: int, n_packets: int) -> None:
    svc = generate_services(1, n_eps)[0]
    rs = _load(render_ruleset([svc], nodeport_ips=[NODE]))
    outside = [
        Packet(svc.cluster_ip, svc.port, src=f"203.0.{113 + i // 250}.{1 + i % 250}")
        for i in range(n_packets)
    ]
    pods = [
        Packet(svc.cluster_ip, svc.port, src=f"10.244.{i // 250}.{1 + i % 250}") for i in range(n_packets)
    ]
    first = []
    for _ in range(runs):
        rs.cache.pop(RESULTS_KEY, None)
        t0 = time.process_time()
        res = trace_nft(rs, outside[0])
        first.append(time.process_time() - t0)
    assert len(res.endpoints) == n_eps
    assert all(o.masquerade for o in res.outcomes)
    f = statistics.median(first)
    print(
        f"{n_eps:6} endpoints: {'first packet of a class (walk)':33} {f * 1000:9.3f} ms  "
        f"({f / GOAL:7.2f}x the goal)"
    )
    second = []
    for _ in range(runs):  # the class's second packet also builds its index of the walk's reads
        rs.cache.pop(RESULTS_KEY, None)
        trace_nft(rs, outside[0])
        t0 = time.process_time()
        trace_nft(rs, outside[1])
        second.append(time.process_time() - t0)
    s2 = statistics.median(second)
    print(
        f"{n_eps:6} endpoints: {'second packet (indexes the class)':33} {s2 * 1000:9.3f} ms  "
        f"({s2 / GOAL:7.2f}x the goal)"
    )
    trace_nft(rs, pods[0])  # the pod class's first packet (its walk)
    for name, pkts in (("later outside sources", outside[1:]), ("later pod sources", pods[1:])):
        per = []
        for _ in range(runs):
            t0 = time.process_time()
            for p in pkts:
                trace_nft(rs, p)
            per.append((time.process_time() - t0) / len(pkts))
        m = statistics.median(per)
        got = trace_nft(rs, pkts[-1])
        assert got.packet == pkts[-1]
        assert len(got.outcomes) == n_eps
        print(
            f"{n_eps:6} endpoints: {name:33} {m * 1000:9.3f} ms  ({m / GOAL:7.2f}x the goal, "
            f"{f / m:8.0f}x faster than the first)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--endpoints", type=int, default=3)
    ap.add_argument("--packets", type=int, default=200)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--class-endpoints", default="1000,10000", help="Service sizes of the class benchmark")
    ap.add_argument("--class-packets", type=int, default=200)
    ap.add_argument("--only-classes", action="store_true", help="run the class benchmark only")
    a = ap.parse_args()
    for n in (int(x) for x in a.class_endpoints.split(",") if x):
        _classes(n, a.runs, a.class_packets)
    if a.only_classes:
        return
    svcs = generate_services(a.services, a.endpoints)
    text = render_ruleset(svcs, nodeport_ips=[NODE])
    rs4 = _load(text)
    rs6 = _load(_ipv6_text(text))
    some = svcs[: a.packets]
    cases = {
        "IPv4 pod → ClusterIP": (rs4, [Packet(s.cluster_ip, s.port, src="10.180.255.9") for s in some]),
        "IPv4 outside → ClusterIP (masq)": (rs4, [Packet(s.cluster_ip, s.port) for s in some]),
        "IPv6 pod → ClusterIP": (
            rs6,
            [Packet(_v6(s.cluster_ip), s.port, src=_v6("10.180.255.9")) for s in some],
        ),
    }
    for name, (rs, pkts) in cases.items():
        res = trace_nft(rs, pkts[0])
        assert len(res.endpoints) == a.endpoints, (name, res.outcomes)
        best, med = _time(rs, pkts, a.runs)
        print(
            f"{name:34} {best * 1000:7.3f} ms/packet best, {med * 1000:7.3f} median ({a.services} Services)"
        )


if __name__ == "__main__":
    main()
