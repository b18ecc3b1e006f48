"""A small ``.proto`` (proto2/proto3) parser and a Go struct tag scanner: what the descriptors are built of.

:func:`parse_proto` reads packages, imports, (nested) messages, enums, fields with ``optional`` /
``repeated`` / ``required`` / no label, ``map<K, V>``, ``oneof`` members; options, ``reserved`` and
``extensions`` are skipped. Comments are kept only for the ``+protobuf.nullable=true`` marker that
go-to-protobuf puts on messages standing for a Go slice type (``type ExtraValue []string``).
Malformed input raises :class:`~pytest_k8sstate.errors.ParseError` naming the file and line.

:func:`scan_go_tags` reads ``json:"…"`` / ``protobuf:"…"`` struct tags of Go files: the JSON name of each
protobuf field number, whether it is ``omitempty`` and whether the Go field is a pointer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pytest_k8sstate.errors import ParseError

__all__ = ["GoField", "ProtoField", "ProtoFile", "ProtoMessage", "group_name", "parse_proto", "scan_go_tags"]


@dataclass
class ProtoField:
    name: str
    number: int
    type: str  # scalar name or a (not yet resolved) message/enum reference
    repeated: bool = False
    map_key: str | None = None  # map<map_key, type>


@dataclass
class ProtoMessage:
    name: str  # fully qualified, no leading dot
    fields: list[ProtoField] = field(default_factory=list)
    slice_type: bool = False  # "+protobuf.nullable=true": a Go slice type wrapped in a message


@dataclass
class ProtoFile:
    path: str
    package: str = ""
    imports: list[str] = field(default_factory=list)
    messages: dict[str, ProtoMessage] = field(default_factory=dict)
    enums: dict[str, dict[int, str]] = field(default_factory=dict)


_TOKEN = re.compile(
    r"//[^\n]*|/\*.*?\*/|\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|\.?[A-Za-z_][\w.]*|-?\d+|\S",
    re.DOTALL,
)


class _Tokens:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.toks: list[tuple[str, int]] = []
        self.comments: dict[int, str] = {}  # token index -> comments right before it
        pending: list[str] = []
        for m in _TOKEN.finditer(text):
            t = m.group()
            if t.startswith(("//", "/*")):
                pending.append(t)
                continue
            if pending:
                self.comments[len(self.toks)] = "\n".join(pending)
                pending = []
            self.toks.append((t, m.start()))
        self.i = 0

    def error(self, expected: str) -> ParseError:
        if self.i < len(self.toks):
            tok, pos = self.toks[self.i]
            return ParseError(self.source, self.text.count("\n", 0, pos) + 1, expected, tok)
        return ParseError(self.source, self.text.count("\n") + 1, expected, "end of file")

    def peek(self) -> str:
        return self.toks[self.i][0] if self.i < len(self.toks) else ""

    def next(self) -> str:
        if self.i >= len(self.toks):
            raise self.error("more input")
        self.i += 1
        return self.toks[self.i - 1][0]

    def expect(self, want: str) -> None:
        if self.peek() != want:
            raise self.error(repr(want))
        self.i += 1

    def ident(self, what: str) -> str:
        t = self.peek()
        if not t or not (t[0].isalpha() or t[0] in "._"):
            raise self.error(what)
        self.i += 1
        return t

    def number(self) -> int:
        t = self.peek()
        if not re.fullmatch(r"-?\d+", t):
            raise self.error("a number")
        self.i += 1
        return int(t)

    def skip_statement(self) -> None:
        """Skip to the ``;`` ending this statement (brackets and braces balanced)."""
        depth = 0
        while True:
            t = self.next()
            if t in "{[(":
                depth += 1
            elif t in "}])":
                depth -= 1
            elif t == ";" and depth <= 0:
                return


_LABELS = ("optional", "repeated", "required")


def _field(tk: _Tokens, msg: ProtoMessage) -> None:
    repeated = False
    key: str | None = None
    if tk.peek() in _LABELS:
        repeated = tk.next() == "repeated"
    if tk.peek() == "map" and tk.toks[tk.i + 1][0] == "<":
        tk.i += 2
        key = tk.ident("a map key type")
        tk.expect(",")
        typ = tk.ident("a map value type")
        tk.expect(">")
        repeated = True
    else:
        typ = tk.ident("a field type")
    name = tk.ident("a field name")
    tk.expect("=")
    num = tk.number()
    if not 1 <= num <= 0x1FFFFFFF:
        tk.i -= 1
        raise tk.error("a field number 1..536870911")
    if tk.peek() == "[":
        tk.skip_statement()
    else:
        tk.expect(";")
    msg.fields.append(ProtoField(name, num, typ, repeated, key))


def _enum(tk: _Tokens, scope: str, pf: ProtoFile) -> None:
    name = tk.ident("an enum name")
    tk.expect("{")
    values: dict[int, str] = {}
    while tk.peek() != "}":
        t = tk.ident("an enum value name")
        if t in ("option", "reserved"):
            tk.skip_statement()
            continue
        tk.expect("=")
        n = tk.number()
        values.setdefault(n, t)
        if tk.peek() == "[":
            tk.skip_statement()
        else:
            tk.expect(";")
    tk.expect("}")
    pf.enums[f"{scope}.{name}" if scope else name] = values


def _message(tk: _Tokens, scope: str, pf: ProtoFile, comment: str) -> None:
    name = tk.ident("a message name")
    full = f"{scope}.{name}" if scope else name
    msg = ProtoMessage(full, slice_type="+protobuf.nullable=true" in comment)
    pf.messages[full] = msg
    tk.expect("{")
    while tk.peek() != "}":
        at = tk.i
        t = tk.peek()
        if t == "message":
            tk.i += 1
            _message(tk, full, pf, tk.comments.get(at, ""))
        elif t == "enum":
            tk.i += 1
            _enum(tk, full, pf)
        elif t in ("option", "reserved", "extensions", "extend"):
            if t == "extend":
                tk.i += 2
                tk.expect("{")
                while tk.next() != "}":
                    pass
            else:
                tk.skip_statement()
        elif t == "oneof":
            tk.i += 1
            tk.ident("a oneof name")
            tk.expect("{")
            while tk.peek() != "}":
                if tk.peek() == "option":
                    tk.skip_statement()
                else:
                    _field(tk, msg)
            tk.expect("}")
        elif t == ";":
            tk.i += 1
        elif t == "":
            raise tk.error("'}' closing message " + full)
        else:
            _field(tk, msg)
    tk.expect("}")


def parse_proto(text: str, source: str) -> ProtoFile:
    """Parse one ``.proto`` file (see module doc)."""
    tk = _Tokens(text, source)
    pf = ProtoFile(source)
    while tk.i < len(tk.toks):
        at = tk.i
        t = tk.next()
        if t == "syntax" or t == "edition":
            tk.skip_statement()
        elif t == "package":
            pf.package = tk.ident("a package name")
            tk.expect(";")
        elif t == "import":
            if tk.peek() in ("public", "weak"):
                tk.i += 1
            path = tk.next()
            if not path.startswith(('"', "'")):
                tk.i -= 1
                raise tk.error("a quoted import path")
            pf.imports.append(path[1:-1])
            tk.expect(";")
        elif t == "option":
            tk.skip_statement()
        elif t == "message":
            _message(tk, pf.package, pf, tk.comments.get(at, ""))
        elif t == "enum":
            _enum(tk, pf.package, pf)
        elif t == ";":
            continue
        else:
            tk.i -= 1
            raise tk.error("syntax, package, import, option, message or enum")
    return pf


@dataclass(frozen=True)
class GoField:
    json_name: str  # "" with ``inline``: the fields are the parent's
    omitempty: bool
    pointer: bool
    omitzero: bool = False
    inline: bool = False


_STRUCT = re.compile(r"^type\s+(\w+)\s+struct\s*\{", re.MULTILINE)
_FIELD = re.compile(r"^\s*(?:(\w+)\s+)?([^\s`]+)\s+`([^`]*)`", re.MULTILINE)
_JSON_TAG = re.compile(r'json:"([^"]*)"')
_PROTO_TAG = re.compile(r'protobuf:"\w+,(\d+),')
_GROUP = re.compile(r"^//\s*\+groupName=([\w.-]*)\s*$|^const\s+GroupName\s*=\s*\"([\w.-]*)\"", re.MULTILINE)


def scan_go_tags(text: str) -> dict[str, dict[int, GoField]]:
    """Go struct name → protobuf field number → :class:`GoField` (fields with both tags only)."""
    out: dict[str, dict[int, GoField]] = {}
    for m in _STRUCT.finditer(text):
        end = text.find("\n}", m.end())
        body = text[m.end() : end if end >= 0 else len(text)]
        fields: dict[int, GoField] = {}
        for line in body.splitlines():
            if line.lstrip().startswith("//"):
                continue
            fm = _FIELD.match(line)
            if fm is None:
                continue
            jm, pm = _JSON_TAG.search(fm[3]), _PROTO_TAG.search(fm[3])
            if jm is None or pm is None:
                continue
            name, _, opts = jm[1].partition(",")
            if name == "-":
                continue
            o = opts.split(",")
            embedded = fm[1] is None  # an anonymous field without a JSON name is inlined by encoding/json
            fields[int(pm[1])] = GoField(
                name,
                "omitempty" in o,
                fm[2].startswith("*"),
                "omitzero" in o,
                not name and ("inline" in o or embedded),
            )
        if fields:
            out[m[1]] = fields
    return out


def group_name(text: str) -> str | None:
    """The ``// +groupName=`` (doc.go) or ``const GroupName = "…"`` (register.go) of a Go package (``""`` for
    the core group), or None."""
    m = _GROUP.search(text)
    if m is None:
        return None
    return m[1] if m[1] is not None else m[2]
