"""The 0.1 spellings, kept for one release with a deprecation warning — only where no clash is possible.

- options ``--k8s-*`` / ini ``k8s_*``: :func:`add_legacy_options`
  (only the names no other plugin registered);
- markers ``needs`` / ``finding``: read as ``k8sstate_needs`` / ``k8sstate_finding`` (:func:`marker_args`),
  with a warning on the test that uses them;
- fixture ``k8s``: an alias of ``k8s_api`` (:mod:`.legacy_fixture`), registered only when no other plugin
  (pytest-kubernetes) defines a ``k8s`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, overload

import pytest

from pytest_k8sstate.plugin.options import (
    LEGACY_KEY,
    OPTIONS,
    K8sStateDeprecationWarning,
    _add,
    _addini,
)

__all__ = ["LEGACY_MARKERS", "add_legacy_options", "legacy_fixture_plugin", "marker_args"]

LEGACY_MARKERS = {"needs": "k8sstate_needs", "finding": "k8sstate_finding"}
_NEW_TO_OLD = {new: old for old, new in LEGACY_MARKERS.items()}
_WARNED = pytest.StashKey[set[str]]()


@overload
def marker_args(
    item: pytest.Item, name: str, kwargs: Literal[False] = False
) -> Iterator[tuple[Any, ...]]: ...
@overload
def marker_args(
    item: pytest.Item, name: str, kwargs: Literal[True]
) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]: ...
def marker_args(item: pytest.Item, name: str, kwargs: bool = False) -> Iterator[Any]:
    """The args (or ``(args, kwargs)``) of every ``name`` marker of ``item``, closest first, then those of
    its deprecated spelling (each test using one gets one warning)."""
    for marker in item.iter_markers(name):
        yield (marker.args, dict(marker.kwargs)) if kwargs else marker.args
    old = _NEW_TO_OLD.get(name)
    if old is None:
        return
    for marker in item.iter_markers(old):
        warned = item.stash.setdefault(_WARNED, set())
        if old not in warned:
            warned.add(old)
            item.warn(
                K8sStateDeprecationWarning(
                    f"@pytest.mark.{old} is deprecated and will be removed in the next release: "
                    f"use @pytest.mark.{name}"
                )
            )
        yield (marker.args, dict(marker.kwargs)) if kwargs else marker.args


def legacy_fixture_plugin(session: pytest.Session) -> object | None:
    """The module defining the deprecated ``k8s`` fixture, or None when a plugin already defines ``k8s``."""
    manager = getattr(session, "_fixturemanager", None)
    if manager is None:
        return None
    import inspect

    takes_node = "node" in inspect.signature(manager.getfixturedefs).parameters  # pytest < 8.1: "nodeid"
    defined = manager.getfixturedefs("k8s", session if takes_node else session.nodeid)
    if defined:
        return None
    import pytest_k8sstate.plugin.legacy_fixture as module

    return module


def _taken_options(parser: pytest.Parser) -> set[str]:
    groups = list(getattr(parser, "_groups", []))
    anonymous = getattr(parser, "_anonymous", None)
    if anonymous is not None and anonymous not in groups:
        groups.append(anonymous)
    return {name for group in groups for arg in group.options for name in arg.names()}


def add_legacy_options(config: pytest.Config, parser: pytest.Parser) -> None:
    """Register the 0.1 spellings (``--k8s-nodes``, ini ``k8s_nodes``) that no plugin or conftest took.

    Called once every plugin and initial conftest has added its options: a name another plugin owns
    (pytest-kubernetes: ``--k8s-provider``, ``--k8s-version``, ``--k8s-kubeconfig``) stays theirs.
    """
    taken = _taken_options(parser)
    inis = set(getattr(parser, "_inidict", {}))
    group = parser.getgroup("k8sstate", "Kubernetes cluster state (pytest-k8sstate)")
    registered: set[str] = set()
    for opt in OPTIONS:
        if opt.legacy_flag is not None and opt.legacy_flag not in taken:
            _add(group, opt.legacy_flag, opt.legacy_dest, opt, f"deprecated: use {opt.flag}")
            registered.add(opt.legacy_flag)
        if opt.legacy_ini is not None and opt.legacy_ini not in inis:
            _addini(parser, opt.legacy_ini, opt, f"deprecated: use {opt.ini}")
            registered.add(opt.legacy_ini)
    config.stash[LEGACY_KEY] = frozenset(registered)
