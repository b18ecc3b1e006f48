"""Descriptors compiled for decoding: field kinds, the messages with their own JSON form (:data:`SPECIAL`)
and :class:`Compiled` (a schema document of :mod:`.protoschema`, compiled message by message on first use)."""

from __future__ import annotations

from typing import Any

__all__ = ["SPECIAL", "Compiled", "Msg"]

# field kinds
# length-delimited kinds first (_SPEC: a message of :data:`SPECIAL`, sub = (its special, its name); _MAP: a
# map field, whatever its value kind), then varints, then fixed sizes
(
    _STR,
    _BYTES,
    _MSG,
    _SPEC,
    _MAP,
    _INT,
    _BOOL,
    _UINT,
    _SINT,
    _ENUM,
    _DOUBLE,
    _FLOAT,
    _FIX32,
    _FIX64,
    _SFIX32,
    _SFIX64,
) = range(16)
_SCALAR_KIND = {
    "string": (_STR, 2),
    "bytes": (_BYTES, 2),
    "int32": (_INT, 0),
    "int64": (_INT, 0),
    "uint32": (_UINT, 0),
    "uint64": (_UINT, 0),
    "sint32": (_SINT, 0),
    "sint64": (_SINT, 0),
    "bool": (_BOOL, 0),
    "double": (_DOUBLE, 1),
    "float": (_FLOAT, 5),
    "fixed32": (_FIX32, 5),
    "fixed64": (_FIX64, 1),
    "sfixed32": (_SFIX32, 5),
    "sfixed64": (_SFIX64, 1),
}
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_APIEXT = (
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.",
)
#: messages with their own JSON form (see module doc)
SPECIAL: dict[str, str] = {
    _META + "Time": "time",
    _META + "MicroTime": "microtime",
    _META + "Duration": "duration",
    _META + "FieldsV1": "raw",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "raw",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "intorstring",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "quantity",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": "quantity",
    **{p + "JSON": "raw" for p in _APIEXT},
    **{p + "JSONSchemaPropsOrBool": "orbool" for p in _APIEXT},
    **{p + "JSONSchemaPropsOrArray": "orarray" for p in _APIEXT},
    **{p + "JSONSchemaPropsOrStringArray": "orarray" for p in _APIEXT},
}


class Msg:
    __slots__ = ("fields", "name", "nulls", "plain", "slice", "special", "tags")

    def __init__(self, name: str) -> None:
        self.name = name
        # number -> (json name, kind, wire type, sub message | enum names | None, repeated, keep zero,
        # map key,
        # omitzero); json name "" = an embedded inline struct
        self.fields: dict[int, tuple[str, int, int, Any, bool, bool, Any, bool]] = {}
        self.special = SPECIAL.get(name)
        self.slice = False
        self.plain = False  # neither special nor a slice: decoded field by field
        self.nulls: tuple[str, ...] = ()  # JSON null when absent: nil slices/maps/pointers without omitempty
        # the fast path: wire tag (number << 3 | wire type) -> (json name, kind, sub, repeated, keep zero,
        # omitzero)
        self.tags: dict[int, tuple[str, int, Any, bool, bool, bool]] = {}


class Compiled:
    """A schema document (:func:`.protoschema.load_schema`) compiled lazily, message by message."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.version: str = doc.get("version", "")
        self.groups: dict[str, str] = doc["groups"]
        self._raw: dict[str, Any] = doc["messages"]
        self._enums: dict[str, dict[str, str]] = doc.get("enums", {})
        self._msgs: dict[str, Msg] = {}

    def message(self, name: str) -> Msg | None:
        m = self._msgs.get(name)
        if m is not None:
            return m
        raw = self._raw.get(name)
        if raw is None:
            return None
        m = Msg(name)
        m.slice = bool(raw.get("slice"))
        m.plain = m.special is None and not m.slice
        nulls = []
        for num, jname, typ, repeated, omitempty, pointer, map_key, omitzero in raw["f"]:
            keep = bool(pointer or not (omitempty or omitzero))
            m.fields[num] = self._field(jname, typ, repeated, keep, map_key, bool(omitzero and not pointer))
            if jname and not omitempty and not omitzero and (repeated or pointer) and not m.slice:
                nulls.append(jname)
        m.nulls = tuple(nulls)
        for num, (jname, kind, wt, sub, repeated, keep, key, oz) in m.fields.items():
            if key is not None:
                if kind == _MSG and sub in SPECIAL and sub in self._raw:  # map<string, Quantity>, ...
                    kind, sub = _SPEC, (SPECIAL[sub], sub)
                m.tags[num << 3 | 2] = (jname, _MAP, (kind, sub, key), repeated, keep, oz)
            else:
                m.tags[num << 3 | wt] = self._tag_entry(jname, kind, sub, repeated, keep, oz)
        # published only when complete: decoding threads read _msgs without a lock (fields name their
        # message types by name, so compiling one message never needs another)
        self._msgs[name] = m
        return m

    def _field(self, jname: str, typ: str, repeated: bool, keep: bool, map_key: str | None, oz: bool) -> Any:
        key = _SCALAR_KIND.get(map_key) if map_key else None
        if typ in _SCALAR_KIND:
            kind, wt = _SCALAR_KIND[typ]
            return (jname, kind, wt, None, repeated, keep, key, oz)
        if typ in self._enums:
            return (
                jname,
                _ENUM,
                0,
                {int(k): v for k, v in self._enums[typ].items()},
                repeated,
                keep,
                key,
                oz,
            )
        return (jname, _MSG, 2, typ, repeated, keep, key, oz)

    def _tag_entry(self, jname: str, kind: int, sub: Any, repeated: bool, keep: bool, oz: bool) -> Any:
        """The fast path's entry of a field; a (non-map) field of a :data:`SPECIAL` message is ``_SPEC``."""
        if kind == _MSG and sub in SPECIAL and sub in self._raw:
            return (jname, _SPEC, (SPECIAL[sub], sub), repeated, keep, oz)
        return (jname, kind, sub, repeated, keep, oz)

    def lookup(self, api_version: str | None, kind: str | None) -> Msg | None:
        """The message of a stored object (``apps/v1`` ``Deployment`` → ``k8s.io.api.apps.v1.Deployment``)."""
        pkg = self.groups.get(api_version or "")
        return self.message(f"{pkg}.{kind}") if pkg and kind else None
