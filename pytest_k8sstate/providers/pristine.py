"""Cheap "fresh cluster" (``fresh=True``): restore etcd to the pristine capture, wait for the rules.

Used by the ``local`` and the ``kind`` provider (kind adds the node side: :mod:`.kind.reset`). Right after
create (once etcd has settled: :func:`capture_pristine` fails when it does not) the provider captures every
key under ``/registry`` and every node's netfilter rules (``pristine.json`` in the cluster directory).
:func:`reset_cluster` then:

1. reads etcd, deletes keys added since, puts back removed and modified keys — directly in etcd; the
   apiserver watches etcd, so its caches and every controller/kube-proxy follow (no restart);
2. repeats once more if controllers reacted to the restore with new writes;
3. waits until every node's kube-proxy rules equal the pristine rules (order-insensitive).

Heartbeat keys are not restored: leases (renewed by kwok and leader election; leases added by a test are
deleted), ``/registry/masterleases/`` (the apiserver's own TTL key) and events (expire; added ones are
deleted). Measured in ``bench/bench_local.py``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k8sstate.errors import CommandError, ProviderError
from pytest_k8sstate.node.exec import NodeExec
from pytest_k8sstate.util.files import atomic_write_text
from pytest_k8sstate.util.poll import wait_until

if TYPE_CHECKING:
    from pytest_k8sstate.providers.base import Cluster, NodeInfo

PRISTINE_FILE = "pristine.json"
_SKIP = ("/registry/masterleases/", "/registry/peerserverleases/")
_NO_RESTORE = ("/registry/leases/", "/registry/events/", "/registry/events.k8s.io/")
SETTLE_GAP = 0.3
"""Seconds between the two etcd reads that must agree for etcd to count as settled."""
_COUNTERS = re.compile(r"\s*\[\d+:\d+\]")
_cache: dict[str, tuple[dict[bytes, bytes], dict[str, list[str]]]] = {}


def _read_etcd(cluster: Cluster) -> dict[bytes, tuple[bytes, int]]:
    from pytest_k8sstate.etcd.client import EtcdClient
    from pytest_k8sstate.etcd.target import prefix_range_end

    if cluster.etcd is None:
        raise ProviderError(f"cluster {cluster.name!r} has no etcd target; cannot reset")
    out: dict[bytes, tuple[bytes, int]] = {}
    with EtcdClient(cluster.etcd, timeout=10) as client:
        resp = client.range(b"/registry/", prefix_range_end(b"/registry/"))
        for kv in resp.kvs:
            out[bytes(kv.key)] = (bytes(kv.value), int(kv.mod_revision))
    return out


def rules_text(exec_: NodeExec, mode: str, *, ip6: bool = False) -> list[str]:
    """The node's netfilter rules as a sorted list of normalised lines (counters/comments dropped).
    ``ip6`` (a cluster with IPv6): also ``ip6tables-save`` (its lines prefixed ``ip6 ``); nft's ruleset
    holds every family anyway."""
    if mode == "nftables":
        res = exec_.run(["nft", "list", "ruleset"], timeout=10)
        lines = _drop_empty_chains([ln.strip().rstrip(",") for ln in res.text.splitlines()])
    else:
        lines = _save_lines(exec_.run(["iptables-save"], timeout=10).text)
        if ip6:
            lines += [f"ip6 {ln}" for ln in _save_lines(exec_.run(["ip6tables-save"], timeout=10).text)]
    return sorted(ln for ln in lines if ln)


def _save_lines(text: str) -> list[str]:
    lines = [_COUNTERS.sub("", ln) for ln in text.splitlines() if not ln.startswith("#")]
    return [ln.replace(" [0:0]", "") for ln in lines]


def _drop_empty_chains(lines: list[str]) -> list[str]:
    """kube-proxy (nftables) flushes the chains of a deleted Service at once but deletes them only at a
    later full sync; an empty chain cannot affect a packet, so it does not count as a difference."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("chain ") and ln.endswith("{"):
            j = i + 1
            while j < len(lines) and lines[j] != "}":
                j += 1
            body = [b for b in lines[i + 1 : j] if b]
            if body:
                out.extend([ln, *body, "}"])
            i = j + 1
            continue
        out.append(ln)
        i += 1
    return out


def _changed_keys(before: dict[bytes, tuple[bytes, int]], after: dict[bytes, tuple[bytes, int]]) -> list[str]:
    """Keys added, removed or rewritten between two reads, heartbeat keys (leases, events) aside."""

    def revisions(snap: dict[bytes, tuple[bytes, int]]) -> dict[str, int]:
        out = {}
        for key, (_, rev) in snap.items():
            k = key.decode(errors="replace")
            if not k.startswith(_NO_RESTORE + _SKIP):
                out[k] = rev
        return out

    a, b = revisions(before), revisions(after)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _settled(cluster: Cluster, timeout: float) -> dict[bytes, bytes]:
    """Read etcd until non-heartbeat keys stop changing (two reads :data:`SETTLE_GAP` s apart agree).

    Raises ProviderError naming the keys still changing when etcd does not settle within ``timeout``:
    a baseline taken while controllers still write would make every later reset restore a moving target.
    """
    last = [_read_etcd(cluster)]

    def probe() -> str | None:
        cur = _read_etcd(cluster)
        changed = _changed_keys(last[0], cur)
        last[0] = cur
        if not changed:
            return None
        shown = ", ".join(changed[:5]) + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
        return f"{len(changed)} keys changed within {SETTLE_GAP:g}s: {shown}"

    time.sleep(SETTLE_GAP)
    wait_until(
        f"etcd of cluster {cluster.name!r} to settle before its pristine capture",
        probe,
        timeout=timeout,
        error=ProviderError,
        interval=SETTLE_GAP,
        max_interval=SETTLE_GAP,
    )
    return {k: v for k, (v, _) in last[0].items()}


def capture_pristine(cluster: Cluster, directory: Path, *, ip6: bool, settle_timeout: float = 10.0) -> None:
    """Write ``pristine.json`` into the cluster's state ``directory`` (``ip6``: the cluster has IPv6)."""
    etcd = _settled(cluster, settle_timeout)
    rules = {n.name: rules_text(n.exec, cluster.proxy_mode, ip6=ip6) for n in cluster.nodes}
    _cache[cluster.name] = (etcd, rules)
    data = {
        "etcd": {base64.b64encode(k).decode(): base64.b64encode(v).decode() for k, v in etcd.items()},
        "rules": rules,
    }
    atomic_write_text(directory / PRISTINE_FILE, json.dumps(data))


def load_pristine(cluster: Cluster, directory: Path) -> tuple[dict[bytes, bytes], dict[str, list[str]]]:
    """(etcd keys and values, each node's sorted rule lines) captured at create (cached per cluster)."""
    if cluster.name in _cache:
        return _cache[cluster.name]
    path = directory / PRISTINE_FILE
    try:
        data = json.loads(path.read_text())
        etcd = {base64.b64decode(k): base64.b64decode(v) for k, v in data["etcd"].items()}
        rules = {str(k): [str(x) for x in v] for k, v in data["rules"].items()}
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise ProviderError(
            f"{path}: pristine capture of cluster {cluster.name!r} unreadable ({type(exc).__name__}: {exc}); "
            "recreate the cluster"
        ) from exc
    _cache[cluster.name] = (etcd, rules)
    return etcd, rules


def restore_etcd(cluster: Cluster, pristine: dict[bytes, bytes]) -> int:
    """One restore pass; returns the number of keys written or deleted."""
    from pytest_k8sstate.etcd.client import EtcdClient

    current = _read_etcd(cluster)
    deletes: list[bytes] = []
    puts: list[tuple[str | bytes, bytes]] = []
    for key, (value, _) in current.items():
        k = key.decode(errors="replace")
        if k.startswith(_SKIP):
            continue
        if key not in pristine:
            deletes.append(key)
        elif pristine[key] != value and not k.startswith(_NO_RESTORE):
            puts.append((key, pristine[key]))
    for key, value in pristine.items():
        k = key.decode(errors="replace")
        if key not in current and not k.startswith(_SKIP + _NO_RESTORE):
            puts.append((key, value))
    if not deletes and not puts:
        return 0
    assert cluster.etcd is not None
    with EtcdClient(cluster.etcd, timeout=10) as client:
        for key in deletes:
            client.delete(key)
        if puts:
            client.put_many(puts)
    return len(deletes) + len(puts)


def restore_all(cluster: Cluster, etcd: dict[bytes, bytes]) -> int:
    """Restore etcd to ``etcd``, again while controllers react to the restore (5 passes at most); returns
    the number of passes."""
    passes = 1
    if restore_etcd(cluster, etcd):
        time.sleep(0.05)
        while restore_etcd(cluster, etcd) and passes < 5:
            passes += 1
            time.sleep(0.05)
    return passes


def wait_each_node(
    cluster: Cluster,
    what: str,
    differs: Callable[[NodeInfo], str | None],
    *,
    deadline: float,
    details: Callable[[], str],
) -> None:
    """Wait until ``differs(node)`` is None for every node (each node is checked until it matches once);
    ProviderError at ``deadline`` with the last reason and ``details``."""
    pending = {n.name: n for n in cluster.nodes}

    def probe() -> str | None:
        why = None
        for name, node in list(pending.items()):
            reason = differs(node)
            if reason is None:
                pending.pop(name)
            else:
                why = reason
        if not pending:
            return None
        return why or f"nodes {', '.join(pending)} not checked yet"

    wait_until(what, probe, deadline=deadline, error=ProviderError, max_interval=0.2, details=details)


def wait_rules(cluster: Cluster, rules: dict[str, list[str]], *, ip6: bool, deadline: float) -> None:
    """Wait until every node's kube-proxy rules equal its pristine ``rules`` (ProviderError at ``deadline``
    naming the node and a few differing lines)."""

    def differs(node: NodeInfo) -> str | None:
        try:
            now = rules_text(node.exec, cluster.proxy_mode, ip6=ip6)
        except CommandError as exc:
            return str(exc)
        want = rules.get(node.name)
        if want is None or now == want:
            return None
        extra = sorted(set(now) - set(want))[:3]
        missing = sorted(set(want) - set(now))[:3]
        return f"node {node.name}: rules differ (extra {extra}, missing {missing})"

    wait_each_node(
        cluster,
        f"kube-proxy rules of cluster {cluster.name!r} to return to the pristine state (reset)",
        differs,
        deadline=deadline,
        details=lambda: (
            "rules changed outside kube-proxy are not restored — recreate the cluster "
            f"(`k8sstate cluster delete --name {cluster.name}`)"
        ),
    )


def reset_cluster(cluster: Cluster, directory: Path, *, ip6: bool, timeout: float = 30.0) -> dict[str, float]:
    """Restore the pristine state (see module doc); returns timings in seconds."""
    t0 = time.monotonic()
    etcd, rules = load_pristine(cluster, directory)
    passes = restore_all(cluster, etcd)
    t_etcd = time.monotonic() - t0
    wait_rules(cluster, rules, ip6=ip6, deadline=t0 + timeout)
    return {"etcd": t_etcd, "total": time.monotonic() - t0, "passes": float(passes)}
