"""``K8sHelper``: apply manifests, wait for readiness, read pod IPs — bounded, with clear errors.

Built on the official ``kubernetes`` client's dynamic client; ``apply`` is server-side apply
(PATCH ``application/apply-patch+yaml``). Every wait has a deadline
(:func:`~pytest_k8sstate.util.poll.wait_until`) and fails with a
:class:`~pytest_k8sstate.errors.K8sStateError` saying what was not ready and why, e.g.
``pod/web not Ready after 60s: phase=Pending, conditions=PodScheduled=False (Unschedulable: ...)``.
Manifests and ``kind/name`` references: :mod:`pytest_k8sstate.k8s.manifests`; readiness rules:
:mod:`pytest_k8sstate.k8s.readiness`; discovery: :mod:`pytest_k8sstate.k8s.discovery`; failed calls:
:mod:`pytest_k8sstate.k8s.api`; watches: :mod:`pytest_k8sstate.k8s.watch`.
"""

from __future__ import annotations

import builtins
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.k8s.api import (
    api_error,
    api_failures,
    is_not_found,
    patch_secret_values,
    secret_values,
    to_dict,
)
from pytest_k8sstate.k8s.discovery import discover_kind, find_resource
from pytest_k8sstate.k8s.manifests import BUILTIN_KINDS, ObjectRef, load_manifests, looks_like_ref, parse_ref
from pytest_k8sstate.k8s.readiness import ready, ready_addresses
from pytest_k8sstate.k8s.watch import WatchEvent, follow
from pytest_k8sstate.k8s.workloads import WorkloadsMixin
from pytest_k8sstate.util.poll import wait_until

__all__ = ["K8sHelper", "pod_ip"]

FIELD_MANAGER = "pytest-k8sstate"
DEFAULT_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0


class _TimedOut(K8sStateError):
    """A helper wait ran out of time (re-raised as a K8sStateError in the helper's own words)."""


@dataclass(frozen=True)
class _Applied:
    api_version: str
    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


def _wait(probe: Callable[[], str | None], timeout: float, message: Callable[[], str]) -> None:
    """Poll ``probe`` (None = done, else why not) for ``timeout`` seconds; on timeout raise ``message()``."""
    try:
        wait_until("the object", probe, timeout=timeout, error=_TimedOut, interval=0.05, max_interval=1.0)
    except _TimedOut:
        raise K8sStateError(message()) from None


