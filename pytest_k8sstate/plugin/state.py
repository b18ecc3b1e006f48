"""Per-test cluster state (the ``cluster_state`` fixture's object) and the artifacts saved on failure
(pytest-free)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.util.files import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from pytest_k8sstate.providers.base import Cluster
    from pytest_k8sstate.state import Snapshot, StateDiff
    from pytest_k8sstate.state.etcddiff import KeyChange

__all__ = [
    "ClusterState",
    "artifact_dir_for",
    "sanitize_nodeid",
    "scope_to_namespace",
    "summarize_diff",
    "write_artifacts",
]


def sanitize_nodeid(nodeid: str, limit: int = 120) -> str:
    """A directory name for a test node id: ``tests/a.py::test_x[1]`` → ``tests_a.py__test_x_1_``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "__")).strip("._") or "test"
    if len(name) > limit:
        digest = hashlib.sha256(nodeid.encode()).hexdigest()[:10]
        name = f"{name[: limit - 11]}-{digest}"
    return name


def artifact_dir_for(artifacts: Path, nodeid: str) -> Path:
    return artifacts / sanitize_nodeid(nodeid)


def summarize_diff(diff: StateDiff) -> str:
    """One line, default view: ``3 etcd keys added, 1 modified; 12 rules added on 3 nodes``."""
    from pytest_k8sstate.state.render import summarize_diff as summarize

    return summarize(diff)


def scope_to_namespace(diff: StateDiff, namespace: str) -> StateDiff:
    """The etcd changes of objects in ``namespace`` only (cluster-scoped objects and other namespaces
    dropped); node changes are kept as they are (rules are not namespaced)."""
    import dataclasses

    from pytest_k8sstate.state.etcddiff import EtcdDiff

    def keep(changes: Sequence[KeyChange]) -> list[KeyChange]:
        return [c for c in changes if c.namespace == namespace]

    etcd = EtcdDiff(
        added=keep(diff.etcd.added), removed=keep(diff.etcd.removed), modified=keep(diff.etcd.modified)
    )
    return dataclasses.replace(
        diff, etcd=etcd, notes=[*diff.notes, f"etcd changes of namespace {namespace} only"]
    )


