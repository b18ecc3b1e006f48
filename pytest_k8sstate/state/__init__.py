"""Snapshots of a cluster (etcd + every node's network state) and the diff between two of them.

``Snapshot.capture(...)`` / ``Snapshot.load(path)`` → ``before.diff(after)`` → :class:`StateDiff` (an
:class:`EtcdDiff` of :class:`KeyChange` plus one :class:`NodeDiff` per node) → ``summary()`` text. Modules:

* ``keys`` — etcd key globs, the default ignore patterns of the diff view, key counts per resource;
* ``etcddiff`` — :class:`KeyChange`, :class:`EtcdDiff` and :func:`diff_etcd` (changed field paths);
* ``values`` — :class:`FieldChange`: a changed field with its old and new value, bounded rendering;
* ``nodediff`` — :class:`NodeDiff`, its field table :data:`NODE_FIELDS` and :func:`diff_nodes`;
* ``kubeproxy`` — :class:`ServiceChange`: kube-proxy's rule changes summarised per Service port;
* ``pairing`` — a removed rule paired with the added rule that replaced it;
* ``filters`` — :class:`Scope`: a diff or snapshot narrowed to namespaces, kinds, key globs, nodes;
* ``diff`` — :class:`StateDiff`: both halves, the ignore-aware view, JSON;
* ``render`` — text: one line per change, the summaries, the one-line failure summary;
* ``snapshot`` — :class:`Snapshot`: capture, diff, JSON, atomic save / load (``.gz`` too).
"""

from __future__ import annotations

from pytest_k8sstate.state.diff import SCHEMA, StateDiff
from pytest_k8sstate.state.etcddiff import EtcdDiff, KeyChange, changed_field_paths, diff_etcd
from pytest_k8sstate.state.filters import Scope, filter_diff
from pytest_k8sstate.state.keys import (
    DEFAULT_IGNORE,
    DEFAULT_IGNORE_MODIFIED,
    compile_key_pattern,
    key_matches,
    resource_counts,
)
from pytest_k8sstate.state.kubeproxy import ServiceChange
from pytest_k8sstate.state.nodediff import NETFILTER_FIELDS, NODE_FIELDS, NodeDiff, NodeField, diff_nodes
from pytest_k8sstate.state.render import node_diff_lines, summarize_diff
from pytest_k8sstate.state.snapshot import Snapshot
from pytest_k8sstate.state.values import ABSENT, FieldChange

__all__ = [
    "ABSENT",
    "DEFAULT_IGNORE",
    "DEFAULT_IGNORE_MODIFIED",
    "NETFILTER_FIELDS",
    "NODE_FIELDS",
    "SCHEMA",
    "EtcdDiff",
    "FieldChange",
    "KeyChange",
    "NodeDiff",
    "NodeField",
    "Scope",
    "ServiceChange",
    "Snapshot",
    "StateDiff",
    "changed_field_paths",
    "compile_key_pattern",
    "diff_etcd",
    "diff_nodes",
    "filter_diff",
    "key_matches",
    "node_diff_lines",
    "resource_counts",
    "summarize_diff",
]
