#!/usr/bin/env python3
"""``fresh=True`` on kind: a reset after a workload vs deleting and creating the cluster (issue goal: ≤ 3 s).

    DOCKER_HOST=... K8SSTATE_KIND_IMAGE=... python bench/bench_kind_fresh.py [--nodes 2] [--runs 5]

Creates a kind cluster (a control plane + ``--nodes`` workers; the create time is the first "recreate"
sample), then ``--runs`` times: a Deployment of 2 pods + a NodePort Service + a namespace, ready and
programmed, then ``provider.reset`` (timed: etcd restored, the pods' sandboxes, veths, routes and conntrack
entries gone from the nodes, kube-proxy's rules back). ``--creates`` more delete+create cycles give the
recreate median. Prints both medians and their ratio; every cluster is deleted at the end (also on failure
or Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.k8s.helper import K8sHelper
from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.kind.provider import KindProvider

APP = "bench-web"
OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-extra"}},
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.1"}]},
            },
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APP, "namespace": "default"},
        "spec": {"type": "NodePort", "selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 8080}]},
    },
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=2, help="workers besides the control plane")
    ap.add_argument("--runs", type=int, default=5, help="workload + reset cycles")
    ap.add_argument("--creates", type=int, default=1, help="delete + create cycles besides the first create")
    a = ap.parse_args()
    prov = KindProvider(progress=lambda _line: None)
    name = f"benchfresh{os.getpid() % 100000}"
    spec = ClusterSpec(name=name, nodes=a.nodes, proxy_mode="iptables")
    recreate: list[float] = []
    resets: list[float] = []
    try:
        t0 = time.perf_counter()
        cluster = prov.create(spec)
        recreate.append(time.perf_counter() - t0)
        for _ in range(a.runs):
            api = K8sHelper(cluster.kube_api(), cluster=cluster)
            for obj in OBJECTS:
                api.apply(obj)
            api.wait_ready(f"deployment/{APP}", timeout=180)
            api.wait_endpoints(f"svc/{APP}", count=2, timeout=120)
            api.close()
            t0 = time.perf_counter()
            prov.reset(cluster)
            resets.append(time.perf_counter() - t0)
        for _ in range(a.creates):
            t0 = time.perf_counter()
            prov.delete(name)
            cluster = prov.create(spec)
            recreate.append(time.perf_counter() - t0)
    finally:
        prov.delete(name)
    reset_m, create_m = statistics.median(resets), statistics.median(recreate)
    print(f"kind 1+{a.nodes} nodes; reset samples: {', '.join(f'{t:.2f}' for t in resets)} s")
    print(f"fresh=True (reset)       median {reset_m:6.2f} s   (goal <= 3 s)")
    print(f"delete + create          median {create_m:6.2f} s   ({len(recreate)} samples)")
    print(f"ratio reset / recreate   {reset_m / create_m:.3f}")


if __name__ == "__main__":
    try:
        main()
    except K8sStateError as exc:  # no engine, no node image, a failed create: one message, no traceback
        sys.exit(f"bench_kind_fresh: {exc}")
