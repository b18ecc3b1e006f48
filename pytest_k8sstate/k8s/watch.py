"""Watching objects: a bounded stream of :class:`WatchEvent`, resumed across 410 Gone and server timeouts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.k8s.api import api_error, api_failures

__all__ = ["WatchEvent", "follow"]


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ``type`` ADDED/MODIFIED/DELETED, the object, and when it arrived (monotonic)."""

    type: str
    kind: str
    namespace: str | None
    name: str
    object: dict[str, Any] = field(repr=False, compare=False)
    at: float = field(compare=False, default=0.0)


def follow(
    dynamic: Any,
    resource: Any,
    *,
    kind: str,
    namespace: str | None,
    selector: str | None,
    resource_version: str,
    until: Callable[[list[WatchEvent]], bool] | None,
    timeout: float,
) -> list[WatchEvent]:
    """Events of ``resource`` from ``resource_version`` on, until ``until(events)`` or ``timeout``.

    With ``until``: K8sStateError when it is not true within ``timeout``. Without: the events of
    ``timeout`` seconds.
    """
    from kubernetes import watch as k8s_watch

    rv = resource_version
    events: list[WatchEvent] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        watcher = k8s_watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for raw in dynamic.watch(
                resource,
                namespace=namespace,
                label_selector=selector,
                resource_version=rv or None,
                timeout=max(1, math.ceil(remaining)),
                watcher=watcher,
            ):
                obj = raw.get("raw_object") or {}
                meta = obj.get("metadata") or {}
                if raw.get("type") == "BOOKMARK":
                    rv = str(meta.get("resourceVersion") or rv)
                    continue
                if raw.get("type") == "ERROR":
                    # 410 Gone: restart from "now" (events in between are lost; say so in the result)
                    rv = ""
                    break
                rv = str(meta.get("resourceVersion") or rv)
                events.append(
                    WatchEvent(
                        type=str(raw.get("type")),
                        kind=str(obj.get("kind") or resource.kind),
                        namespace=meta.get("namespace"),
                        name=str(meta.get("name")),
                        object=obj,
                        at=time.monotonic(),
                    )
                )
                if until is not None and until(events):
                    return events
                if time.monotonic() >= deadline:
                    break
        except api_failures() as exc:
            raise api_error(exc, f"watching {kind}") from exc
        finally:
            watcher.stop()  # type: ignore[no-untyped-call]
    if until is not None:
        summary = ", ".join(f"{e.type} {e.name}" for e in events[-10:]) or "no events"
        raise K8sStateError(
            f"watch of {kind} ({selector or 'all'}): condition not met after {timeout:g}s; "
            f"{len(events)} events, last: {summary}"
        )
    return events
