"""Readiness of Kubernetes objects: whether a pod, rollout, node, job … is ready, and why not in one line."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["describe_conditions", "ready", "ready_addresses"]


def _conditions(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conds if isinstance(c, dict)}


def _condition_true(obj: Mapping[str, Any], kind: str) -> bool:
    return str(_conditions(obj).get(kind, {}).get("status")) == "True"


def describe_conditions(obj: Mapping[str, Any]) -> str:
    parts = []
    for c in _conditions(obj).values():
        text = f"{c.get('type')}={c.get('status')}"
        detail = ": ".join(str(x) for x in (c.get("reason"), c.get("message")) if x)
        if detail and c.get("status") != "True":
            text += f" ({detail[:160]})"
        parts.append(text)
    return ", ".join(parts) or "none"


def ready(kind: str, obj: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether ``obj`` of ``kind`` is ready, and a one-line description of its state."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False, "being deleted"
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    fresh = generation is None or (observed is not None and observed >= generation)
    if kind == "Pod":
        phase = status.get("phase")
        ok = phase == "Running" and _condition_true(obj, "Ready")
        return ok, f"phase={phase}, conditions={describe_conditions(obj)}"
    if kind == "Node":
        return _condition_true(obj, "Ready"), f"conditions={describe_conditions(obj)}"
    if kind in ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"):
        want = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0) or 0
        updated = status.get(
            "updatedReplicas", ready if kind in ("ReplicaSet", "ReplicationController") else 0
        )
        total = status.get("replicas", 0) or 0
        ok = fresh and ready == want and (updated or 0) == want and total == want
        if kind == "Deployment":
            ok = ok and (status.get("availableReplicas", 0) or 0) == want
        return ok, (
            f"replicas={total}/{want} ready={ready} updated={updated} "
            f"observedGeneration={observed}/{generation}"
        )
    if kind == "DaemonSet":
        desired = status.get("desiredNumberScheduled")
        ready = status.get("numberReady", 0) or 0
        updated = status.get("updatedNumberScheduled", 0) or 0
        ok = fresh and desired is not None and ready == desired and updated == desired
        return (
            ok,
            f"desired={desired} ready={ready} updated={updated} observedGeneration={observed}/{generation}",
        )
    if kind == "Job":
        ok = _condition_true(obj, "Complete")
        return ok, f"succeeded={status.get('succeeded', 0)}, conditions={describe_conditions(obj)}"
    if kind == "Namespace":
        return status.get("phase") == "Active", f"phase={status.get('phase')}"
    return True, "exists"


def ready_addresses(slices: Iterable[Mapping[str, Any]]) -> list[str]:
    """IPs of the ready endpoints in EndpointSlices (not ``ready: false``; sorted, unique)."""
    ips: set[str] = set()
    for sl in slices:
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            addresses = ep.get("addresses") or []
            if addresses:
                ips.add(str(addresses[0]))
    return sorted(ips, key=_ip_sort_key)


def _ip_sort_key(ip: str) -> tuple[int, ...] | tuple[int, str]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (99, ip)
    return (addr.version, int(addr))
