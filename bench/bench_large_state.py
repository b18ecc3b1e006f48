"""Benchmark (issue 15 goal 5): snapshot, diff and ``assert_dnat_to`` on a large ``local`` cluster.

    python bench/bench_large_state.py [--services 2000] [--endpoints 3] [--keys 30000] [--runs 5]

Needs root and the binaries. Creates a ``local`` cluster (control plane + 2 workers, kube-proxy in
iptables mode), then:

* ``--services`` Services (selector-less, one TCP port) in 10 namespaces and one EndpointSlice each with
  ``--endpoints`` ready endpoints, created through the API with a bounded thread pool; the real
  kube-proxy of every node programs them;
* ConfigMaps until etcd holds ``--keys`` keys, written straight into etcd as JSON values (which
  kube-apiserver reads as well) 100 per transaction — through the API they would take minutes here.

Then, interleaved ``--runs`` times (medians):

* ``snapshot``: ``cluster.snapshot()`` with nothing changed since the previous one;
* ``snapshot, full read``: ``K8SSTATE_NODE_REUSE=0`` — every part of every node read again (the rule
  translations of the process's earlier snapshots at hand, ``node/rulecache.py``); ``, cold``: also
  ``K8SSTATE_RULE_CACHE=0`` — every distinct rule decoded again;
* ``snapshot, first of a process``: the first snapshot a new Python process takes (reuse on, as in a
  test session; the modules a snapshot imports on first use are imported before the clock starts — their
  time is printed apart — and the run fails if the snapshot imports one of ours, pyetcd's or grpc's):
  every node read, its fingerprints and monitors set up, the etcd connection opened, the rule
  translations an earlier process left on disk read; ``, cold``: without them (``K8SSTATE_RULE_CACHE=0``:
  what the very first capture of a large ruleset costs);
* ``snapshot after a change``: the snapshot right after one Service was scaled (every node's rules
  changed, so they are read and parsed again; etcd and the rest reused);
* ``diff``: ``before.diff(after)`` where ``after`` was taken once one Service was scaled (one
  endpoint added to its EndpointSlice and programmed by kube-proxy);
* ``assert_dnat_to``: one Service's new connections traced on every node of ``after``.

Before the runs, one snapshot and one ``assert_dnat_to`` warm the process up (the first snapshot of a
process reads everything: it is what ``first of a process`` times, each in a new process; the first
assertion imports the tracer). And once: the
memory a snapshot holds (tracemalloc: what stays allocated after a full-read capture,
then after ``to_json`` decoded every value) against the size of its JSON (``Snapshot.save`` text).
Goals: snapshot ≤ 1 s (each kind), diff ≤ 0.5 s, assert_dnat_to ≤ 10 ms, memory ≤ 3× the JSON size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_k8sstate.assertions import assert_dnat_to
from pytest_k8sstate.etcd.capture import _decode_cached, collect_etcd
from pytest_k8sstate.etcd.client import EtcdClient
from pytest_k8sstate.node.capture import collect_node
from pytest_k8sstate.providers.base import Cluster, ClusterSpec
from pytest_k8sstate.providers.local.provider import LocalProvider
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.util.poll import wait_until

GOALS = {
    "snapshot": 1.0,
    "snapshot, full read": 1.0,
    "snapshot, full read, cold": 1.0,
    "snapshot, first of a process": 1.0,
    "snapshot, first of a process, cold": 1.0,
    "snapshot after a change": 1.0,
    "diff": 0.5,
    "assert_dnat_to": 0.010,
}
NAMESPACES = 10


def _ep_ip(i: int, j: int) -> str:
    n = i * 8 + j
    return f"10.244.{100 + n // 250}.{1 + n % 250}"


def _populate(cluster: Cluster, services: int, endpoints: int) -> None:
    from kubernetes import client

    api_client = cluster.kube_api()
    core, disc = client.CoreV1Api(api_client), client.DiscoveryV1Api(api_client)
    for n in range(NAMESPACES):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=f"large-{n}")))

    def one(i: int) -> None:
        ns, name = f"large-{i % NAMESPACES}", f"svc-{i:05d}"
        core.create_namespaced_service(
            ns,
            client.V1Service(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1ServiceSpec(
                    ports=[client.V1ServicePort(name="http", port=80, target_port=8080)]
                ),
            ),
        )
        disc.create_namespaced_endpoint_slice(ns, _slice(client, name, i, endpoints))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(services)))


def _slice(client: Any, name: str, i: int, endpoints: int) -> Any:
    return client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(
            name=f"{name}-manual",
            labels={
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "bench.k8sstate",
            },
        ),
        address_type="IPv4",
        endpoints=[
            client.V1Endpoint(addresses=[_ep_ip(i, j)], conditions=client.V1EndpointConditions(ready=True))
            for j in range(endpoints)
        ],
        ports=[client.DiscoveryV1EndpointPort(name="http", port=8080, protocol="TCP")],
    )


def _fill_etcd(cluster: Cluster, keys: int) -> int:
    assert cluster.etcd is not None
    with EtcdClient(cluster.etcd) as etcd:
        have = len(collect_etcd(etcd))
        items: list[tuple[str | bytes, bytes]] = []
        for k in range(max(0, keys - have)):
            ns, name = f"large-{k % NAMESPACES}", f"cm-{k:06d}"
            obj = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": str(uuid.UUID(int=k + 1)),
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                    "labels": {"app": "bench", "shard": str(k % 97)},
                },
                "data": {"config.yaml": f"key: value-{k}\nreplicas: {k % 5}\n", "mode": "bench"},
            }
            items.append((f"/registry/configmaps/{ns}/{name}", json.dumps(obj).encode()))
        etcd.put_many(items)
        return len(collect_etcd(etcd))


def _programmed(cluster: Cluster, services: int) -> str | None:
    """None once every node's nat table has a KUBE-SVC chain per Service."""
    for n in cluster.nodes:
        st = collect_node(n.exec, parts=["iptables"])
        nat = st.iptables.tables.get("nat") if st.iptables is not None else None
        chains = 0 if nat is None else sum(1 for c in nat.chains if c.startswith("KUBE-SVC-"))
        if chains < services:
            return f"node {n.name}: {chains} of {services} Services programmed"
    return None


