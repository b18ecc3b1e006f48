"""Parse ``ipset save`` output (``create NAME TYPE OPTIONS…`` / ``add NAME MEMBER [OPTIONS…]`` lines).

:class:`IpSet` keeps the set's name, type, creation options (``family``, ``hashsize``, ``maxelem``,
``timeout``, ``counters``, ``comment``, … — flags map to ``""``) and its members in dump order.
``members`` holds the element itself (``10.96.0.1,tcp:443``; ``10.1.0.0/16 nomatch`` for an
exception entry): other per-member extras that change on their own
(remaining ``timeout``, ``packets``/``bytes`` counters) are not part of it; the per-member ``comment``
is kept in :attr:`IpSet.member_comments`. ``initval`` (a random hash seed chosen when the set is created)
is kept in ``options`` but :meth:`IpSet.stable_options` leaves it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Self

from pytest_k8sstate.errors import ParseError

__all__ = ["IpSet", "parse_ipset_save"]

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\S+')
_CREATE_FLAGS = frozenset({"counters", "comment", "skbinfo", "forceadd", "bucketsize_auto"})
_ADD_FLAGS = frozenset({"nomatch"})
_VOLATILE = frozenset({"initval"})


@dataclass
class IpSet:
    name: str
    type: str
    options: dict[str, str] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    member_comments: dict[str, str] = field(default_factory=dict)

    def stable_options(self) -> dict[str, str]:
        return {k: v for k, v in self.options.items() if k not in _VOLATILE}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "options": dict(self.options),
            "members": list(self.members),
            "member_comments": dict(self.member_comments),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        try:
            return cls(
                str(d["name"]),
                str(d["type"]),
                {str(k): str(v) for k, v in d["options"].items()},
                [str(m) for m in d["members"]],
                {str(k): str(v) for k, v in d.get("member_comments", {}).items()},
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ParseError("ipset JSON", None, "an IpSet object (to_json output)", repr(exc)) from exc


def _unquote(tok: str) -> str:
    if len(tok) >= 2 and tok[0] == '"' and tok[-1] == '"':
        return re.sub(r"\\(.)", r"\1", tok[1:-1])
    return tok


def _options(tokens: list[str], flags: frozenset[str], source: str, lineno: int) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        key = tokens[i]
        if key in flags:
            out[key] = ""
            i += 1
            continue
        if i + 1 >= len(tokens):
            raise ParseError(source, lineno, f"a value after option {key!r}", " ".join(tokens))
        out[key] = _unquote(tokens[i + 1])
        i += 2
    return out


def parse_ipset_save(text: str | bytes, source: str = "ipset save") -> list[IpSet]:
    """Parse ``ipset save`` (also ``ipset list -o save``) into sets in dump order."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    sets: dict[str, IpSet] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        tokens = _TOKEN.findall(s)
        verb = tokens[0]
        if verb == "create":
            if len(tokens) < 3:
                raise ParseError(source, lineno, "'create NAME TYPE [OPTIONS]'", line)
            name, typ = tokens[1], tokens[2]
            if name in sets:
                raise ParseError(source, lineno, f"set {name!r} created only once", line)
            if ":" not in typ:
                raise ParseError(source, lineno, "a set type like hash:ip,port", typ)
            sets[name] = IpSet(name, typ, _options(tokens[3:], _CREATE_FLAGS, source, lineno))
        elif verb == "add":
            if len(tokens) < 3:
                raise ParseError(source, lineno, "'add NAME MEMBER [OPTIONS]'", line)
            st = sets.get(tokens[1])
            if st is None:
                raise ParseError(source, lineno, f"a 'create {tokens[1]} ...' line before adding to it", line)
            opts = _options(tokens[3:], _ADD_FLAGS, source, lineno)
            member = tokens[2] + (" nomatch" if "nomatch" in opts else "")
            st.members.append(member)
            if opts.get("comment"):
                st.member_comments[member] = opts["comment"]
        else:
            raise ParseError(source, lineno, "a line starting with 'create' or 'add'", line)
    return list(sets.values())
