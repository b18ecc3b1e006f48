"""Benchmarks of the ``local`` provider (medians over N runs; needs root and the binaries).

    python bench/bench_local.py [--runs 5] [--nodes 2] [--proxy-mode iptables]

Measures, for a control plane + ``--nodes`` workers:
  create  : ClusterSpec → create() returned (apiserver ready, nodes Ready, coredns endpoints, rules synced)
  delete  : delete() returned, nothing left
  reset   : reset() after a test-like change (namespace + service + node label), rules back to pristine
  snapshot: cluster.snapshot() (etcd + every node's netfilter/links/addrs/routes)
Goals (issue 3): create ≤ 5 s, delete ≤ 2 s, reset ≤ 1 s, snapshot ≤ 150 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.local.provider import LocalProvider


def _quiet(_: str) -> None:
    pass


def _change(cluster: object, i: int) -> None:
    from kubernetes import client

    api = client.CoreV1Api(cluster.kube_api())  # type: ignore[attr-defined]
    ns = f"bench-{i}"
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    api.create_namespaced_service(
        ns,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80)]),
        ),
    )
    api.patch_node(cluster.nodes[-1].name, {"metadata": {"labels": {"bench": str(i)}}})  # type: ignore[attr-defined]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--proxy-mode", default="iptables")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    prov = LocalProvider(progress=_quiet)
    name = f"bench{os.getpid() % 10000}"
    res: dict[str, list[float]] = {"create": [], "delete": [], "reset": [], "snapshot": []}
    for run in range(args.runs):
        t0 = time.monotonic()
        cluster = prov.create(ClusterSpec(name=name, nodes=args.nodes, proxy_mode=args.proxy_mode))
        res["create"].append(time.monotonic() - t0)
        try:
            cluster.snapshot("warm-up")
            for _ in range(2):
                t0 = time.monotonic()
                cluster.snapshot("bench")
                res["snapshot"].append(time.monotonic() - t0)
            _change(cluster, run)
            time.sleep(0.5)  # let kube-proxy program the change, like a test would have
            t0 = time.monotonic()
            prov.reset(cluster)
            res["reset"].append(time.monotonic() - t0)
        finally:
            t0 = time.monotonic()
            prov.delete(name)
            res["delete"].append(time.monotonic() - t0)
        line = ", ".join(f"{k} {v[-1]:.2f}s" for k, v in res.items() if v)
        print(f"run {run + 1}/{args.runs}: {line}", flush=True)
    print(
        f"\nlocal provider, 1 control plane + {args.nodes} workers, "
        f"kube-proxy {args.proxy_mode}, {args.runs} runs"
    )
    goals = {"create": 5.0, "delete": 2.0, "reset": 1.0, "snapshot": 0.150}
    for k, v in res.items():
        med = statistics.median(v)
        print(
            f"  {k:9s} median {med * 1000:8.0f} ms  (min {min(v) * 1000:.0f}, max {max(v) * 1000:.0f}; "
            f"goal ≤ {goals[k] * 1000:.0f} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