def write_artifacts(
    directory: Path,
    *,
    before: Snapshot | None,
    after: Snapshot | None,
    diff: StateDiff | None,
    extra: Mapping[str, Snapshot] | None = None,
    errors: Sequence[str] = (),
) -> list[Path]:
    """Save ``before.json``, ``after.json``, ``diff.json`` (+ intermediate snapshots) under ``directory``.

    Each file is written on its own: one that cannot be written (a full disk, a value that does not
    serialise) does not stop the others, and what went wrong — with ``errors`` from earlier steps (the
    capture at failure) — goes into ``errors.txt``. Raises only when nothing at all could be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    problems = list(errors)
    for label, snap in (("before", before), ("after", after), *sorted((extra or {}).items())):
        if snap is None:
            continue
        path = directory / f"{sanitize_nodeid(label, 60)}.json"
        try:
            snap.save(path)
        except (K8sStateError, OSError, ValueError, TypeError) as exc:
            problems.append(f"{path.name}: not written: {exc}")
        else:
            written.append(path)
    if diff is not None:
        path = directory / "diff.json"
        try:
            atomic_write_json(path, diff.to_json())
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"{path.name}: not written: {exc}")
        else:
            written.append(path)
    if diff is not None and diff.logs is not None and diff.logs.render(limit=0):  # log lines between, as text
        try:
            atomic_write_text(directory / "step-logs.txt", "\n".join(diff.logs.render(limit=None)) + "\n")
        except OSError as exc:
            problems.append(f"step-logs.txt: not written: {exc}")
        else:
            written.append(directory / "step-logs.txt")
    if problems:
        path = directory / "errors.txt"
        try:
            atomic_write_text(path, "\n".join(problems) + "\n")
        except OSError:
            pass
        else:
            written.append(path)
    if not written and problems:
        raise K8sStateError("; ".join(problems))
    return written


class ClusterState:
    """State of the test's cluster around the test (the ``cluster_state`` fixture)."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        ignore: tuple[str, ...] = (),
        include_secrets: bool = False,
        namespace: str | None = None,
        logs: bool = False,
        pods: bool = False,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        """The test's own namespace (None when the test runs without one)."""
        self.extra_ignore = ignore
        self.include_secrets = include_secrets
        self.logs = logs  # component log lines between snapshots → diff.logs
        self.pods = pods  # pods' network namespaces → snapshot.pods / diff.pods
        self.before: Snapshot = self._take("before")
        self.after: Snapshot | None = None
        self.steps: list[tuple[Snapshot, Snapshot]] = []
        """Each :meth:`diff`'s two snapshots, in order (``plugin/footprints.py`` records their footprints)."""
        self.snapshots: dict[str, Snapshot] = {}
        self.artifacts: list[Path] = []
        """The files :meth:`save_failure` wrote."""

    def _take(self, label: str) -> Snapshot:
        return self.cluster.snapshot(
            label, include_secrets=self.include_secrets, logs=self.logs, pods=self.pods
        )

    @property
    def ignore(self) -> tuple[str, ...]:
        from pytest_k8sstate.state import DEFAULT_IGNORE

        return DEFAULT_IGNORE + self.extra_ignore

    def snapshot(self, label: str) -> Snapshot:
        """Take an intermediate snapshot (also saved with the artifacts on failure)."""
        if label in ("before", "after") or label in self.snapshots:
            raise K8sStateError(f"cluster_state.snapshot({label!r}): label already used; pick another label")
        snap = self._take(label)
        self.snapshots[label] = snap
        return snap

    def diff(self, since: Snapshot | str | None = None, *, namespace: str | None = None) -> StateDiff:
        """Snapshot now (``.after``) and return the diff from ``before`` (or ``since``) to now.

        ``namespace``: keep only the etcd changes of that namespace (``cluster_state.namespace`` is the
        test's own); node changes are kept whole.
        """
        self.after = self._take("after")
        start = self._resolve(since) if since is not None else self.before
        self.steps.append((start, self.after))
        diff = self.diff_between(start, self.after)
        return scope_to_namespace(diff, namespace) if namespace is not None else diff

    def eventually(
        self,
        check: Callable[[Snapshot], object],
        *,
        timeout: float = 30.0,
        interval: float = 0.2,
    ) -> Snapshot:
        """Snapshot until ``check(snapshot)`` stops raising AssertionError (e.g. kube-proxy has synced).

        ``check`` is typically an assertion helper: ``lambda s: assert_dnat_to(s, service=…, endpoints=…)``.
        Returns the snapshot that passed (also ``.after``); re-raises the last AssertionError, prefixed
        with how long it waited, when ``timeout`` passes.
        """
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            snap = self._take("after")
            attempts += 1
            self.after = snap
            try:
                check(snap)
            except AssertionError as exc:
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"still failing after {timeout:g}s ({attempts} snapshots): {exc}"
                    ) from None
            else:
                return snap
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def diff_between(self, a: Snapshot, b: Snapshot) -> StateDiff:
        execs = [n.exec for n in self.cluster.nodes] if self.logs else []
        return a.diff(b, ignore=self.ignore, logs_from=execs)

    def _resolve(self, ref: Snapshot | str) -> Snapshot:
        if not isinstance(ref, str):
            return ref
        if ref == "before":
            return self.before
        if ref not in self.snapshots:
            raise K8sStateError(f"no snapshot labelled {ref!r}; taken: before, {', '.join(self.snapshots)}")
        return self.snapshots[ref]

    def save_failure(self, directory: Path, *, detail_lines: int = 15) -> str:
        """Snapshot the state at failure, write the artifacts, return the report section text."""
        # what was captured before the failure is kept whatever fails from here on
        after: Snapshot | None = None
        diff: StateDiff | None = None
        detail = ""
        errors: list[str] = []
        try:
            after = self._take("after")
        except Exception as exc:
            head = f"k8sstate: capturing the cluster state at failure failed: {exc}"
            errors.append(f"after.json: not captured: {type(exc).__name__}: {exc}")
        else:
            try:
                diff = self.diff_between(self.before, after)
            except Exception as exc:
                head = f"k8sstate: diff before → failure failed: {exc}"
                errors.append(f"diff.json: not computed: {type(exc).__name__}: {exc}")
            else:
                head = f"k8sstate: {summarize_diff(diff)}"
                if self.namespace is not None:
                    scoped = scope_to_namespace(diff, self.namespace)
                    head += f" (namespace {self.namespace}: {summarize_diff(scoped).split(';')[0]})"
                detail = diff.summary(limit=detail_lines)
        try:
            self.artifacts = write_artifacts(
                directory, before=self.before, after=after, diff=diff, extra=self.snapshots, errors=errors
            )
        except Exception as exc:
            where = f"writing artifacts to {directory} failed: {exc}"
        else:
            where = f"artifacts: {directory}"
        return f"{head}; {where}" + (f"\n{detail}" if detail else "")