class K8sHelper(WorkloadsMixin):
    """Apply, wait, inspect — on one cluster through ``api_client`` (a ``kubernetes.client.ApiClient``).

    ``manifests_dir``: where relative manifest paths are looked up first (then the current directory).
    Objects applied through the helper are remembered; :meth:`cleanup` deletes them (the ``k8s``
    fixture does so after each test). ``dynamic``: reuse another helper's ``DynamicClient`` (and its
    API discovery) instead of discovering again. ``image_loader``: what :meth:`load_image` calls (the
    plugin passes the provider's; logs/exec/port_forward: :mod:`pytest_k8sstate.k8s.workloads`).
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
        image_loader: Callable[[str | Path], Any] | None = None,
    ) -> None:
        self.api_client = api_client
        self.image_loader = image_loader
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
            except api_failures() as exc:
                raise api_error(exc, f"connecting to {self._host()}") from None
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
            self._resources[key] = find_resource(self.dynamic, api_version, kind)
        return self._resources[key]

    def _kind(self, kind: str) -> tuple[str, str]:
        """(apiVersion, Kind) for a kubectl-style kind name."""
        return BUILTIN_KINDS.get(kind.lower()) or discover_kind(self.dynamic, kind)

    def _ns(self, resource: Any, namespace: str | None) -> str | None:
        return (namespace or self.namespace) if resource.namespaced else None

    def _call(
        self, what: str, fn: Callable[..., Any], *args: Any, hidden: Iterable[str] = (), **kwargs: Any
    ) -> Any:
        """``fn(...)``; an API failure becomes one K8sStateError without the client's frames (they hold the
        body, e.g. a Secret's values) and with any Secret value of the body scrubbed from the message.
        Hidden from pytest tracebacks, as are the helper calls taking objects: pytest prints the arguments
        of each frame it shows (``kwargs = {'body': ...}``)."""
        __tracebackhide__ = True
        kwargs.setdefault("_request_timeout", self.request_timeout)
        body = kwargs.get("body")
        secrets = [*(secret_values(body) if isinstance(body, Mapping) else []), *hidden]
        try:
            return fn(*args, **kwargs)
        except api_failures() as exc:
            error = api_error(exc, what, secrets)
        raise error from None

    # manifests --------------------------------------------------------------------------------------------
    def _load(
        self, source: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> builtins.list[dict[str, Any]]:
        return load_manifests(source, self.manifests_dir)

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
        __tracebackhide__ = True  # its frame shows the objects (a Secret's values)
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
            results.append(to_dict(obj))
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
        except api_failures() as exc:
            if is_not_found(exc):
                return None
            raise api_error(exc, f"reading {parsed}") from None
        return to_dict(obj)

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
        items: builtins.list[dict[str, Any]] = to_dict(result).get("items") or []
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
        limit = self.timeout if timeout is None else timeout
        last: builtins.list[Any] = [None, "not polled"]

        def probe() -> str | None:
            obj = self.try_get(ref, namespace=namespace)
            ok, state = predicate(obj)
            last[0], last[1] = obj, state
            return None if ok else state

        _wait(probe, limit, lambda: f"{ref} not {what} after {limit:g}s: {last[1]}")
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
            return ready(kind, obj)

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
        return ready_addresses(slices)

    def wait_endpoints(
        self,
        service: str,
        count: int | None = None,
        *,
        timeout: float | None = None,
        namespace: str | None = None,
    ) -> builtins.list[str]:
        """Wait until ``svc/NAME`` has ``count`` ready endpoints (default: at least one); return their IPs."""
        limit = self.timeout if timeout is None else timeout
        want = f"{count}" if count is not None else "at least 1"
        last: builtins.list[builtins.list[str]] = [[]]

        def probe() -> str | None:
            last[0] = self.ready_endpoints(service, namespace=namespace)
            ok = len(last[0]) == count if count is not None else bool(last[0])
            return None if ok else f"{len(last[0])} ready endpoints, expected {want}"

        _wait(
            probe,
            limit,
            lambda: (
                f"{service} has {len(last[0])} ready endpoints after {limit:g}s, expected {want}: "
                f"{', '.join(last[0]) or 'none'} (from its EndpointSlices)"
            ),
        )
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
        limit = self.timeout if timeout is None else timeout
        last: builtins.list[builtins.list[dict[str, Any]]] = [[]]
        why = ["not polled"]

        def pending() -> str | None:
            last[0] = self.list("pod", selector_or_name, namespace=namespace)
            names = [p["metadata"]["name"] for p in last[0] if not (p.get("status") or {}).get("podIP")]
            why[0] = f"pods without IP: {', '.join(names)}" if last[0] else "no pod matches"
            return why[0] if names or not last[0] else None

        _wait(pending, limit, lambda: f"pods {selector_or_name!r}: no IPs after {limit:g}s: {why[0]}")
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
        __tracebackhide__ = True  # its frame shows the objects (a Secret's values)
        content_types = {
            "strategic": "application/strategic-merge-patch+json",
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
        }
        if patch_type not in content_types:
            raise K8sStateError(f"patch_type {patch_type!r}: expected one of {', '.join(content_types)}")
        resource, parsed, kind = self._ref(ref)
        obj = self._call(
            f"patching {parsed}",
            self.dynamic.patch,
            resource,
            hidden=patch_secret_values(body) if kind == "Secret" else (),
            body=body,
            name=parsed.name,
            namespace=self._ns(resource, namespace),
            content_type=content_types[patch_type],
        )
        return to_dict(obj)

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
        __tracebackhide__ = True  # its frame shows the objects (a Secret's values)
        refs: builtins.list[tuple[ObjectRef, str | None, tuple[str, str]]] = []
        if isinstance(target, ObjectRef) or (isinstance(target, str) and looks_like_ref(target)):
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
            except api_failures() as exc:
                if not is_not_found(exc):
                    raise api_error(exc, f"deleting {ref}") from None
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
            except Exception as exc:  # cleanup reports every problem and never raises
                if is_not_found(exc):
                    continue
                known = isinstance(exc, (K8sStateError, *api_failures()))
                problems.append(f"deleting {item} failed: {exc if known else f'{type(exc).__name__}: {exc}'}")
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
        api_version, kind_name = self._kind(kind)
        resource = self._resource(api_version, kind_name)
        if isinstance(selector, Mapping):
            selector = ",".join(f"{k}={v}" for k, v in selector.items())
        ns = self._ns(resource, namespace)
        listed = self._call(
            f"listing {kind}", self.dynamic.get, resource, namespace=ns, label_selector=selector
        )
        rv = str(to_dict(listed).get("metadata", {}).get("resourceVersion") or "")
        if action is not None:
            action()
        return follow(
            self.dynamic,
            resource,
            kind=kind,
            namespace=ns,
            selector=selector,
            resource_version=rv,
            until=until,
            timeout=timeout,
        )


def pod_ip(k8s: K8sHelper, name: str, *, namespace: str | None = None, timeout: float | None = None) -> str:
    """``status.podIP`` of pod ``name`` (module-level convenience for ``k8s.pod_ip``)."""
    return k8s.pod_ip(name, namespace=namespace, timeout=timeout)