_FIRST = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pytest_k8sstate.providers.local.provider import LocalProvider
t0 = time.perf_counter()
import grpc, pyetcd, pytest_k8sstate.etcd.capture, pytest_k8sstate.node.capture
import pytest_k8sstate.state.snapshot, pytest_k8sstate.providers.logsources
imports = time.perf_counter() - t0
cluster = LocalProvider(progress=lambda _line: None).get(sys.argv[2])
before = set(sys.modules)
t0 = time.perf_counter()
cluster.snapshot("first")
took = time.perf_counter() - t0
late = sorted(m for m in set(sys.modules) - before if m.startswith(("pytest_k8sstate", "pyetcd", "grpc")))
assert not late, f"imported inside the timed snapshot: {late}"
print(imports, took)
"""


_IMPORTS: list[float] = []
"""The seconds each of those processes took to import what a snapshot needs (not in the timed part)."""


def _first_of_a_process(name: str, *, cold: bool = False) -> float:
    """The seconds a new process's first ``cluster.snapshot()`` takes (its imports done first);
    ``cold``: without the rule translations earlier processes left on disk (node/rulecache.py)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, **({"K8SSTATE_RULE_CACHE": "0"} if cold else {})}
    out = subprocess.run(  # noqa: S603 - argv list, no shell
        [sys.executable, "-c", _FIRST, root, name], capture_output=True, check=True, timeout=300, env=env
    )
    imports, took = out.stdout.decode().split()[-2:]
    _IMPORTS.append(float(imports))
    return float(took)


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--endpoints", type=int, default=3)
    ap.add_argument("--keys", type=int, default=30000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", default=None, help="reuse/keep a cluster of this name (not deleted)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    prov = LocalProvider(progress=lambda _line: None)
    name = args.keep or f"bls{os.getpid() % 100000}"
    t0 = time.monotonic()
    if args.keep and name in prov.list():
        cluster = prov.get(name)
    else:
        cluster = prov.create(ClusterSpec(name=name, nodes=2, persistent=bool(args.keep)))
    print(f"cluster created in {time.monotonic() - t0:.1f} s", flush=True)
    try:
        t0 = time.monotonic()
        if not any(s.startswith("large-") for s in _namespaces(cluster)):
            _populate(cluster, args.services, args.endpoints)
            print(f"{args.services} Services + EndpointSlices in {time.monotonic() - t0:.1f} s", flush=True)
        t0 = time.monotonic()
        total = _fill_etcd(cluster, args.keys)
        print(f"etcd holds {total} keys ({time.monotonic() - t0:.1f} s)", flush=True)
        t0 = time.monotonic()
        wait_until(
            f"kube-proxy programs {args.services} Services",
            lambda: _programmed(cluster, args.services),
            timeout=900,
            interval=2,
            max_interval=10,
        )
        print(f"kube-proxy programmed them ({time.monotonic() - t0:.1f} s)", flush=True)
        return _measure(cluster, args)
    finally:
        if not args.keep:
            prov.delete(name)


def _namespaces(cluster: Cluster) -> list[str]:
    from kubernetes import client

    return [n.metadata.name for n in client.CoreV1Api(cluster.kube_api()).list_namespace().items]


def _pick(cluster: Cluster, rng: random.Random, services: int) -> tuple[int, int]:
    """A random Service that can take one more endpoint (at most 8: ``_ep_ip``'s range per Service), and
    its new count — a kept cluster's earlier runs scaled some, so the count is read, not assumed."""
    from kubernetes import client

    disc = client.DiscoveryV1Api(cluster.kube_api())
    for _ in range(200):
        i = rng.randrange(services)
        ns, svc = f"large-{i % NAMESPACES}", f"svc-{i:05d}"
        have = len(disc.read_namespaced_endpoint_slice(f"{svc}-manual", ns).endpoints or [])
        if have < 8:
            return i, have + 1
    raise SystemExit("no Service found that can take another endpoint: delete the kept cluster")


_SVC0 = "svc-00000"


def _endpoints(cluster: Cluster, i: int) -> list[str]:
    """Service i's endpoints as its EndpointSlice holds them now (``IP:8080``)."""
    from kubernetes import client

    disc = client.DiscoveryV1Api(cluster.kube_api())
    ns, svc = f"large-{i % NAMESPACES}", f"svc-{i:05d}"
    eps = disc.read_namespaced_endpoint_slice(f"{svc}-manual", ns).endpoints or []
    return [f"{e.addresses[0]}:8080" for e in eps]


def _scale_one(cluster: Cluster, i: int, endpoints: int) -> str:
    """Add an endpoint to Service i's slice; wait until kube-proxy programmed it on every node."""
    from kubernetes import client

    disc = client.DiscoveryV1Api(cluster.kube_api())
    ns, svc = f"large-{i % NAMESPACES}", f"svc-{i:05d}"
    disc.replace_namespaced_endpoint_slice(f"{svc}-manual", ns, _slice(client, svc, i, endpoints))
    want = _ep_ip(i, endpoints - 1)

    def probe() -> str | None:
        for n in cluster.nodes:
            nat = n.exec.run(["iptables-save", "-t", "nat"], timeout=120).stdout
            if f"{want}:8080".encode() not in nat:
                return f"node {n.name}: no rule for {want} yet"
        return None

    wait_until(f"kube-proxy programs {want} for {ns}/{svc}", probe, timeout=300, interval=1, max_interval=5)
    return f"{ns}/{svc}"


def _measure(cluster: Cluster, args: argparse.Namespace) -> int:
    res: dict[str, list[float]] = {k: [] for k in GOALS}
    warm = cluster.snapshot("warm-up")
    # and one assertion: a process's first one imports the tracer and loads the protobuf schema
    # (~50 ms, once), as its first snapshot reads everything
    assert_dnat_to(warm, f"large-0/{_SVC0}:80", endpoints=_endpoints(cluster, 0))
    rng = random.Random(time.time_ns())
    for run in range(args.runs):
        t, before = _timed(lambda: cluster.snapshot("before"))
        res["snapshot"].append(t)
        os.environ["K8SSTATE_NODE_REUSE"] = "0"
        try:
            t, _ = _timed(lambda: cluster.snapshot("full"))
            res["snapshot, full read"].append(t)
            os.environ["K8SSTATE_RULE_CACHE"] = "0"
            t, _ = _timed(lambda: cluster.snapshot("full, cold"))
            res["snapshot, full read, cold"].append(t)
        finally:
            del os.environ["K8SSTATE_NODE_REUSE"]
            os.environ.pop("K8SSTATE_RULE_CACHE", None)
        res["snapshot, first of a process"].append(_first_of_a_process(cluster.name))
        res["snapshot, first of a process, cold"].append(_first_of_a_process(cluster.name, cold=True))
        i, endpoints = _pick(cluster, rng, args.services)
        svc = _scale_one(cluster, i, endpoints)
        t, after = _timed(lambda: cluster.snapshot("after"))
        res["snapshot after a change"].append(t)
        t, diff = _timed(partial(before.diff, after))
        res["diff"].append(t)
        eps = [f"{_ep_ip(i, j)}:8080" for j in range(endpoints)]
        t, _ = _timed(partial(assert_dnat_to, after, f"{svc}:80", endpoints=eps))
        res["assert_dnat_to"].append(t)
        print(
            f"run {run + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in res.items()), flush=True
        )
        assert diff.etcd.modified, "the scaled Service's EndpointSlice must show in the diff"
    memory = _memory(cluster)
    keys = len(before.etcd) if before.etcd is not None else 0
    print(
        f"\nlocal 1+2, {args.services} Services × {args.endpoints} endpoints, {keys} etcd keys, "
        f"{args.runs} runs"
    )
    for k, v in res.items():
        med = statistics.median(v)
        print(
            f"  {k:35s} {med * 1000:8.1f} ms  (min {min(v) * 1000:.1f}, max {max(v) * 1000:.1f})  "
            f"goal ratio {med / GOALS[k]:.2f}"
        )
    print(
        f"  (not timed: a new process's imports of what a snapshot needs, grpc/pyetcd/capture/state: median "
        f"{statistics.median(_IMPORTS) * 1000:.0f} ms)"
    )
    print(memory)
    return 0


def _memory(cluster: Cluster) -> str:
    os.environ["K8SSTATE_NODE_REUSE"] = "0"
    try:
        _decode_cached.cache_clear()
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        snap = cluster.snapshot("memory")
        held = tracemalloc.get_traced_memory()[0] - base
        text = json.dumps(snap.to_json(), separators=(",", ":"), ensure_ascii=False)
        gc.collect()
        size = len(text.encode())
        del text
        gc.collect()
        held_decoded = tracemalloc.get_traced_memory()[0] - base
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    finally:
        del os.environ["K8SSTATE_NODE_REUSE"]
    assert isinstance(snap, Snapshot)
    return (
        f"  memory: JSON {size / 1e6:.1f} MB; held after capture {held / 1e6:.1f} MB ({held / size:.2f}×), "
        f"after to_json (every value decoded) {held_decoded / 1e6:.1f} MB ({held_decoded / size:.2f}×; "
        f"includes the decode cache), peak {peak / 1e6:.1f} MB; goal ≤ 3×"
    )


if __name__ == "__main__":
    sys.exit(main())
