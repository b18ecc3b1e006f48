#!/usr/bin/env python3
"""Benchmark: full decoding of etcd values (every field named, the apiserver's JSON) vs the generic decoder.

Builds a fixture mix of protobuf values the way kube-apiserver stores them (``tests/etcd_fixtures.py``:
Pods with 2 and 5 containers and their managedFields, Services, EndpointSlices with 3 endpoints), then
times, in the same run and on the same values: ``decode_value`` with the descriptors (full decoding) and
``decode_protobuf(..., schema=None)`` (the generic wire tree renamed by the small hand-written schema: the
decoder before full decoding) and, as the floor, a plain ``json.loads`` of the same objects' JSON (what the
full decoding produces). Prints the median per value of each (wall and CPU time), their ratios, the ratio
to the goal and the share of leaf fields each names. Goal (issue 12): full decoding ≤ 100 µs per value
(CPU time: on a shared machine wall time measures the load more than the decoder).

    .venv/bin/python bench/bench_decode.py [--values 400] [--runs 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _timing import median_seconds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from etcd_fixtures import endpointslice, k8s_value, pod, service  # noqa: E402

from pytest_k8sstate.etcd.decode import decode_value  # noqa: E402
from pytest_k8sstate.etcd.decode.protobuf import active_schema, decode_protobuf  # noqa: E402

GOAL_US = 100.0


def _mix(n: int) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        ns = f"ns-{i % 7}"
        k = i % 5
        if k == 0:
            out.append(
                (f"/registry/pods/{ns}/web-{i}", k8s_value("v1", "Pod", pod(ns, f"web-{i}", containers=2)))
            )
        elif k == 1:
            out.append(
                (f"/registry/pods/{ns}/db-{i}", k8s_value("v1", "Pod", pod(ns, f"db-{i}", containers=5)))
            )
        elif k == 2:
            svc = service(ns, f"svc-{i}", uid=f"u-{i}", cluster_ip=f"10.96.{i % 250}.{i % 200 + 1}")
            out.append((f"/registry/services/specs/{ns}/svc-{i}", k8s_value("v1", "Service", svc)))
        else:
            ips = [f"10.244.{j}.{i % 250}" for j in range(3)]
            eps = endpointslice(ns, f"svc-{i}", uid=f"e-{i}", service_uid=f"u-{i}", ips=ips)
            key = f"/registry/endpointslices/{ns}/svc-{i}-x7k2p"
            out.append((key, k8s_value("discovery.k8s.io/v1", "EndpointSlice", eps)))
    return out


def _leaves(obj: Any) -> tuple[int, int]:
    """(leaf fields, of them under a name): a leaf below any ``#N`` key counts as unnamed."""
    if isinstance(obj, dict) and obj:
        total = named = 0
        for k, v in obj.items():
            t, n = _leaves(v)
            total += t
            named += 0 if str(k).startswith("#") else n
        return total, named
    if isinstance(obj, list) and obj:
        sums = [_leaves(v) for v in obj]
        return sum(t for t, _ in sums), sum(n for _, n in sums)
    return 1, 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--values", type=int, default=400)
    ap.add_argument("--runs", type=int, default=9)
    a = ap.parse_args()
    schema = active_schema()
    if schema is None:
        sys.exit("descriptors unavailable: see the warning above")
    values = _mix(a.values)
    size = sum(len(v) for _, v in values)

    def full() -> None:
        for k, v in values:
            decode_value(k, v)

    def generic() -> None:
        for k, v in values:
            decode_protobuf(k, v, None)

    texts = [json.dumps(decode_value(k, v).fields).encode() for k, v in values]

    def plain_json() -> None:
        for t in texts:
            json.loads(t)

    full()
    generic()  # warm up (descriptors compiled lazily, caches)
    plain_json()
    t_full, t_generic, t_json, c_full, c_generic, c_json = [], [], [], [], [], []
    for _ in range(a.runs):  # interleaved: all see the same machine load
        c0 = time.process_time()
        t_full.append(median_seconds(full, 1))
        c1 = time.process_time()
        t_generic.append(median_seconds(generic, 1))
        c2 = time.process_time()
        t_json.append(median_seconds(plain_json, 1))
        c3 = time.process_time()
        c_full.append(c1 - c0)
        c_generic.append(c2 - c1)
        c_json.append(c3 - c2)
    per_full, per_generic, per_json, cpu_full, cpu_generic, cpu_json = (
        statistics.median(t) / len(values) * 1e6
        for t in (t_full, t_generic, t_json, c_full, c_generic, c_json)
    )
    named_full = [_leaves(decode_value(k, v).fields) for k, v in values]
    named_generic = [_leaves(decode_protobuf(k, v, None).fields) for k, v in values]
    share_full = sum(n for _, n in named_full) / sum(t for t, _ in named_full)
    share_generic = sum(n for _, n in named_generic) / sum(t for t, _ in named_generic)
    print(
        f"fixture mix: {len(values)} values (pods, services, endpointslices), "
        f"{size / len(values):.0f} B average"
    )
    print(f"descriptors: k8s.io/api {schema.version}")
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall time suffers; CPU time less)"
    )
    print(
        f"full decoding      median {per_full:7.1f} µs/value wall, {cpu_full:7.1f} µs CPU over {a.runs} runs"
        f"   ({share_full:.1%} leaves named)"
    )
    print(
        f"generic (before)   median {per_generic:7.1f} µs/value wall, {cpu_generic:7.1f} µs CPU "
        f"over {a.runs} runs"
        f"   ({share_generic:.1%} leaves named)"
    )
    print(
        f"json.loads (floor) median {per_json:7.1f} µs/value wall, {cpu_json:7.1f} µs CPU "
        f"of the same objects' JSON ({sum(map(len, texts)) / len(texts):.0f} B average)"
    )
    print(f"full / generic = {per_full / per_generic:.2f} wall, {cpu_full / cpu_generic:.2f} CPU")
    print(f"full / json.loads = {per_full / per_json:.2f} wall, {cpu_full / cpu_json:.2f} CPU")
    verdict = "met" if cpu_full <= GOAL_US else "NOT met"
    print(
        f"goal: full ≤ {GOAL_US:.0f} µs/value CPU — {verdict} "
        f"(full / goal = {cpu_full / GOAL_US:.2f} CPU, {per_full / GOAL_US:.2f} wall)"
    )
    sample = decode_value(*values[0]).fields
    print("first value:", json.dumps(sample)[:160], "...")


if __name__ == "__main__":
    main()
