"""API discovery (dynamic client): the resource of an apiVersion + kind; a kind from its kubectl name."""

from __future__ import annotations

import builtins
from typing import Any

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.k8s.api import api_error, api_failures
from pytest_k8sstate.k8s.manifests import BUILTIN_KINDS

__all__ = ["discover_kind", "find_resource"]


def find_resource(dynamic: Any, api_version: str, kind: str) -> Any:
    """The dynamic client's resource for ``kind`` in ``api_version``; K8sStateError when there is none."""
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    try:
        return dynamic.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError:
        raise K8sStateError(
            f"the API server has no resource {kind} in {api_version}; is the CRD installed?"
        ) from None
    except api_failures() as exc:
        raise api_error(exc, f"discovering {api_version} {kind}") from None


def discover_kind(dynamic: Any, kind: str) -> tuple[str, str]:
    """(apiVersion, Kind) of a kubectl-style name (kind, plural, singular or short name) the server serves."""
    lowered = kind.lower()
    try:
        for entry in dynamic.resources:
            for res in entry if isinstance(entry, builtins.list) else [entry]:
                name = str(getattr(res, "name", "") or "")
                if not name or "/" in name or str(getattr(res, "kind", "")).endswith("List"):
                    continue
                names = {
                    str(res.kind).lower(),
                    name.lower(),
                    str(getattr(res, "singular_name", "")).lower(),
                }
                names.update(s.lower() for s in (getattr(res, "short_names", None) or []))
                if lowered in names:
                    return str(res.group_version), str(res.kind)
    except api_failures() as exc:
        raise api_error(exc, f"discovering kind {kind!r}") from None
    known = ", ".join(sorted({k for k, _ in BUILTIN_KINDS.values()}))
    raise K8sStateError(f"unknown kind {kind!r}; known kinds include {known}")
