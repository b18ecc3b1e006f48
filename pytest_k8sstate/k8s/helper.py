"""``K8sHelper``: apply manifests, wait for readiness, read pod IPs — bounded, with clear errors.

Built on the official ``kubernetes`` client's dynamic client; ``apply`` is server-side apply
(PATCH ``application/apply-patch+yaml``). Every wait has a deadline (tenacity) and fails with a
:class:`~pytest_k8sstate.errors.K8sStateError` saying what was not ready and why, e.g.
``pod/web not Ready after 60s: phase=Pending, conditions=PodScheduled=False (Unschedulable: ...)``.

References are ``kind/name`` strings as kubectl spells them: ``pod/web``, ``svc/web``,
``deployment/web``, ``ds/kube-proxy``, ``node/worker-1``, ``endpointslice/web-abc``.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_exponential

from pytest_k8sstate.errors import K8sStateError, ParseError

__all__ = ["K8sHelper", "ObjectRef", "WatchEvent", "parse_manifests", "parse_ref", "pod_ip"]

FIELD_MANAGER = "pytest-k8sstate"
DEFAULT_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0

# kubectl-style names and short names of built-in kinds -> (apiVersion, Kind)
_BUILTIN: dict[str, tuple[str, str]] = {}


def _register(api_version: str, kind: str, *aliases: str) -> None:
    for alias in (kind.lower(), kind.lower() + "s", *aliases):
        _BUILTIN[alias] = (api_version, kind)


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
            docs_in_list = [_check_object(item, source, line) for item in items]
            objects.extend(docs_in_list)
            continue
        objects.append(_check_object(doc, source, line))
    return objects


def _check_object(doc: Any, source: str, line: int) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ParseError(source, line, "an object mapping", type(doc).__name__)
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ParseError(source, line, f"a string field {key!r}", repr(doc.get(key)))
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ParseError(source, line, f"metadata.name in the {doc['kind']} object", repr(meta))
    return doc


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ``type`` ADDED/MODIFIED/DELETED, the object, and when it arrived (monotonic)."""

    type: str
    kind: str
    namespace: str | None
    name: str
    object: dict[str, Any] = field(repr=False, compare=False)
    at: float = field(compare=False, default=0.0)


@dataclass(frozen=True)
class _Applied:
    api_version: str
    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


def _api_error(exc: BaseException, what: str) -> K8sStateError:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message = ""
    if isinstance(body, (bytes, str)):
        with contextlib.suppress(ValueError, TypeError):
            message = str(json.loads(body).get("message", ""))
    if not message:
        message = str(getattr(exc, "summary", lambda: "")() if hasattr(exc, "summary") else "") or str(exc)
        message = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    if status is None:
        return K8sStateError(f"{what}: cannot reach the API server: {message}")
    return K8sStateError(f"{what}: HTTP {status}: {message}")


def _is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "status", None) == 404


def _conditions(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conds if isinstance(c, dict)}


def _condition_true(obj: Mapping[str, Any], kind: str) -> bool:
    return str(_conditions(obj).get(kind, {}).get("status")) == "True"


def _describe_conditions(obj: Mapping[str, Any]) -> str:
    parts = []
    for c in _conditions(obj).values():
        text = f"{c.get('type')}={c.get('status')}"
        detail = ": ".join(str(x) for x in (c.get("reason"), c.get("message")) if x)
        if detail and c.get("status") != "True":
            text += f" ({detail[:160]})"
        parts.append(text)
    return ", ".join(parts) or "none"


def _ready(kind: str, obj: Mapping[str, Any]) -> tuple[bool, str]:
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
        return ok, f"phase={phase}, conditions={_describe_conditions(obj)}"
    if kind == "Node":
        return _condition_true(obj, "Ready"), f"conditions={_describe_conditions(obj)}"
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
        return ok, f"succeeded={status.get('succeeded', 0)}, conditions={_describe_conditions(obj)}"
    if kind == "Namespace":
        return status.get("phase") == "Active", f"phase={status.get('phase')}"
    return True, "exists"


