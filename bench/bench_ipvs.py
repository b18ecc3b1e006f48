#!/usr/bin/env python3
"""Benchmark: trace new connections through a kube-proxy IPVS-mode node (prints medians).

Generates the node state of ``--services`` Services (3 endpoints each, the first ``--node-ports`` with a
NodePort) with :mod:`pytest_k8sstate.testing.ipvs_gen` — iptables, ipsets and ``ipvsadm -Sn`` text —,
parses it, traces the first packet (builds the indexes) and then ``--reps`` packets to random ClusterIPs,
passing the parsed lists the way the assertions pass a NodeState's. Goal (issue 2): ≤ 5 ms per packet.
No root needed.

    .venv/bin/python bench/bench_ipvs.py [--services 10000] [--reps 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from pytest_k8sstate.parse.ipset import parse_ipset_save
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.parse.ipvs import parse_ipvsadm
from pytest_k8sstate.testing.ipvs_gen import IpvsService, kube_proxy_ipvs
from pytest_k8sstate.trace import Packet, trace

NODE_IP = "192.168.50.2"


def _ip(prefix: str, i: int) -> str:
    return f"{prefix}.{i // 250 % 250}.{i % 250 + 1}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--node-ports", type=int, default=2_000)
    ap.add_argument("--reps", type=int, default=300)
    a = ap.parse_args(argv)
    svcs = [
        IpvsService(
            _ip("10.96", i),
            80,
            tuple(f"{_ip('10.244', i * 3 + j)}:8080" for j in range(3)),
            node_port=30000 + i if i < min(a.node_ports, 2767) else None,
        )
        for i in range(a.services)
    ]
    gen = kube_proxy_ipvs(svcs, node_ips=(NODE_IP,))
    t0 = time.perf_counter()
    rs, sets, vss = parse_iptables_save(gen.iptables), parse_ipset_save(gen.ipsets), parse_ipvsadm(gen.ipvs)
    parse_s = time.perf_counter() - t0
    local = frozenset({NODE_IP})
    t0 = time.perf_counter()
    first = trace(rs, Packet(svcs[0].cluster_ip, 80, local_ips=local), ipsets=sets, ipvs=vss)
    first_ms = (time.perf_counter() - t0) * 1000
    assert len(first.outcomes) == 3, first
    rnd = random.Random(1)
    times: list[float] = []
    for _ in range(a.reps):
        svc = svcs[rnd.randrange(len(svcs))]
        pkt = Packet(svc.cluster_ip, 80, src="10.244.200.9", local_ips=local)
        t0 = time.perf_counter()
        res = trace(rs, pkt, ipsets=sets, ipvs=vss)
        times.append(time.perf_counter() - t0)
        assert set(res.endpoints) == set(svc.endpoints), (svc, res)
    lines = len(gen.iptables.splitlines())
    print(f"state: {a.services} services, {len(vss)} virtual servers, {lines} iptables lines")
    print(f"parse iptables+ipset+ipvsadm  {parse_s:.2f} s")
    print(f"trace first packet            {first_ms:.1f} ms  (indexes virtual servers, compiles sets)")
    med = statistics.median(times) * 1000
    print(f"trace one packet              median {med:.3f} ms over {a.reps} (goal ≤ 5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
