"""Workload helpers of ``k8s_api``: a pod's logs, a command in a pod, a port forwarded to loopback, images.

All through the ``kubernetes`` client the helper already holds (no ``kubectl`` binary, no kubeconfig file):

* :meth:`WorkloadsMixin.logs` -- ``GET pods/NAME/log`` (``container``, ``tail``, ``previous``), bounded.
* :meth:`WorkloadsMixin.exec` -- ``pods/NAME/exec`` over the websocket channels: stdout, stderr and the exit
  code (from the error channel's status); a deadline that closes the stream and raises.
* :meth:`WorkloadsMixin.port_forward` -- a context manager yielding a loopback ``(host, port)``: a listener
  on ``127.0.0.1:0`` whose every accepted connection gets its own ``pods/NAME/portforward`` stream, relayed
  by a thread; a Service is resolved (as ``kubectl port-forward svc/X`` does) to one of its ready pods and
  the target port of the Service port. Everything is closed on exit.
* :meth:`WorkloadsMixin.load_image` -- hands the image (a tag in the user's/project's Docker engine, or a
  ``docker save`` tarball) to the provider's loader (:mod:`pytest_k8sstate.providers.images`), which the
  plugin passes in as ``image_loader``: the ``k8s`` layer knows no provider.

Pods of the ``local`` provider are kwok's: they have no containers, so logs, exec and port forwarding are
refused up front with that reason instead of a confusing API error.
"""

from __future__ import annotations

import builtins
import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.k8s.api import api_error, api_failures

__all__ = ["ExecResult", "WorkloadsMixin", "exit_status", "resolve_target_port"]

NO_CONTAINERS = {
    "local": "its pods are kwok's (simulated: no containers, no kubelet), so a pod has no {what}; "
    "use --k8sstate-provider kind (or existing) for tests that need real containers",
}
ERROR_CHANNEL = 3
RELAY_CHUNK = 65536


@dataclass(frozen=True)
class ExecResult:
    """What a command run in a pod gave back."""

    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def exit_status(error_channel: str, where: str) -> int:
    """The exit code in an exec stream's error channel (a ``v1.Status`` as YAML/JSON; empty = success).

    A command that ran and failed has reason ``NonZeroExitCode`` and the code as the ``ExitCode`` cause; any
    other failure (no such executable, container not running) is a :class:`K8sStateError` with its message.
    """
    if not error_channel.strip():
        return 0
    try:
        status = yaml.safe_load(error_channel)
    except yaml.YAMLError:
        status = None
    if not isinstance(status, dict):
        raise K8sStateError(f"{where}: unreadable exec status {error_channel[:200]!r}")
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            try:
                return int(str(cause.get("message")))
            except ValueError:
                break
    raise K8sStateError(f"{where}: {status.get('message') or status.get('reason') or error_channel[:200]}")


def resolve_target_port(service: Mapping[str, Any], port: int | str, pod: Mapping[str, Any]) -> int:
    """The container port of ``pod`` that Service ``port`` (number or name) sends to, as kube-proxy does."""
    name = service.get("metadata", {}).get("name", "?")
    ports = service.get("spec", {}).get("ports") or []
    match = next((p for p in ports if port in (p.get("port"), p.get("name") or None)), None)
    if match is None:
        known = ", ".join(str(p.get("name") or p.get("port")) for p in ports) or "(none)"
        raise K8sStateError(f"service/{name} has no port {port!r}; its ports: {known}")
    target = match.get("targetPort", match.get("port"))
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in pod.get("spec", {}).get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target:
                return int(cp["containerPort"])
    pod_name = pod.get("metadata", {}).get("name", "?")
    raise K8sStateError(
        f"service/{name} port {port!r} targets {target!r}, a port pod/{pod_name} does not name"
    )


def _relay(a: socket.socket, b: Any, stop: threading.Event) -> None:
    """Copy bytes both ways between ``a`` and ``b`` until either closes or ``stop`` is set."""
    sel = selectors.DefaultSelector()
    try:
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                src: Any = key.fileobj
                data = src.recv(RELAY_CHUNK)
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        sel.close()
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()