class K8sHelper:
    """Apply, wait, inspect — on one cluster through ``api_client`` (a ``kubernetes.client.ApiClient``).

    ``manifests_dir``: where relative manifest paths are looked up first (then the current directory).
    Objects applied through the helper are remembered; :meth:`cleanup` deletes them (the ``k8s``
    fixture does so after each test). ``dynamic``: reuse another helper's ``DynamicClient`` (and its
    API discovery) instead of discovering again.
    """

    def __init__(
        self,
        api_client: Any,
        namespace: str = "default",
        *,
        cluster: Any = None,
        manifests_dir: str | Path | None = None,
        field_manager: str = FIELD_MANAGER,
        timeout: float = DEFAULT_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        dynamic: Any = None,
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.cluster = cluster
        self.manifests_dir = Path(manifests_dir) if manifests_dir is not None else Path("manifests")
        self.field_manager = field_manager
        self.timeout = timeout
        self.request_timeout = request_timeout
        self._dynamic: Any = dynamic  # a shared DynamicClient (its discovery cache) when given
        self._resources: dict[tuple[str, str], Any] = {}
        self._applied: builtins.list[_Applied] = []
        self._cache_dir: str | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # plumbing ---------------------------------------------------------------------------------------------
    @property
    def dynamic(self) -> Any:
        """The ``kubernetes.dynamic.DynamicClient`` (discovery cached in a private temp dir)."""
        if self._dynamic is None:
            from kubernetes.dynamic import DynamicClient

            self._cache_dir = tempfile.mkdtemp(prefix="k8sstate-discovery-")
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._cache_dir, True)
            try:
                self._dynamic = DynamicClient(  # type: ignore[no-untyped-call]
                    self.api_client, cache_file=str(Path(self._cache_dir) / "discovery.json")
                )
            except Exception as exc:
                raise _api_error(exc, f"connecting to {self._host()}") from exc
        return self._dynamic

    def _host(self) -> str:
        return str(getattr(getattr(self.api_client, "configuration", None), "host", "the API server"))

    def close(self) -> None:
        """Forget the dynamic client and remove its discovery cache."""
        self._dynamic = None
        if self._finalizer is not None:
            self._finalizer()

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._resources:
            from kubernetes.dynamic.exceptions import ResourceNotFoundError

            try:
                self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                raise K8sStateError(
                    f"the API server has no resource {kind} in {api_version}; is the CRD installed?"
                ) from None
            except K8sStateError:
                raise
            except Exception as exc:
                raise _api_error(exc, f"discovering {api_version} {kind}") from exc
        return self._resources[key]

    def _kind(self, kind: str) -> tuple[str, str]:
        """(apiVersion, Kind) for a kubectl-style kind name."""
        lowered = kind.lower()
        if lowered in _BUILTIN:
            return _BUILTIN[lowered]
        try:
            for entry in self.dynamic.resources:
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
        except K8sStateError:
            raise
        except Exception as exc:
            raise _api_error(exc, f"discovering kind {kind!r}") from exc
        known = ", ".join(sorted({k for k, _ in _BUILTIN.values()}))
        raise K8sStateError(f"unknown kind {kind!r}; known kinds include {known}")

    def _ns(self, resource: Any, namespace: str | None) -> str | None:
        return (namespace or self.namespace) if resource.namespaced else None

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            return fn(*args, **kwargs)
        except K8sStateError:
            raise
        except Exception as exc:
            raise _api_error(exc, what) from exc

    @staticmethod
    def _to_dict(obj: Any) -> dict[str, Any]:
        if isinstance(obj, dict):
            return obj
        to_dict = getattr(obj, "to_dict", None)
        if callable(to_dict):
            result: dict[str, Any] = to_dict()
            return result
        raise K8sStateError(f"unexpected API response type {type(obj).__name__}")

    # manifests --------------------------------------------------------------------------------------------
    def _load(
        self, source: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> builtins.list[dict[str, Any]]:
        if isinstance(source, Mapping):
            return [_check_object(dict(source), "<dict>", 1)]
        if isinstance(source, Sequence) and not isinstance(source, str):
            return [_check_object(dict(doc), "<list>", i + 1) for i, doc in enumerate(source)]
        if isinstance(source, Path) or (
            "\n" not in source and not source.lstrip().startswith(("{", "apiVersion"))
        ):
            path = self._find(Path(source))
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
                objects: builtins.list[dict[str, Any]] = []
                for f in files:
                    objects.extend(parse_manifests(f.read_text(encoding="utf-8"), str(f)))
                return objects
            return parse_manifests(path.read_text(encoding="utf-8"), str(path))
        return parse_manifests(source, "<yaml string>")

    def _find(self, path: Path) -> Path:
        path = path.expanduser()
        candidates = [path] if path.is_absolute() else [self.manifests_dir / path, Path.cwd() / path]
        for c in candidates:
            if c.exists():
                return c
        raise K8sStateError(
            f"manifest {str(path)!r} not found (looked in {', '.join(str(c) for c in candidates)}); "
            "pass an absolute path, a path under manifests/, a dict or a YAML string"
        )

    def apply(
        self,
        source: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Server-side apply every object of ``source`` (path, directory, dict, list of dicts, YAML text).

        Relative paths are resolved against ``manifests/`` then the current directory. Returns the
        objects as the API server stored them.
        """
        results = []
        for doc in self._load(source):
            resource = self._resource(doc["apiVersion"], doc["kind"])
            ns = self._ns(resource, doc["metadata"].get("namespace") or namespace)
            name = doc["metadata"]["name"]
            obj = self._call(
                f"applying {doc['kind'].lower()}/{name}",
                self.dynamic.server_side_apply,
                resource,
                body=doc,
                namespace=ns,
                field_manager=self.field_manager,
                force_conflicts=True,
            )
            applied = _Applied(doc["apiVersion"], doc["kind"], ns, name)
            if applied not in self._applied:
                self._applied.append(applied)
            results.append(self._to_dict(obj))
        return results

    # reading ----------------------------------------------------------------------------------------------
    def _ref(self, ref: str | ObjectRef) -> tuple[Any, ObjectRef, str]:
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        api_version, kind = self._kind(parsed.kind)
        return self._resource(api_version, kind), parsed, kind

    def try_get(self, ref: str | ObjectRef, *, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as a dict, or None when it does not exist."""
        resource, parsed, _ = self._ref(ref)
        try:
            obj = self.dynamic.get(
                resource,
                name=parsed.name,
                namespace=self._ns(resource, namespace),
                _request_timeout=self.request_timeout,
            )
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise _api_error(exc, f"reading {parsed}") from exc
        return self._to_dict(obj)

    def get(self, ref: str | ObjectRef, *, namespace: str | None = None) -> dict[str, Any]:
        """The object ``kind/name`` as a dict; K8sStateError when it does not exist."""
        obj = self.try_get(ref, namespace=namespace)
        if obj is None:
            resource, parsed, _ = self._ref(ref)
            where = f" in namespace {self._ns(resource, namespace)}" if resource.namespaced else ""
            raise K8sStateError(f"{parsed} not found{where}")
        return obj

    def exists(self, ref: str | ObjectRef, *, namespace: str | None = None) -> bool:
        return self.try_get(ref, namespace=namespace) is not None

    def list(
        self,
        kind: str,
        selector: str | Mapping[str, str] | None = None,
        *,
        namespace: str | None = None,
        all_namespaces: bool = False,
        field_selector: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Objects of ``kind`` (``pods``, ``svc``, ``endpointslice``…) matching a label ``selector``."""
        api_version, kind_name = self._kind(kind)
        resource = self._resource(api_version, kind_name)
        if isinstance(selector, Mapping):
            selector = ",".join(f"{k}={v}" for k, v in selector.items())
        ns = None if all_namespaces else self._ns(resource, namespace)
        result = self._call(
            f"listing {kind}",
            self.dynamic.get,
            resource,
            namespace=ns,
            label_selector=selector or None,
            field_selector=field_selector,
        )
        items: builtins.list[dict[str, Any]] = self._to_dict(result).get("items") or []
        return sorted(
            items, key=lambda o: ((o.get("metadata") or {}).get("namespace") or "", o["metadata"]["name"])
        )

    def cluster_ip(self, service: str, *, namespace: str | None = None) -> str:
        """``spec.clusterIP`` of ``svc/NAME`` (or plain ``NAME``)."""
        ref = service if "/" in service else f"svc/{service}"
        spec = self.get(ref, namespace=namespace).get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip:
            raise K8sStateError(f"{ref} has no clusterIP (type {spec.get('type')})")
        return str(ip)

    def nodes(self) -> builtins.list[str]:
        """Names of the cluster's nodes."""
        return [n["metadata"]["name"] for n in self.list("node")]

    # waiting ----------------------------------------------------------------------------------------------
    def wait_for(
        self,
        ref: str | ObjectRef,
        predicate: Callable[[dict[str, Any] | None], tuple[bool, str]],
        *,
        what: str,
        timeout: float | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any] | None:
        """Poll ``ref`` until ``predicate(obj_or_None)`` is ``(True, _)``; its state text goes in errors."""
        timeout = self.timeout if timeout is None else timeout
        last: builtins.list[Any] = [None, "not polled"]

        def attempt() -> bool:
            obj = self.try_get(ref, namespace=namespace)
            ok, state = predicate(obj)
            last[0], last[1] = obj, state
            return ok

        retrying = Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_exponential(multiplier=0.05, min=0.05, max=1.0),
            retry=retry_if_result(lambda ok: not ok),
        )
        try:
            retrying(attempt)
        except RetryError:
            raise K8sStateError(f"{ref} not {what} after {timeout:g}s: {last[1]}") from None
        result: dict[str, Any] | None = last[0]
        return result

    def wait_ready(
        self, ref: str | ObjectRef, *, timeout: float | None = None, namespace: str | None = None
    ) -> dict[str, Any]:
        """Wait until ``pod/…`` is Running+Ready, ``deployment/…`` rolled out, ``node/…`` Ready, etc."""
        _, _, kind = self._ref(ref)

        def check(obj: dict[str, Any] | None) -> tuple[bool, str]:
            if obj is None:
                return False, "does not exist"
            return _ready(kind, obj)

        obj = self.wait_for(ref, check, what="Ready", timeout=timeout, namespace=namespace)
        assert obj is not None
        return obj

    def wait_deleted(
        self, ref: str | ObjectRef, *, timeout: float | None = None, namespace: str | None = None
    ) -> None:
        """Wait until ``ref`` no longer exists."""

        def check(obj: dict[str, Any] | None) -> tuple[bool, str]:
            if obj is None:
                return True, "deleted"
            meta = obj.get("metadata") or {}
            fins = meta.get("finalizers") or []
            return (
                False,
                f"still exists (deletionTimestamp={meta.get('deletionTimestamp')}, finalizers={fins})",
            )

        self.wait_for(ref, check, what="deleted", timeout=timeout, namespace=namespace)

    def ready_endpoints(self, service: str, *, namespace: str | None = None) -> builtins.list[str]:
        """IPs of the ready endpoints of ``svc/NAME`` from its EndpointSlices (sorted, unique)."""
        name = parse_ref(service).name if "/" in service else service
        slices = self.list("endpointslice", {"kubernetes.io/service-name": name}, namespace=namespace)
        ips: set[str] = set()
        for sl in slices:
            for ep in sl.get("endpoints") or []:
                ready = (ep.get("conditions") or {}).get("ready")
                if ready is False:
                    continue
                addresses = ep.get("addresses") or []
                if addresses:
                    ips.add(str(addresses[0]))
        return sorted(ips, key=_ip_sort_key)

    def wait_endpoints(
        self,
        service: str,
        count: int | None = None,
        *,
        timeout: float | None = None,
        namespace: str | None = None,
    ) -> builtins.list[str]:
        """Wait until ``svc/NAME`` has ``count`` ready endpoints (default: at least one); return their IPs."""
        timeout = self.timeout if timeout is None else timeout
        last: builtins.list[builtins.list[str]] = [[]]

        def attempt() -> bool:
            last[0] = self.ready_endpoints(service, namespace=namespace)
            return len(last[0]) == count if count is not None else bool(last[0])

        retrying = Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_exponential(multiplier=0.05, min=0.05, max=1.0),
            retry=retry_if_result(lambda ok: not ok),
        )
        try:
            retrying(attempt)
        except RetryError:
            want = f"{count}" if count is not None else "at least 1"
            raise K8sStateError(
                f"{service} has {len(last[0])} ready endpoints after {timeout:g}s, expected {want}: "
                f"{', '.join(last[0]) or 'none'} (from its EndpointSlices)"
            ) from None
        return last[0]

    def pod_ips(
        self,
        selector_or_name: str | Mapping[str, str],
        *,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> builtins.list[str]:
        """Pod IPs of the pods matching a label selector (``app=web``) or of one pod (``web``, ``pod/web``).

        Waits (bounded) until at least one pod matches and every matching pod has an IP. Ordered by
        pod name.
        """
        if isinstance(selector_or_name, str) and not any(c in selector_or_name for c in "=,!()"):
            return [self.pod_ip(selector_or_name, namespace=namespace, timeout=timeout)]
        timeout = self.timeout if timeout is None else timeout
        last: builtins.list[builtins.list[dict[str, Any]]] = [[]]

        def attempt() -> bool:
            last[0] = self.list("pod", selector_or_name, namespace=namespace)
            return bool(last[0]) and all((p.get("status") or {}).get("podIP") for p in last[0])

        retrying = Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_exponential(multiplier=0.05, min=0.05, max=1.0),
            retry=retry_if_result(lambda ok: not ok),
        )
        try:
            retrying(attempt)
        except RetryError:
            pending = [p["metadata"]["name"] for p in last[0] if not (p.get("status") or {}).get("podIP")]
            detail = f"pods without IP: {', '.join(pending)}" if last[0] else "no pod matches"
            raise K8sStateError(f"pods {selector_or_name!r}: no IPs after {timeout:g}s: {detail}") from None
        return [str(p["status"]["podIP"]) for p in last[0]]

    def pod_ip(self, name: str, *, namespace: str | None = None, timeout: float | None = None) -> str:
        """``status.podIP`` of ``pod/NAME`` (waits, bounded, until it has one)."""
        ref = name if "/" in name else f"pod/{name}"

        def check(obj: dict[str, Any] | None) -> tuple[bool, str]:
            if obj is None:
                return False, "does not exist"
            status = obj.get("status") or {}
            return bool(status.get("podIP")), f"phase={status.get('phase')}, no podIP yet"

        obj = self.wait_for(ref, check, what="assigned an IP", timeout=timeout, namespace=namespace)
        assert obj is not None
        return str(obj["status"]["podIP"])

    # changing ---------------------------------------------------------------------------------------------
    def patch(
        self,
        ref: str | ObjectRef,
        body: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        patch_type: str = "strategic",
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """Patch ``ref``: ``patch_type`` strategic (default), merge, or json (a JSON-patch list)."""
        content_types = {
            "strategic": "application/strategic-merge-patch+json",
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
        }
        if patch_type not in content_types:
            raise K8sStateError(f"patch_type {patch_type!r}: expected one of {', '.join(content_types)}")
        resource, parsed, _ = self._ref(ref)
        obj = self._call(
            f"patching {parsed}",
            self.dynamic.patch,
            resource,
            body=body,
            name=parsed.name,
            namespace=self._ns(resource, namespace),
            content_type=content_types[patch_type],
        )
        return self._to_dict(obj)

    def scale(self, ref: str | ObjectRef, replicas: int, *, namespace: str | None = None) -> dict[str, Any]:
        """Set ``spec.replicas`` of a deployment/replicaset/statefulset."""
        return self.patch(ref, {"spec": {"replicas": int(replicas)}}, patch_type="merge", namespace=namespace)

    def delete(
        self,
        target: str | Path | ObjectRef | Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Delete ``kind/name`` or every object of a manifest (path, dict, YAML); absent objects are fine.

        With ``wait`` (default) return only once they are gone (bounded by ``timeout``).
        """
        refs: builtins.list[tuple[ObjectRef, str | None, tuple[str, str]]] = []
        if isinstance(target, ObjectRef) or (isinstance(target, str) and _looks_like_ref(target)):
            parsed = parse_ref(target) if isinstance(target, str) else target
            refs.append((parsed, namespace, self._kind(parsed.kind)))
        else:
            for doc in self._load(target):
                ref = ObjectRef(doc["kind"].lower(), doc["metadata"]["name"])
                ns = doc["metadata"].get("namespace") or namespace
                refs.append((ref, ns, (doc["apiVersion"], doc["kind"])))
        for ref, ns, (api_version, kind) in refs:
            resource = self._resource(api_version, kind)
            try:
                self.dynamic.delete(
                    resource,
                    name=ref.name,
                    namespace=self._ns(resource, ns),
                    _request_timeout=self.request_timeout,
                )
            except Exception as exc:
                if not _is_not_found(exc):
                    raise _api_error(exc, f"deleting {ref}") from exc
        if wait:
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            for ref, ns, (api_version, kind) in refs:
                remaining = max(0.1, deadline - time.monotonic())
                resource = self._resource(api_version, kind)
                self.wait_deleted(ref, timeout=remaining, namespace=self._ns(resource, ns))

    def cleanup(self, *, timeout: float = 30.0) -> builtins.list[str]:
        """Delete what :meth:`apply` created (newest first) and wait; returns problems, never raises."""
        problems: builtins.list[str] = []
        applied, self._applied = list(reversed(self._applied)), []
        deadline = time.monotonic() + timeout
        gone: builtins.list[_Applied] = []
        for item in applied:
            try:
                resource = self._resource(item.api_version, item.kind)
                self.dynamic.delete(
                    resource, name=item.name, namespace=item.namespace, _request_timeout=self.request_timeout
                )
                gone.append(item)
            except Exception as exc:
                if _is_not_found(exc):
                    continue
                problems.append(f"deleting {item} failed: {exc}")
        for item in gone:
            remaining = deadline - time.monotonic()
            try:
                self.wait_deleted(
                    ObjectRef(item.kind.lower(), item.name),
                    timeout=max(0.1, remaining),
                    namespace=item.namespace,
                )
            except K8sStateError as exc:
                problems.append(str(exc))
        return problems

    # watching ---------------------------------------------------------------------------------------------
    def watch_events(
        self,
        kind: str,
        selector: str | Mapping[str, str] | None = None,
        *,
        namespace: str | None = None,
        action: Callable[[], object] | None = None,
        until: Callable[[builtins.list[WatchEvent]], bool] | None = None,
        timeout: float = 30.0,
    ) -> builtins.list[WatchEvent]:
        """Watch ``kind`` objects (label ``selector``) and return the events, in order.

        The watch starts at the current resourceVersion, then ``action()`` runs (e.g. a rollout), so no
        event it causes is missed. Returns once ``until(events)`` is true — K8sStateError if it is not
        within ``timeout`` — or, without ``until``, after ``timeout`` seconds.
        """
        from kubernetes import watch as k8s_watch

        api_version, kind_name = self._kind(kind)
        resource = self._resource(api_version, kind_name)
        if isinstance(selector, Mapping):
            selector = ",".join(f"{k}={v}" for k, v in selector.items())
        ns = self._ns(resource, namespace)
        listed = self._call(
            f"listing {kind}", self.dynamic.get, resource, namespace=ns, label_selector=selector
        )
        rv = str(self._to_dict(listed).get("metadata", {}).get("resourceVersion") or "")
        if action is not None:
            action()
        events: builtins.list[WatchEvent] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            watcher = k8s_watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for raw in self.dynamic.watch(
                    resource,
                    namespace=ns,
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
                            kind=str(obj.get("kind") or kind_name),
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
            except K8sStateError:
                raise
            except Exception as exc:
                raise _api_error(exc, f"watching {kind}") from exc
            finally:
                watcher.stop()  # type: ignore[no-untyped-call]
        if until is not None:
            summary = ", ".join(f"{e.type} {e.name}" for e in events[-10:]) or "no events"
            raise K8sStateError(
                f"watch of {kind} ({selector or 'all'}): condition not met after {timeout:g}s; "
                f"{len(events)} events, last: {summary}"
            )
        return events


def _looks_like_ref(text: str) -> bool:
    if "\n" in text or text.count("/") != 1 or text.endswith((".yaml", ".yml", ".json")):
        return False
    return not Path(text).exists()


def _ip_sort_key(ip: str) -> tuple[int, ...] | tuple[int, str]:
    import ipaddress

    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (99, ip)
    return (addr.version, int(addr))


def pod_ip(k8s: K8sHelper, name: str, *, namespace: str | None = None, timeout: float | None = None) -> str:
    """``status.podIP`` of pod ``name`` (module-level convenience for ``k8s.pod_ip``)."""
    return k8s.pod_ip(name, namespace=namespace, timeout=timeout)
