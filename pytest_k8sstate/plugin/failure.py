"""What a failed test leaves behind besides its snapshots (pytest-free): the diagnostics of its
namespace (events, pod statuses, container logs) and — only when a component looks unhealthy or the
user asked — the cluster components' logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_k8sstate.util.files import atomic_write_text

if TYPE_CHECKING:
    from pytest_k8sstate.k8s.diagnostics import Diagnostics
    from pytest_k8sstate.providers.base import Cluster
    from pytest_k8sstate.state.snapshot import Snapshot

__all__ = ["attachment_lines", "component_logs", "html_report", "namespace_diagnostics"]


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "log"


def namespace_diagnostics(
    api_client: Any, namespace: str, directory: Path, *, log_lines: int
) -> tuple[str, list[Path]]:
    """Collect the namespace's diagnostics, write ``diagnostics.txt`` and ``pod-logs/<pod>_<container>.log``
    under ``directory``; return the report text and the files written. Never raises."""
    from pytest_k8sstate.k8s.diagnostics import collect_diagnostics

    try:
        diag: Diagnostics = collect_diagnostics(api_client, namespace, log_lines=log_lines)
    except Exception as exc:  # diagnostics are a bonus: never hide the test's own failure
        return f"diagnostics of namespace {namespace} not collected: {type(exc).__name__}: {exc}", []
    text = diag.render(log_lines=log_lines)
    written: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "diagnostics.txt"
        atomic_write_text(path, text + "\n")
        written.append(path)
        if diag.logs:
            logs = directory / "pod-logs"
            logs.mkdir(exist_ok=True)
            for name, content in diag.logs.items():
                path = logs / f"{_file_name(name.replace('/', '_'))}.log"
                atomic_write_text(path, content)
                written.append(path)
    except OSError as exc:
        text += f"\nnot written to {directory}: {exc}"
    return text, written


def _unhealthy(cluster: Cluster) -> str | None:
    """Why the cluster looks unhealthy (a component is down), or None."""
    check = getattr(cluster, "check_alive", None)
    if check is None:
        return None
    try:
        check()
    except Exception as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def component_logs(cluster: Cluster, directory: Path, mode: str) -> str | None:
    """Export the components' logs into ``directory/logs`` when ``mode`` is ``always``, or ``auto`` and a
    component is down; returns one line for the report (None: nothing done). Never raises."""
    if mode == "never":
        return None
    reason = None
    if mode != "always":
        reason = _unhealthy(cluster)
        if reason is None:
            return None
    why = f" (a component looks unhealthy: {reason})" if reason else ""
    try:
        from pytest_k8sstate.providers.registry import get_provider

        where = get_provider(cluster.provider).export_logs(cluster.name, directory / "logs")
    except Exception as exc:  # logs are a bonus: never hide the test's own failure
        return f"component logs not exported: {exc}{why}"
    if where is None:
        return f"component logs: none to export{why}"
    return f"component logs: {where}{why}"


def attachment_lines(paths: Iterable[Path]) -> str:
    """``[[ATTACHMENT|/abs/path]]`` per file (the Jenkins JUnit attachments convention)."""
    return "\n".join(f"[[ATTACHMENT|{Path(p).resolve()}]]" for p in paths)


def html_report(
    before: Snapshot, directory: Path, *, title: str, ignore: tuple[str, ...]
) -> tuple[Path | None, str | None]:
    """``directory/report.html`` (:mod:`pytest_k8sstate.report`) from ``before`` and the ``after.json``
    just written there; returns (the file, None) or (None, why not). Never raises."""
    from pytest_k8sstate.report import write_report
    from pytest_k8sstate.state.snapshot import Snapshot

    src = directory / "after.json"
    if not src.is_file():
        return None, None  # no state at failure: save_failure's errors.txt says why
    try:
        after = Snapshot.load(src)
        path = write_report(
            directory / "report.html", before, after, diff=before.diff(after, ignore=ignore), title=title
        )
    except Exception as exc:  # the report is a bonus: never hide the test's own failure
        return None, f"report.html not written: {type(exc).__name__}: {exc}"
    return path, None
