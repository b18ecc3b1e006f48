"""Manifests and object references: parse (multi-document) YAML/JSON, load files, resolve ``kind/name``.

References are ``kind/name`` strings as kubectl spells them: ``pod/web``, ``svc/web``,
``deployment/web``, ``ds/kube-proxy``, ``node/worker-1``, ``endpointslice/web-abc``; built-in kinds and
their short names are in :data:`BUILTIN_KINDS` (others are found through API discovery).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pytest_k8sstate.errors import K8sStateError, ParseError

__all__ = [
    "BUILTIN_KINDS",
    "ObjectRef",
    "check_object",
    "load_manifests",
    "looks_like_ref",
    "parse_manifests",
    "parse_ref",
]

# kubectl-style names and short names of built-in kinds -> (apiVersion, Kind)
BUILTIN_KINDS: dict[str, tuple[str, str]] = {}


def _register(api_version: str, kind: str, *aliases: str) -> None:
    for alias in (kind.lower(), kind.lower() + "s", *aliases):
        BUILTIN_KINDS[alias] = (api_version, kind)


_register("v1", "Pod", "po")
_register("v1", "Service", "svc")
_register("v1", "Endpoints", "ep")
_register("v1", "Node", "no")
_register("v1", "Namespace", "ns")
_register("v1", "ConfigMap", "cm")
_register("v1", "Secret")
_register("v1", "ServiceAccount", "sa")
_register("v1", "Event", "ev")
_register("v1", "PersistentVolumeClaim", "pvc")
_register("v1", "PersistentVolume", "pv")
_register("v1", "ReplicationController", "rc")
_register("apps/v1", "Deployment", "deploy")
_register("apps/v1", "ReplicaSet", "rs")
_register("apps/v1", "DaemonSet", "ds")
_register("apps/v1", "StatefulSet", "sts")
_register("batch/v1", "Job")
_register("batch/v1", "CronJob", "cj")
_register("discovery.k8s.io/v1", "EndpointSlice")
_register("coordination.k8s.io/v1", "Lease")
_register("networking.k8s.io/v1", "Ingress", "ing", "ingresses")
_register("networking.k8s.io/v1", "NetworkPolicy", "netpol", "networkpolicies")
_register("networking.k8s.io/v1", "IPAddress", "ipaddresses")
_register("networking.k8s.io/v1", "ServiceCIDR", "servicecidrs")
_register("rbac.authorization.k8s.io/v1", "Role")
_register("rbac.authorization.k8s.io/v1", "RoleBinding")
_register("rbac.authorization.k8s.io/v1", "ClusterRole")
_register("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")
_register("apiextensions.k8s.io/v1", "CustomResourceDefinition", "crd")
_register("policy/v1", "PodDisruptionBudget", "pdb")


@dataclass(frozen=True)
class ObjectRef:
    """``kind/name`` as the user wrote it (``kind`` lower-cased, no group)."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def parse_ref(ref: str) -> ObjectRef:
    """``"pod/web"`` → ``ObjectRef("pod", "web")``; ``"deployment.apps/web"`` keeps ``deployment``."""
    kind, sep, name = ref.strip().partition("/")
    if not sep or not kind or not name or "/" in name:
        raise K8sStateError(f"object reference {ref!r}: expected KIND/NAME, e.g. pod/web or svc/web")
    return ObjectRef(kind.split(".", 1)[0].lower(), name)


def _line_of(text: str, doc_index: int) -> int:
    """1-based line where YAML document ``doc_index`` starts (best effort, for messages)."""
    line = 1
    seen = 0
    for i, raw in enumerate(text.splitlines(), start=1):
        if raw.startswith("---"):
            if seen == doc_index:
                return line
            seen += 1
            line = i + 1
    return line


def parse_manifests(text: str, source: str = "<manifest>") -> list[dict[str, Any]]:
    """Objects of a (multi-document) YAML or JSON manifest; ``kind: List`` is expanded.

    Raises :class:`ParseError` naming ``source`` and the line for malformed YAML or a document
    without apiVersion/kind/metadata.name.
    """
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ParseError(source, line, "valid YAML", str(getattr(exc, "problem", exc))) from None
    objects: list[dict[str, Any]] = []
    index = -1
    for doc in docs:
        index += 1
        if doc is None:
            continue
        line = _line_of(text, index)
        if not isinstance(doc, dict):
            raise ParseError(source, line, "a mapping with apiVersion, kind and metadata", type(doc).__name__)
        if doc.get("kind") == "List" or (str(doc.get("kind", "")).endswith("List") and "items" in doc):
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise ParseError(source, line, "items: a list of objects", type(items).__name__)
            docs_in_list = [check_object(item, source, line) for item in items]
            objects.extend(docs_in_list)
            continue
        objects.append(check_object(doc, source, line))
    return objects


def check_object(doc: Any, source: str, line: int) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ParseError(source, line, "an object mapping", type(doc).__name__)
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ParseError(source, line, f"a string field {key!r}", repr(doc.get(key)))
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ParseError(source, line, f"metadata.name in the {doc['kind']} object", repr(meta))
    return doc


def load_manifests(
    source: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]], manifests_dir: Path
) -> list[dict[str, Any]]:
    """Objects of ``source``: a dict, a list of dicts, YAML text, or a path to a file or directory.

    A relative path is looked up under ``manifests_dir`` first, then the current directory; a directory
    contributes every ``*.yaml``/``*.yml``/``*.json`` in it, in name order.
    """
    if isinstance(source, Mapping):
        return [check_object(dict(source), "<dict>", 1)]
    if isinstance(source, Sequence) and not isinstance(source, str):
        return [check_object(dict(doc), "<list>", i + 1) for i, doc in enumerate(source)]
    if isinstance(source, Path) or (
        "\n" not in source and not source.lstrip().startswith(("{", "apiVersion"))
    ):
        path = _find(Path(source), manifests_dir)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
            objects: list[dict[str, Any]] = []
            for f in files:
                objects.extend(parse_manifests(f.read_text(encoding="utf-8"), str(f)))
            return objects
        return parse_manifests(path.read_text(encoding="utf-8"), str(path))
    return parse_manifests(source, "<yaml string>")


def _find(path: Path, manifests_dir: Path) -> Path:
    path = path.expanduser()
    candidates = [path] if path.is_absolute() else [manifests_dir / path, Path.cwd() / path]
    for c in candidates:
        if c.exists():
            return c
    raise K8sStateError(
        f"manifest {str(path)!r} not found (looked in {', '.join(str(c) for c in candidates)}); "
        "pass an absolute path, a path under manifests/, a dict or a YAML string"
    )


def looks_like_ref(text: str) -> bool:
    """Whether ``text`` is a ``kind/name`` reference rather than a manifest path or YAML."""
    if "\n" in text or text.count("/") != 1 or text.endswith((".yaml", ".yml", ".json")):
        return False
    return not Path(text).exists()