class WorkloadsMixin:
    """The workload methods of :class:`~pytest_k8sstate.k8s.helper.K8sHelper` (see the module docstring)."""

    api_client: Any
    namespace: str
    cluster: Any
    request_timeout: float
    image_loader: Callable[[str | Path], Any] | None

    def _core(self) -> Any:
        from kubernetes.client import CoreV1Api

        return CoreV1Api(self.api_client)

    def _needs_containers(self, what: str) -> None:
        provider = str(getattr(self.cluster, "provider", ""))
        if provider in NO_CONTAINERS:
            why = NO_CONTAINERS[provider].format(what=what)
            raise K8sStateError(f"{what} is not supported by provider {provider}: {why}")

    @staticmethod
    def _pod_name(pod: str) -> str:
        kind, slash, name = pod.partition("/")
        if not slash:
            return pod
        if kind.lower() not in ("pod", "pods", "po"):
            raise K8sStateError(f"{pod!r}: expected a pod name or pod/NAME")
        return name

    def logs(
        self,
        pod: str,
        *,
        container: str | None = None,
        tail: int | None = None,
        previous: bool = False,
        namespace: str | None = None,
    ) -> str:
        """The log of ``pod`` (``container`` when it has several; the last ``tail`` lines)."""
        self._needs_containers("logs")
        name, ns = self._pod_name(pod), namespace or self.namespace
        kw: dict[str, Any] = {"_request_timeout": self.request_timeout, "previous": previous}
        if container:
            kw["container"] = container
        if tail is not None:
            kw["tail_lines"] = tail
        try:
            return str(self._core().read_namespaced_pod_log(name, ns, **kw))
        except api_failures() as exc:
            raise api_error(exc, f"logs of pod {ns}/{name}") from None

    def exec(
        self,
        pod: str,
        cmd: Sequence[str],
        *,
        container: str | None = None,
        timeout: float = 60.0,
        namespace: str | None = None,
    ) -> ExecResult:
        """Run ``cmd`` (an argv, no shell) in ``pod``: stdout, stderr, exit code; raises after ``timeout``."""
        from kubernetes.stream import stream

        self._needs_containers("exec")
        if isinstance(cmd, str) or not cmd:
            raise K8sStateError(f"exec in {pod}: cmd must be a non-empty argv list, e.g. ['hostname']")
        name, ns = self._pod_name(pod), namespace or self.namespace
        where = f"exec {' '.join(cmd)!r} in pod {ns}/{name}"
        kw: dict[str, Any] = {"command": builtins.list(cmd), "stdin": False, "stdout": True, "stderr": True}
        if container:
            kw["container"] = container
        try:
            ws = stream(
                self._core().connect_get_namespaced_pod_exec,
                name,
                ns,
                tty=False,
                _preload_content=False,
                _request_timeout=self.request_timeout,
                **kw,
            )
        except api_failures() as exc:
            raise api_error(exc, where) from None
        out: builtins.list[str] = []
        err: builtins.list[str] = []
        status: builtins.list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while ws.is_open():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise K8sStateError(f"{where}: still running after {timeout:g}s (stream closed)")
                ws.update(timeout=min(left, 1.0))
                out.append(ws.read_stdout(timeout=0) if ws.peek_stdout() else "")
                err.append(ws.read_stderr(timeout=0) if ws.peek_stderr() else "")
                if ws.peek_channel(ERROR_CHANNEL):
                    status.append(ws.read_channel(ERROR_CHANNEL))
        finally:
            ws.close()
        return ExecResult("".join(out), "".join(err), exit_status("".join(status), where))

    def _forward_target(self, target: str, port: int | str, ns: str) -> tuple[str, int]:
        """(pod, container port) for ``pod/NAME``, ``NAME`` or ``service/NAME`` (``svc/NAME``)."""
        kind, slash, name = target.partition("/")
        if not slash:
            kind, name = "pod", target
        core = self._core()
        try:
            if kind.lower() in ("pod", "pods", "po"):
                if not isinstance(port, int):
                    raise K8sStateError(f"port_forward({target!r}, {port!r}): a pod port is a number")
                return name, port
            if kind.lower() not in ("service", "services", "svc"):
                raise K8sStateError(f"port_forward({target!r}): expected NAME, pod/NAME or service/NAME")
            svc = core.read_namespaced_service(name, ns, _request_timeout=self.request_timeout)
            svc_doc = self.api_client.sanitize_for_serialization(svc)
            selector = svc.spec.selector or {}
            if not selector:
                raise K8sStateError(f"port_forward: service {ns}/{name} has no selector (no pods to reach)")
            label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            pods = core.list_namespaced_pod(
                ns, label_selector=label_selector, _request_timeout=self.request_timeout
            ).items
        except api_failures() as exc:
            raise api_error(exc, f"port_forward to {target} in {ns}") from None
        for p in pods:
            conds = {c.type: c.status for c in (p.status.conditions or [])}
            if p.metadata.deletion_timestamp is None and conds.get("Ready") == "True":
                doc = self.api_client.sanitize_for_serialization(p)
                return p.metadata.name, resolve_target_port(svc_doc, port, doc)
        raise K8sStateError(
            f"port_forward: service {ns}/{name} has no ready pod ({len(pods)} pod(s) match {label_selector})"
        )

    @contextlib.contextmanager
    def port_forward(
        self, target: str, port: int | str, *, namespace: str | None = None, connect_timeout: float = 30.0
    ) -> Iterator[tuple[str, int]]:
        """Forward a loopback port to ``port`` of ``target`` (a pod or ``service/NAME``); yields (host, port).

        Each connection to it opens its own port-forward stream to the pod (``connect_timeout`` bounds the
        stream's setup); the listener, the streams and their relay threads are closed on exit.
        """
        from kubernetes.stream import portforward

        self._needs_containers("port_forward")
        ns = namespace or self.namespace
        pod, pod_port = self._forward_target(target, port, ns)
        core = self._core()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.2)
        setup_failures: tuple[type[BaseException], ...] = (*api_failures(), OSError)
        stop = threading.Event()
        threads: builtins.list[threading.Thread] = []
        errors: builtins.list[str] = []

        def serve(conn: socket.socket) -> None:
            try:
                pf = portforward(
                    core.connect_get_namespaced_pod_portforward,
                    pod,
                    ns,
                    ports=str(pod_port),
                    _request_timeout=connect_timeout,
                )
                remote = pf.socket(pod_port)
            except setup_failures as exc:
                errors.append(f"pod {ns}/{pod} port {pod_port}: {exc}")
                conn.close()
                return
            try:
                remote.setblocking(True)
                _relay(conn, remote, stop)
            finally:
                with contextlib.suppress(Exception):
                    pf.close()

        def accept_loop() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(None)
                t = threading.Thread(target=serve, args=(conn,), name=f"k8sstate-pf-{pod}", daemon=True)
                threads.append(t)
                t.start()

        acceptor = threading.Thread(target=accept_loop, name=f"k8sstate-pf-accept-{pod}", daemon=True)
        acceptor.start()
        try:
            yield ("127.0.0.1", int(listener.getsockname()[1]))
        finally:
            stop.set()
            acceptor.join(timeout=5)
            listener.close()
            for t in threads:
                t.join(timeout=5)
        if errors:
            raise K8sStateError(f"port_forward to {target} {port}: " + "; ".join(errors[:3]))

    def load_image(self, image: str | Path) -> Any:
        """Make ``image`` (a tag in the Docker engine, or a ``docker save`` tarball) available on every node.

        kind: loaded into each node's containerd; other providers raise "not supported by provider X".
        """
        if self.image_loader is None:
            provider = getattr(self.cluster, "provider", None) or "(no cluster)"
            raise K8sStateError(
                f"load_image is not supported by provider {provider}: this helper was made without an image "
                "loader (the k8s_api fixture passes one)"
            )
        return self.image_loader(image)
