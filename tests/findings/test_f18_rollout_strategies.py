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


def _rollout(k8s_api, name: str):
    doc = load_manifest(f"18-{name.removeprefix('f18-')}.yaml")[0]
    k8s_api.apply(doc)
    k8s_api.wait_ready(f"deployment/{name}")
    pods = k8s_api.list("pod", f"app={name}")
    old_hash = pods[0]["metadata"]["labels"]["pod-template-hash"]
    doc["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "VERSION", "value": "v2"}]

    def done(events) -> bool:
        t = _timeline(events, old_hash)
        return sum(1 for k, _ in t if k == "new") == 3 and sum(1 for k, _ in t if k == "old-gone") == 3

    events = k8s_api.watch_events(
        "pod", f"app={name}", action=lambda: k8s_api.apply(doc), until=done, timeout=90
    )
    return _timeline(events, old_hash)


@pytest.mark.k8sstate_finding(
    18, "rollout: maxSurge 100%/maxUnavailable 0 adds new pods first; 0/1 removes an old pod first"
)
def test_finding_18_rollout_strategies(k8s_cluster, k8s_api):
    """Seed 002, section 'Deployment | task with *': "Blue-green deployment: 1. deploying three new pods;
    2. deleting three old pods" with ``maxSurge: 100%, maxUnavailable: 0``; "Reverse Rolling Update:
    1. deleting one old pod; 2. creating one new pod; 3. …" with ``maxSurge: 0, maxUnavailable: 1``.

    Checked by watching the pods of a 3-replica Deployment while its template changes: with maxSurge 100% /
    maxUnavailable 0 all three new pods appear before the first old pod starts terminating; with
    maxSurge 0 / maxUnavailable 1 the first event is an old pod terminating, before any new pod appears,
    and old and new pods alternate so that at most 3 pods are ever alive.
    """
    surge = _rollout(k8s_api, "f18-surge")
    first_gone = next(i for i, (kind, _) in enumerate(surge) if kind == "old-gone")
    assert [k for k, _ in surge[:first_gone]] == ["new", "new", "new"], surge

    reverse = _rollout(k8s_api, "f18-reverse")
    assert reverse[0][0] == "old-gone", reverse
    alive = 3
    for kind, _ in reverse:
        alive += 1 if kind == "new" else -1
        assert alive <= 3, reverse
