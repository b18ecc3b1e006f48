"""Finding 18: maxSurge/maxUnavailable decide whether new pods come before old pods go."""

from __future__ import annotations

import pytest

from .helpers import load_manifest


def _timeline(events, old_hash: str) -> list[tuple[str, str]]:
    """('new', pod) when a pod of the new ReplicaSet appears, ('old-gone', pod) when an old pod starts
    terminating or disappears — each pod once, in watch order."""
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []
    for ev in events:
        meta = ev.object.get("metadata") or {}
        pod_hash = (meta.get("labels") or {}).get("pod-template-hash")
        if pod_hash == old_hash:
            if ev.type == "DELETED" or meta.get("deletionTimestamp"):
                item = ("old-gone", ev.name)
            else:
                continue
        elif ev.type in ("ADDED", "MODIFIED"):
            item = ("new", ev.name)
        else:
            continue
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _replicas(events, old_hash: str) -> list[tuple[int, int]]:
    """(old, new) ``spec.replicas`` of the two ReplicaSets after each change, in watch order, starting
    from (3, 0)."""
    old, new = 3, 0
    out = [(old, new)]
    for ev in events:
        meta = ev.object.get("metadata") or {}
        count = 0 if ev.type == "DELETED" else int((ev.object.get("spec") or {}).get("replicas") or 0)
        if (meta.get("labels") or {}).get("pod-template-hash") == old_hash:
            old = count
        else:
            new = count
        if out[-1] != (old, new):
            out.append((old, new))
    return out


def _rollout(k8s_api, name: str, kind: str, done):
    """Apply the Deployment ``name``, wait until it is ready, change its template and watch ``kind``
    objects of the Deployment until ``done(events, old_hash)``; returns (events, old_hash)."""
    doc = load_manifest(f"18-{name.removeprefix('f18-')}.yaml")[0]
    k8s_api.apply(doc)
    k8s_api.wait_ready(f"deployment/{name}")
    pods = k8s_api.list("pod", f"app={name}")
    old_hash = pods[0]["metadata"]["labels"]["pod-template-hash"]
    doc["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "VERSION", "value": "v2"}]
    events = k8s_api.watch_events(
        kind,
        f"app={name}",
        action=lambda: k8s_api.apply(doc),
        until=lambda events: done(events, old_hash),
        timeout=90,
    )
    return events, old_hash


def _pods_replaced(events, old_hash: str) -> bool:
    t = _timeline(events, old_hash)
    return sum(1 for k, _ in t if k == "new") == 3 and sum(1 for k, _ in t if k == "old-gone") == 3


@pytest.mark.k8sstate_finding(
    18, "rollout: maxSurge 100%/maxUnavailable 0 adds new pods first; 0/1 removes an old pod first"
)
def test_finding_18_rollout_strategies(k8s_cluster, k8s_api):
    """Seed 002, section 'Deployment | task with *': "Blue-green deployment: 1. deploying three new pods;
    2. deleting three old pods" with ``maxSurge: 100%, maxUnavailable: 0``; "Reverse Rolling Update:
    1. deleting one old pod; 2. creating one new pod; 3. …" with ``maxSurge: 0, maxUnavailable: 1``.

    maxSurge 100% / maxUnavailable 0, watched on the pods: all three new pods appear before the first old
    pod starts terminating (the old ReplicaSet is scaled down only once new pods are available, so this
    order is fixed).

    maxSurge 0 / maxUnavailable 1, watched on the ReplicaSets: the first change scales the old
    ReplicaSet down (3, 0) → (2, 0) before the new one gets any replica, the two alternate, and old + new
    ``spec.replicas`` never exceed 3. This is the deployment controller's decision; on the pods it cannot
    be checked step by step: the old ReplicaSet's pod deletion and the new ReplicaSet's pod creation are
    two ReplicaSet syncs that run in parallel, and a new pod was once seen before the old one it replaces
    started terminating (4 pods for a moment).
    """
    surge_events, surge_hash = _rollout(k8s_api, "f18-surge", "pod", _pods_replaced)
    surge = _timeline(surge_events, surge_hash)
    first_gone = next(i for i, (kind, _) in enumerate(surge) if kind == "old-gone")
    assert [k for k, _ in surge[:first_gone]] == ["new", "new", "new"], surge

    reverse_events, reverse_hash = _rollout(
        k8s_api, "f18-reverse", "replicaset", lambda ev, h: _replicas(ev, h)[-1] == (0, 3)
    )
    reverse = _replicas(reverse_events, reverse_hash)
    assert reverse[1] == (2, 0), reverse
    assert all(old + new <= 3 for old, new in reverse), reverse
    assert [old for old, _ in reverse] == sorted((old for old, _ in reverse), reverse=True), reverse
    assert [new for _, new in reverse] == sorted(new for _, new in reverse), reverse
