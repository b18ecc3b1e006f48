"""``-m recent`` (session affinity) for a first and a follow-up connection of one client.

kube-proxy (iptables mode) writes, for every ``sessionAffinity: ClientIP`` Service, one rule per
endpoint at the top of the ``KUBE-SVC-…`` chain::

    -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-X --mask 255.255.255.255 --rsource -j KUBE-SEP-X

and ``-m recent --set --name KUBE-SEP-X …`` on the endpoint's DNAT rule: the first connection's
backend records the client in that endpoint's list, and a later connection from the same client is
sent to the endpoint whose list holds it.

The tracer carries the recent lists along each path as a set of :data:`Entry` ``(list name,
address)`` pairs (the address as the list stores it: ``--rsource`` the source, ``--rdest`` the
destination, masked with ``--mask``):

* ``--set`` always matches (``!``: never) and adds the entry;
* ``--rcheck``/``--update`` match when the entry is held; ``--remove`` too, and removes it;
* ``--seconds``/``--reap``: an entry is assumed to be younger than every window (a follow-up
  connection within the affinity timeout); ``--rttl`` holds (same client, same TTL);
  ``--hitcount`` cannot be evaluated (a count of earlier packets).

A new connection starts with no entries (``Packet(affinity="new")``); a returning one starts with
the entries its first connection left (see :mod:`pytest_k8sstate.trace.affinity`).
"""

from __future__ import annotations

import ipaddress

from pytest_k8sstate.parse.iptables import Match
from pytest_k8sstate.trace.ipsets import CannotEvaluate

__all__ = ["Entry", "match_recent"]

Entry = tuple[str, str]
"""One client in one recent list: (list name, address as stored)."""

_COMMANDS = frozenset({"--set", "--rcheck", "--update", "--remove"})
_IGNORED = frozenset({"--seconds", "--reap", "--rttl", "--rsource", "--rdest", "--name", "--mask"})


def match_recent(
    m: Match, src: str, dst: str, held: frozenset[Entry]
) -> tuple[bool, frozenset[Entry] | None]:
    """Evaluate one ``-m recent`` match: ``(matches, the lists after it)``; the lists are None when
    unchanged. Raises CannotEvaluate for ``--hitcount`` and unknown options."""
    name = "DEFAULT"
    command: str | None = None
    negated = False
    use_dst = False
    mask: str | None = None
    for o in m.opts:
        if o.name in _COMMANDS:
            if command is not None:
                raise CannotEvaluate(f"cannot evaluate -m recent: both {command} and {o.name}")
            command, negated = o.name, o.negated
        elif o.name == "--name":
            name = o.value or "DEFAULT"
        elif o.name == "--rdest":
            use_dst = True
        elif o.name == "--mask":
            mask = o.value
        elif o.name == "--hitcount":
            raise CannotEvaluate(f"cannot evaluate -m recent --hitcount {o.value}: it counts earlier packets")
        elif o.name not in _IGNORED:
            raise CannotEvaluate(f"cannot evaluate -m recent option {o.name} (list {name})")
    if command is None:
        raise CannotEvaluate(
            f"cannot evaluate -m recent without --set/--rcheck/--update/--remove (list {name})"
        )
    addr = dst if use_dst else src
    try:
        a = ipaddress.ip_address(addr)
        if mask is not None:
            mk = ipaddress.ip_address(mask)
            if mk.version != a.version:
                raise CannotEvaluate(f"cannot evaluate -m recent --mask {mask} for an IPv{a.version} packet")
            a = ipaddress.ip_address(int(a) & int(mk))
    except ValueError as exc:
        raise CannotEvaluate(f"cannot evaluate -m recent (list {name}): {exc}") from None
    entry: Entry = (name, str(a))
    if command == "--set":
        return (not negated), (held | {entry} if entry not in held else None)
    present = entry in held
    after = held - {entry} if command == "--remove" and present else None
    return present != negated, after
