"""The optional ``conntrack`` part of a node capture: ``conntrack -L -o extended`` for IPv4 and IPv6.

Off by default (the table changes with every connection, so it is evidence, not state to diff). On for a
capture when :func:`enabled`: ``K8SSTATE_CONNTRACK=1``, or :func:`set_enabled` (the pytest plugin's
``--k8sstate-conntrack`` option and ``@pytest.mark.k8sstate_conntrack`` marker use it), or when asked
for explicitly with ``collect_node(..., parts=[..., "conntrack"])``. The result is
``NodeState.conntrack`` (a list of :class:`~pytest_k8sstate.parse.conntrack.ConntrackEntry`; None when
not captured); at most :data:`MAX_ENTRIES` entries are kept (``NodeState.errors["conntrack"]`` says so).
Needs the ``conntrack`` program (conntrack-tools) on the node: kind's node image has it.
"""

from __future__ import annotations

import os

from pytest_k8sstate.parse.conntrack import ConntrackEntry, parse_conntrack

__all__ = ["ENV", "MAX_ENTRIES", "PART", "SCRIPT", "enabled", "parse_part", "set_enabled"]

PART = "conntrack"
ENV = "K8SSTATE_CONNTRACK"
MAX_ENTRIES = 50_000
# exit 127 (as sh for a missing command) when conntrack is not installed; both families, extended format
SCRIPT = (
    "command -v conntrack >/dev/null 2>&1 || exit 127; "
    "conntrack -L -f ipv4 -o extended && conntrack -L -f ipv6 -o extended"
)
_forced: bool | None = None


def enabled() -> bool:
    """Whether captures include the conntrack part by default (:func:`set_enabled`, else
    ``$K8SSTATE_CONNTRACK``)."""
    if _forced is not None:
        return _forced
    return os.environ.get(ENV, "0").strip().lower() not in ("0", "false", "no", "")


def set_enabled(value: bool | None) -> bool | None:
    """Force the default on/off (None: back to the environment variable); returns the previous setting."""
    global _forced
    previous, _forced = _forced, value
    return previous


def parse_part(data: bytes, source: str) -> tuple[list[ConntrackEntry], str | None]:
    """The part's output → entries (at most :data:`MAX_ENTRIES`) and a note when some were cut."""
    entries = parse_conntrack(data, source=source)
    if len(entries) > MAX_ENTRIES:
        return entries[:MAX_ENTRIES], f"cut: first {MAX_ENTRIES} of {len(entries)} entries kept"
    return entries, None
