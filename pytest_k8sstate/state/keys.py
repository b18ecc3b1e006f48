"""etcd key globs, the default ignore patterns of the diff view, and key counts per resource.

Patterns are globs on keys: ``*`` and ``?`` stay within one ``/`` segment, ``**`` crosses segments
(``/registry/leases/**`` matches ``/registry/leases`` too). A pattern without a leading ``/`` is relative
to ``/registry/``: ``services/specs/default/*``.

Heartbeats keep rewriting a few keys while a cluster is idle. They are always recorded in a diff, but the
default view hides:

* :data:`DEFAULT_IGNORE` — any change (added, removed, modified) under ``/registry/leases/**`` (node
  heartbeats in ``kube-node-lease``, leader election of kube-controller-manager / kube-scheduler),
  ``/registry/masterleases/**`` (apiserver endpoint reconciler) and ``/registry/events/**`` (Events: written
  as a side effect of almost everything, expire after an hour);
* :data:`DEFAULT_IGNORE_MODIFIED` — only *modifications* of ``/registry/minions/*`` (Node objects: the
  kubelet refreshes their status periodically). A node added or removed stays visible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = [
    "DEFAULT_IGNORE",
    "DEFAULT_IGNORE_MODIFIED",
    "REGISTRY_PREFIX",
    "compile_key_pattern",
    "key_matches",
    "matches_any",
    "resource_counts",
]

DEFAULT_IGNORE: tuple[str, ...] = (
    "/registry/leases/**",
    "/registry/masterleases/**",
    "/registry/events/**",
)
"""Keys whose changes (any kind) the default view hides. See the module docstring."""

DEFAULT_IGNORE_MODIFIED: tuple[str, ...] = ("/registry/minions/*",)
"""Keys whose *modifications* the default view hides (Node status refreshes); additions stay visible."""

REGISTRY_PREFIX = "/registry/"


@lru_cache(maxsize=1024)
def compile_key_pattern(pattern: str) -> re.Pattern[str]:
    """Glob → regex: ``*``/``?`` within a segment, ``**`` across; relative patterns start at /registry/."""
    if not pattern.startswith("/"):
        pattern = REGISTRY_PREFIX + pattern
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("/**", i) and (i + 3 == n or pattern[i + 3] == "/"):
            out.append("(?:/.*)?")  # "/**" also matches nothing: /registry/leases/** ~ /registry/leases
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def key_matches(pattern: str, key: str) -> bool:
    return compile_key_pattern(pattern).match(key) is not None


def matches_any(patterns: Iterable[str], key: str) -> bool:
    return any(key_matches(p, key) for p in patterns)


def resource_counts(keys: Iterable[str]) -> dict[str, int]:
    """``/registry/<resource>/…`` → count; CRDs as ``<group>/<plural>``, ``services/specs`` kept whole."""
    out: dict[str, int] = {}
    for key in keys:
        parts = key.split("/")
        if len(parts) < 3 or parts[1] != "registry":
            res = "(outside /registry)"
        else:
            res = parts[2]
            if (res == "services" or "." in res) and len(parts) > 4:
                res = f"{res}/{parts[3]}"
        out[res] = out.get(res, 0) + 1
    return out
