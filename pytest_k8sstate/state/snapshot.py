"""A :class:`Snapshot`: the state of a cluster (etcd + every node's network state) at one moment.

A snapshot is JSON round-trippable (``Snapshot.from_json(s.to_json()) == s``); ``save`` writes atomically
(:func:`~pytest_k8sstate.util.files.atomic_write_bytes`: unique temporary file in the same directory,
fsync, ``os.replace``) and ``load`` raises :class:`~pytest_k8sstate.errors.ParseError` naming the file and
the line (bad JSON) or the JSON path (``$.nodes.node-1.iptables``) of a field that does not fit the schema.
A path ending in ``.gz`` is gzip-compressed. ``before.diff(after)`` → :class:`StateDiff`.
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pytest_k8sstate.errors import K8sStateError, ParseError
from pytest_k8sstate.etcd.capture import EtcdState
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.gcpause import gc_paused
from pytest_k8sstate.state.diff import SCHEMA, StateDiff
from pytest_k8sstate.state.etcddiff import EtcdDiff, diff_etcd
from pytest_k8sstate.state.extras import capture_extras, diff_extras, extras_from_json, extras_to_json
from pytest_k8sstate.state.keys import DEFAULT_IGNORE, DEFAULT_IGNORE_MODIFIED
from pytest_k8sstate.state.nodediff import diff_nodes
from pytest_k8sstate.state.render import snapshot_summary
from pytest_k8sstate.state.schema import MAX_DEPTH, validate_snapshot
from pytest_k8sstate.util.files import atomic_write_bytes
from pytest_k8sstate.util.inputs import gunzip_bounded, read_input

if TYPE_CHECKING:
    from pytest_k8sstate.etcd.target import EtcdTarget
    from pytest_k8sstate.node.exec import NodeExec
    from pytest_k8sstate.node.logs import NodeLogCursors
    from pytest_k8sstate.state.extras import LogsOption, PodsOption
    from pytest_k8sstate.state.pods import NodePods

__all__ = ["Snapshot"]


@dataclass
class Snapshot:
    """The state of a cluster at one moment."""

    label: str
    taken_at: float
    """Seconds since the epoch (``time.time()``)."""
    cluster: dict[str, Any] = field(default_factory=dict)
    """Free-form facts about the cluster (name, provider, versions, proxy mode)."""
    etcd: EtcdState | None = None
    nodes: dict[str, NodeState] = field(default_factory=dict)
    schema: int = SCHEMA
    # -- optional parts (state/extras.py): log cursors and pods' network namespaces, per node --
    logs: dict[str, NodeLogCursors] = field(default_factory=dict)
    pods: dict[str, NodePods] = field(default_factory=dict)

    # -- capture ----------------------------------------------------------------------------------
    @classmethod
    def capture(
        cls,
        label: str,
        *,
        etcd: EtcdTarget | None = None,
        nodes: Sequence[NodeExec] = (),
        cluster: Mapping[str, Any] | None = None,
        include_secrets: bool = False,
        keep_raw: bool = False,
        ipvs: bool = True,
        logs: LogsOption = False,
        pods: PodsOption = False,
        conntrack: bool = False,
    ) -> Snapshot:
        """Capture etcd (when given a target) and every node, concurrently (I/O bound).

        ``logs``: also record where each component log ends (``True``: kind's sources; or a list / a
        node → list mapping of :class:`~pytest_k8sstate.node.logs.LogSource`); ``pods``: also capture each
        pod's network namespace (``True``: found with crictl; or node → ``{"ns/name": netns}``), with its
        conntrack entries when ``conntrack``. See :mod:`pytest_k8sstate.state.extras`."""
        from pytest_k8sstate.etcd.capture import collect_etcd
        from pytest_k8sstate.node import rulecache
        from pytest_k8sstate.node.capture import collect_node

        taken_at = time.time()
        # the capture makes 100k+ objects on a large cluster: no cyclic GC over the snapshots a session holds
        # while it runs (their collections were 0.1-0.3 s inside a capture); one young collection after it
        with gc_paused(), ThreadPoolExecutor(max_workers=max(1, min(9, len(nodes) + 2))) as pool:
            etcd_f = (
                pool.submit(collect_etcd, etcd, keep_raw=keep_raw, include_secrets=include_secrets)
                if etcd is not None
                else None
            )
            # rule translations: the nodes hold mostly the same rules, and so do the snapshots of a process
            # and of the last one (node/rulecache.py)
            shared = rulecache.translations() if nodes else {}
            node_fs = [(ex.node, pool.submit(collect_node, ex, ipvs=ipvs, shared=shared)) for ex in nodes]
            extras_f = pool.submit(capture_extras, nodes, logs, pods, conntrack)
            state = etcd_f.result() if etcd_f is not None else None
            node_states = {name: f.result() for name, f in node_fs}
            log_cursors, pod_states = extras_f.result()
        rulecache.persist()
        return cls(
            label=label,
            taken_at=taken_at,
            cluster=dict(cluster or {}),
            etcd=state,
            nodes=node_states,
            logs=log_cursors,
            pods=pod_states,
        )

    # -- diff -------------------------------------------------------------------------------------
    def diff(
        self,
        after: Snapshot,
        ignore: Sequence[str] = DEFAULT_IGNORE,
        ignore_modified: Sequence[str] = DEFAULT_IGNORE_MODIFIED,
        *,
        logs_from: Sequence[NodeExec] = (),
    ) -> StateDiff:
        """``self`` → ``after``. ``ignore`` only shapes the default view; the data keeps everything.

        ``logs_from``: the nodes' executors, to read the log lines between the two snapshots' cursors
        into ``diff.logs`` (the only part of a diff that reads from the nodes)."""
        was = gc.isenabled()
        gc.disable()  # rules parsed now (100k+ small objects): no cyclic GC over the snapshots meanwhile
        try:
            return self._diff(after, ignore, ignore_modified, logs_from)
        finally:
            if was:
                gc.enable()

    def _diff(
        self,
        after: Snapshot,
        ignore: Sequence[str],
        ignore_modified: Sequence[str],
        logs_from: Sequence[NodeExec],
    ) -> StateDiff:
        out = StateDiff(
            etcd=diff_etcd(self.etcd, after.etcd),
            before_label=self.label,
            after_label=after.label,
            before_revision=self.etcd.revision if self.etcd is not None else None,
            after_revision=after.etcd.revision if after.etcd is not None else None,
            ignore=tuple(ignore),
            ignore_modified=tuple(ignore_modified),
        )
        if (self.etcd is None) != (after.etcd is None):
            side = self.label if self.etcd is None else after.label
            out.notes.append(f"etcd not captured in {side!r}: etcd keys not compared")
            out.etcd = EtcdDiff()
        for name in list(dict.fromkeys([*self.nodes, *after.nodes])):
            out.nodes[name] = diff_nodes(self.nodes.get(name), after.nodes.get(name))
        out.nodes_added = [n for n in after.nodes if n not in self.nodes]
        out.nodes_removed = [n for n in self.nodes if n not in after.nodes]
        # optional parts (state/extras.py)
        out.logs, out.pods, notes = diff_extras(self.logs, after.logs, self.pods, after.pods, logs_from)
        out.notes += notes
        return out

    # -- JSON -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "label": self.label,
            "taken_at": self.taken_at,
            "taken_at_iso": datetime.fromtimestamp(self.taken_at, UTC).isoformat(timespec="seconds"),
            "cluster": self.cluster,
            "etcd": self.etcd.to_json() if self.etcd is not None else None,
            "nodes": {name: ns.to_json() for name, ns in self.nodes.items()},
            **extras_to_json(self.logs, self.pods),  # optional parts, written only when captured
        }

    @classmethod
    def from_json(cls, d: Any, source: str = "snapshot") -> Self:
        """Build from :meth:`to_json` output; ParseError naming ``source`` and the JSON path otherwise.

        The whole tree is checked first (:func:`~pytest_k8sstate.state.schema.validate_snapshot`: types,
        ranges, finite numbers, nesting depth), so a snapshot that loads can be shown and diffed."""
        validate_snapshot(d, source, SCHEMA)

        def bad(path: str, expected: str, got: Any = None) -> ParseError:
            shown = None if got is None else (got if isinstance(got, str) else type(got).__name__)
            return ParseError(f"{source} at {path}", None, expected, shown)

        etcd: EtcdState | None = None
        if d.get("etcd") is not None:
            etcd = _wrap(lambda: EtcdState.from_json(d["etcd"]), bad, "$.etcd", "an etcd state object")
        nodes: dict[str, NodeState] = {}
        for name, nd in d["nodes"].items():
            nodes[name] = _wrap(
                partial(NodeState.from_json, nd), bad, f"$.nodes.{name}", "a node state object"
            )
        logs, pods = extras_from_json(d, source)  # optional parts; absent in older snapshots
        return cls(
            label=d["label"],
            taken_at=float(d["taken_at"]),
            cluster=d["cluster"],
            etcd=etcd,
            nodes=nodes,
            schema=d["schema"],
            logs=logs,
            pods=pods,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (unique temp file in the same directory, fsync, rename). ``*.gz`` is gzipped."""
        p = Path(path)
        data = json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
        if p.name.endswith(".gz"):
            data = gzip.compress(data, compresslevel=5, mtime=0)
        try:
            atomic_write_bytes(p, data, fsync=True)
        except OSError as exc:
            raise K8sStateError(f"{p}: cannot write snapshot: {exc.strerror or exc}") from exc
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a snapshot; ParseError naming the file and the line / JSON path on bad input.

        Bounded: only a regular file, at most ``$K8SSTATE_MAX_INPUT_BYTES`` (default 1 GiB) read and, for
        gzip, decompressed (:mod:`pytest_k8sstate.util.inputs`); ConfigError naming the file otherwise."""
        p = Path(path)
        raw = read_input(str(p), "snapshot")
        if raw[:2] == b"\x1f\x8b":
            raw = gunzip_bounded(raw, str(p))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(str(p), None, "UTF-8 JSON text", f"byte {exc.start}: {exc.reason}") from exc
        del raw
        try:
            obj = json.loads(text)
        except RecursionError as exc:
            raise ParseError(
                str(p),
                None,
                f"JSON nested at most {MAX_DEPTH} deep (a snapshot written by k8sstate snapshot)",
            ) from exc
        except json.JSONDecodeError as exc:
            raise ParseError(
                str(p),
                exc.lineno,
                f"valid JSON (a snapshot written by k8sstate snapshot) at column {exc.colno}",
                exc.msg,
            ) from exc
        except ValueError as exc:  # an integer of more than 4300 digits
            raise ParseError(str(p), None, "numbers of at most 4300 digits", str(exc)[:80]) from exc
        return cls.from_json(obj, source=str(p))

    def summary(self) -> str:
        """Plain text: label, time, etcd revision and key counts by resource, per-node rule/chain counts."""
        return snapshot_summary(self)


def _wrap(fn: Callable[[], Any], bad: Callable[..., ParseError], path: str, expected: str) -> Any:
    try:
        return fn()
    except ParseError as exc:
        raise bad(path, f"{expected}: {exc}") from exc
    except KeyError as exc:
        raise bad(path, f"{expected} with field {exc.args[0]!r}", "nothing") from exc
    except RecursionError as exc:
        raise bad(path, f"{expected} nested less deeply") from exc
    except (TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise bad(path, f"{expected}: {exc}") from exc
