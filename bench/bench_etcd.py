"""Benchmark: ``collect_etcd`` vs one plain gRPC Range of the same keys, same etcd, same run.

    python bench/bench_etcd.py [--keys 5000] [--runs 7] [--page-size 500]

Starts a real etcd (client-cert TLS) in a temp dir, writes ``--keys`` realistic pod values (~2.5 KB
protobuf each, ~13 MB), then alternates (median of ``--runs``):

* ``grpc``: one ``KV.Range`` of the whole prefix on a warm grpcio channel (the floor),
* ``collect``: ``collect_etcd`` (paged at one revision, values decoded lazily) on a warm client,
* ``collect+tls``: the same including client creation and the TLS handshake,
* ``decode all``: forcing every entry's decode + sha256 (what ``EtcdState.to_json`` does).

Goal: collect ≤ 1.3× grpc.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import grpc  # noqa: E402
from etcd_fixtures import k8s_value, pod, start_etcd  # noqa: E402
from pyetcd.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: E402

from pytest_k8sstate.etcd.capture import _decode_cached, collect_etcd  # noqa: E402
from pytest_k8sstate.etcd.client import EtcdClient  # noqa: E402
from pytest_k8sstate.etcd.target import prefix_range_end  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--page-size", type=int, default=500)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="k8ss-bench-etcd-") as tmp:
        pki, server = start_etcd(Path(tmp))
        try:
            target = server.target
            with EtcdClient(target) as client:
                items = []
                for i in range(args.keys):
                    ns = f"ns-{i % 50}"
                    name = f"web-{i:05d}-x7k2p"
                    items.append(
                        (f"/registry/pods/{ns}/{name}", k8s_value("v1", "Pod", pod(ns, name, containers=5)))
                    )
                total = sum(len(v) for _, v in items)
                client.put_many(items)
                print(f"wrote {len(items)} keys, {total / 1e6:.1f} MB, etcd {server.binary}")

                creds = grpc.ssl_channel_credentials(
                    pki.etcd_ca_crt.read_bytes(),
                    pki.apiserver_etcd_client_key.read_bytes(),
                    pki.apiserver_etcd_client_crt.read_bytes(),
                )
                host = target.endpoints[0].removeprefix("https://")
                channel = grpc.secure_channel(
                    host, creds, options=[("grpc.max_receive_message_length", 1 << 30)]
                )
                stub = rpc_pb2_grpc.KVStub(channel)
                req = rpc_pb2.RangeRequest(key=b"/registry", range_end=prefix_range_end(b"/registry"))
                stub.Range(req, timeout=60)  # warm up
                collect_etcd(client, page_size=args.page_size)

                t_grpc, t_collect, t_fresh, t_decode = [], [], [], []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    resp = stub.Range(req, timeout=60)
                    t_grpc.append(time.perf_counter() - t0)
                    assert len(resp.kvs) == len(items)

                    t0 = time.perf_counter()
                    state = collect_etcd(client, page_size=args.page_size)
                    t_collect.append(time.perf_counter() - t0)
                    assert len(state) == len(items)

                    t0 = time.perf_counter()
                    collect_etcd(target, page_size=args.page_size)
                    t_fresh.append(time.perf_counter() - t0)

                    _decode_cached.cache_clear()  # measure real decoding, not the cache
                    t0 = time.perf_counter()
                    for e in state:
                        e.decoded  # noqa: B018
                        e.sha256  # noqa: B018
                    t_decode.append(time.perf_counter() - t0)
                    del state
                channel.close()
        finally:
            server.stop()

    g = statistics.median(t_grpc)
    c = statistics.median(t_collect)
    f = statistics.median(t_fresh)
    d = statistics.median(t_decode)
    print(f"runs={args.runs} page_size={args.page_size} (medians)")
    for name, ts in (("grpc", t_grpc), ("collect", t_collect), ("fresh", t_fresh)):
        print(f"  samples {name}: " + " ".join(f"{t * 1000:.0f}" for t in ts))
    print(f"  grpc Range (one call)     {g * 1000:8.1f} ms   (min {min(t_grpc) * 1000:.1f})")
    cmin = min(t_collect) * 1000
    ratio = f"ratio {c / g:.2f}x   goal <= 1.3x"
    print(f"  collect_etcd (warm)       {c * 1000:8.1f} ms   {ratio}   (min {cmin:.1f})")
    print(f"  collect_etcd (new client) {f * 1000:8.1f} ms   ratio {f / g:.2f}x")
    print(f"  decode+hash all entries   {d * 1000:8.1f} ms   ({d / len(items) * 1e6:.0f} us/key)")


if __name__ == "__main__":
    main()
