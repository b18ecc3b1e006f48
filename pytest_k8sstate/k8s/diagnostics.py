"""What a failed test's namespace looked like: events, a ``describe``-like status of every pod (phase,
conditions, each container's state, restarts) and the last lines of each container's log.

Every API call is bounded (:data:`REQUEST_TIMEOUT`); a part that cannot be read becomes a line saying
so, and the rest is still collected — diagnostics never raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_k8sstate.k8s.api import api_failures

__all__ = ["Diagnostics", "collect_diagnostics"]

REQUEST_TIMEOUT = 10.0
MAX_EVENTS = 200
MAX_PODS = 50
MAX_LOG_BYTES = 256 * 1024


@dataclass
class Diagnostics:
    """Diagnostics of one namespace: text sections and per-container logs."""

    namespace: str
    events: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)  # "pod/container" -> last lines
    problems: list[str] = field(default_factory=list)

    def unhealthy_pods(self) -> int:
        return sum(1 for line in self.pods if line.startswith("pod/") and " NOT READY" in line)

    def render(self, *, log_lines: int) -> str:
        """The report section text."""
        out = [f"namespace {self.namespace}:"]
        out.append(f"events ({len(self.events)}):" if self.events else "events: none")
        out.extend(f"  {line}" for line in self.events)
        out.append("pods:" if self.pods else "pods: none")
        out.extend(f"  {line}" for line in self.pods)
        for name, text in self.logs.items():
            lines = text.splitlines()
            out.append(f"logs of {name} (last {min(len(lines), log_lines)} lines):")
            out.extend(f"  | {line}" for line in lines[-log_lines:])
        out.extend(f"not collected: {p}" for p in self.problems)
        return "\n".join(out)


def _ts(value: Any) -> str:
    return value.strftime("%H:%M:%S") if hasattr(value, "strftime") else str(value or "")


def _event_line(ev: Any) -> str:
    obj = ev.involved_object
    when = _ts(ev.last_timestamp or ev.event_time or getattr(ev.metadata, "creation_timestamp", None))
    count = f" (x{ev.count})" if ev.count and ev.count > 1 else ""
    who = f"{(obj.kind or '').lower()}/{obj.name}" if obj is not None else "?"
    return f"{when} {ev.type or ''} {ev.reason or ''} {who}: {(ev.message or '').strip()}{count}".strip()


def _container_state(status: Any) -> str:
    state = status.state
    if state is None:
        return "unknown"
    if state.running is not None:
        return f"running since {_ts(state.running.started_at)}"
    if state.waiting is not None:
        msg = f": {state.waiting.message}" if state.waiting.message else ""
        return f"waiting ({state.waiting.reason or '?'}{msg})"
    if state.terminated is not None:
        t = state.terminated
        msg = f": {t.message}" if t.message else ""
        return f"terminated ({t.reason or '?'}, exit code {t.exit_code}{msg})"
    return "unknown"


def _pod_lines(pod: Any) -> list[str]:
    status = pod.status
    conditions = status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    node = pod.spec.node_name or "(not scheduled)"
    lines = [
        f"pod/{pod.metadata.name} {status.phase} {'Ready' if ready else 'NOT READY'} on {node}"
        + (f", IP {status.pod_ip}" if status.pod_ip else "")
        + (f" — {status.reason}: {status.message}" if status.reason or status.message else "")
    ]
    for c in conditions:
        if c.status != "True":
            why = f" ({c.reason}: {c.message})" if c.reason or c.message else ""
            lines.append(f"  condition {c.type}={c.status}{why}")
    for kind, statuses in (
        ("init container", status.init_container_statuses),
        ("container", status.container_statuses),
    ):
        for cs in statuses or []:
            restarts = f", {cs.restart_count} restarts" if cs.restart_count else ""
            lines.append(f"  {kind} {cs.name}: {_container_state(cs)}{restarts}, image {cs.image}")
            last = getattr(cs, "last_state", None)
            if last is not None and last.terminated is not None:
                t = last.terminated
                lines.append(f"    last terminated: {t.reason or '?'}, exit code {t.exit_code}")
    return lines


def collect_diagnostics(api_client: Any, namespace: str, *, log_lines: int = 50) -> Diagnostics:
    """Events, pod statuses and the last ``log_lines`` log lines of every container in ``namespace``."""
    from kubernetes import client

    core: Any = client.CoreV1Api(api_client)
    diag = Diagnostics(namespace)
    failures = api_failures()
    try:
        events = core.list_namespaced_event(namespace, limit=MAX_EVENTS, _request_timeout=REQUEST_TIMEOUT)
        items = sorted(
            events.items,
            key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp or ""),
        )
        diag.events = [_event_line(ev) for ev in items]
    except failures as exc:
        diag.problems.append(f"events: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    try:
        pods: list[Any] = core.list_namespaced_pod(
            namespace, limit=MAX_PODS, _request_timeout=REQUEST_TIMEOUT
        ).items
    except failures as exc:
        diag.problems.append(f"pods: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return diag
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        diag.pods.extend(_pod_lines(pod))
        if log_lines <= 0:
            continue
        started = {
            cs.name for cs in (pod.status.container_statuses or []) if cs.state and not cs.state.waiting
        }
        started |= {cs.name for cs in (pod.status.init_container_statuses or []) if cs.state}
        for container in [*(pod.spec.init_containers or []), *pod.spec.containers]:
            if container.name not in started:
                continue
            key = f"{pod.metadata.name}/{container.name}"
            try:
                text = core.read_namespaced_pod_log(
                    pod.metadata.name,
                    namespace,
                    container=container.name,
                    tail_lines=log_lines,
                    limit_bytes=MAX_LOG_BYTES,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except failures as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                diag.problems.append(f"logs of {key}: {reason}")
                continue
            diag.logs[key] = str(text or "")
    return diag
