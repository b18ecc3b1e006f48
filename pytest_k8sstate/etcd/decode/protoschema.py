"""Descriptors of every built-in Kubernetes type, generated from the API modules' ``generated.proto`` files.

:func:`build_schema` parses the ``generated.proto`` files of ``k8s.io/apimachinery``, ``k8s.io/api``,
``k8s.io/apiextensions-apiserver`` and ``k8s.io/kube-aggregator`` (:mod:`.protofetch` finds them: module
cache or module proxy) with :mod:`.protoparse`, resolves every type reference, and joins each field with the
Go struct tag beside it: the JSON name (``json:"$ref"`` where the proto says ``ref``; ``""`` for an
embedded ``inline`` struct), ``omitempty`` / ``omitzero`` and whether the Go field is a pointer — what
decides if the apiserver's JSON shows a zero value. ``doc.go``'s ``+groupName`` (or ``register.go``'s
``GroupName``) maps each API group/version to its proto package.

The result is a JSON document cached per module version (and per version of this generator's code) under
``<cache>/decode/``
(:func:`load_schema`: generated on first use, then read back). Nothing upstream is committed.

Schema document: ``{"format", "version", "sources", "groups": {apiVersion: proto package},
"messages": {full name: {"f": [[number, json name, type, repeated, omitempty, pointer, map key type,
omitzero]],
"slice": bool}}, "enums": {full name: {number: name}}}``; ``type`` is a scalar name or a full message /
enum name (no leading dot).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from pytest_k8sstate.binaries.versions import Versions, staging_version
from pytest_k8sstate.errors import BinaryError, K8sStateError
from pytest_k8sstate.etcd.decode import protoparse
from pytest_k8sstate.etcd.decode.protofetch import API_MODULES, module_files
from pytest_k8sstate.etcd.decode.protoparse import GoField, ProtoFile, group_name, parse_proto, scan_go_tags
from pytest_k8sstate.util.files import atomic_write_json, cache_dir

__all__ = [
    "FORMAT",
    "SCALARS",
    "build_schema",
    "default_version",
    "ensure_descriptors",
    "load_schema",
    "schema_path",
]

FORMAT = 2
SCALARS = frozenset(
    {
        "string",
        "bytes",
        "bool",
        "int32",
        "int64",
        "uint32",
        "uint64",
        "sint32",
        "sint64",
        "fixed32",
        "fixed64",
        "sfixed32",
        "sfixed64",
        "double",
        "float",
    }
)


def default_version() -> str:
    """The staging module version (``v0.37.1``) of the resolved Kubernetes version
    (``$K8SSTATE_KUBERNETES_VERSION``, else the pinned one)."""
    return staging_version(Versions.resolve().kubernetes)


def _generator_id() -> str:
    """A digest of this generator's own code: a cached schema made by other code is regenerated."""
    h = hashlib.sha256(str(FORMAT).encode())
    for mod in (__file__, protoparse.__file__):
        with contextlib.suppress(OSError):
            h.update(Path(mod).read_bytes())
    return h.hexdigest()[:12]


def schema_path(version: str, env: dict[str, str] | None = None) -> Path:
    return cache_dir(env) / "decode" / f"k8s-proto-{version}-{_generator_id()}.json"


def _resolve(ref: str, scope: str, known: set[str]) -> str | None:
    """Protobuf scoping: ``.a.b.C`` is absolute; ``C`` is looked up from the innermost scope outwards."""
    if ref.startswith("."):
        return ref[1:] if ref[1:] in known else None
    parts = scope.split(".")
    while parts:
        cand = ".".join([*parts, ref])
        if cand in known:
            return cand
        parts.pop()
    return ref if ref in known else None


def build_schema(version: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Generate the schema document of the API modules at ``version`` (``v0.37.1``); see module doc."""
    files: list[ProtoFile] = []
    go_tags: dict[str, dict[str, dict[int, GoField]]] = {}  # proto package -> struct -> fields
    groups: dict[str, str] = {}
    sources: dict[str, str] = {}
    for module in API_MODULES:
        content, origin = module_files(module, version, env)
        sources[module] = origin
        by_dir: dict[str, list[str]] = {}
        for rel in content:
            by_dir.setdefault(rel.rsplit("/", 1)[0], []).append(rel)
        for d, names in sorted(by_dir.items()):
            proto_name = f"{d}/generated.proto"
            if proto_name not in content:
                continue
            pf = parse_proto(
                content[proto_name].decode("utf-8", "replace"), f"{module}@{version}/{proto_name}"
            )
            files.append(pf)
            tags = go_tags.setdefault(pf.package, {})
            group: str | None = None
            for n in sorted(names):
                if n.endswith(".go"):
                    text = content[n].decode("utf-8", "replace")
                    tags.update(scan_go_tags(text))
                    group = group if group is not None else group_name(text)
            if group is not None and group != "meta.k8s.io":
                api_version = d.rsplit("/", 1)[-1]
                groups.setdefault(f"{group}/{api_version}" if group else api_version, pf.package)
    known_msgs = {m for f in files for m in f.messages}
    known_enums = {e for f in files for e in f.enums}
    known = known_msgs | known_enums
    messages: dict[str, Any] = {}
    for pf in files:
        for full, msg in pf.messages.items():
            struct = full[len(pf.package) + 1 :] if pf.package else full
            struct_tags = go_tags.get(pf.package, {}).get(struct, {})
            rows: list[list[Any]] = []
            for f in msg.fields:
                typ = f.type if f.type in SCALARS else _resolve(f.type, full, known)
                if typ is None:
                    raise K8sStateError(
                        f"{pf.path}: message {full} field {f.name} = {f.number}: type {f.type!r} is not "
                        "defined in any generated.proto of the API modules"
                    )
                go = struct_tags.get(f.number)
                if go is None:
                    json_name, omitempty, pointer, omitzero = f.name, True, False, False
                else:
                    json_name = "" if go.inline else go.json_name or f.name
                    omitempty, pointer, omitzero = go.omitempty, go.pointer, go.omitzero
                rows.append([f.number, json_name, typ, f.repeated, omitempty, pointer, f.map_key, omitzero])
            messages[full] = {"f": rows, "slice": msg.slice_type}
    enums = {name: {str(k): v for k, v in vals.items()} for pf in files for name, vals in pf.enums.items()}
    return {
        "format": FORMAT,
        "version": version,
        "sources": sources,
        "groups": dict(sorted(groups.items())),
        "messages": messages,
        "enums": enums,
    }


def _looks_valid(doc: Any, version: str) -> bool:
    """A cached document of this format and version with the expected shape (else it is regenerated)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != version:
        return False
    groups, messages = doc.get("groups"), doc.get("messages")
    if not isinstance(groups, dict) or not all(isinstance(v, str) for v in groups.values()):
        return False
    if not isinstance(messages, dict) or not isinstance(doc.get("enums", {}), dict):
        return False
    return all(
        isinstance(m, dict)
        and isinstance(m.get("f"), list)
        and all(isinstance(r, list) and len(r) == 8 and isinstance(r[0], int) for r in m["f"])
        for m in messages.values()
    )


_LOCK = threading.Lock()
_LOADED: dict[str, dict[str, Any] | BinaryError | K8sStateError] = {}


def load_schema(version: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The schema document of ``version`` (default :func:`default_version`): from the cache, else generated
    and cached. Raises :class:`BinaryError` (sources unreachable) or :class:`K8sStateError` (unparsable);
    the failure is remembered for the process so a capture tries once, not once per value."""
    version = version or default_version()
    with _LOCK:
        got = _LOADED.get(version) if env is None else None
        if isinstance(got, dict):
            return got
        if got is not None:
            raise got
        path = schema_path(version, env)
        doc: dict[str, Any] | None = None
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(path.read_text())
            if _looks_valid(loaded, version):
                doc = loaded
        if doc is None:
            try:
                doc = build_schema(version, env)
            except K8sStateError as exc:
                if env is None:
                    _LOADED[version] = exc
                raise
            with contextlib.suppress(OSError):
                atomic_write_json(path, doc, indent=None)
        if env is None:
            _LOADED[version] = doc
        return doc


def forget_loaded() -> None:
    """Drop the per-process memory of loaded schemas and failures (tests; after fixing a source)."""
    with _LOCK:
        _LOADED.clear()


def ensure_descriptors(version: str | None = None) -> Path:
    """Generate (or find) the cached descriptors of ``version`` now — e.g. right after installing binaries —
    and return the cache file. Raises :class:`BinaryError` with the sources tried when none answers."""
    version = version or default_version()
    load_schema(version)
    return schema_path(version)


def main(argv: list[str] | None = None) -> int:
    """``python -m pytest_k8sstate.etcd.decode.protoschema [v0.37.1]``: pre-generate the descriptors."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    try:
        path = ensure_descriptors(args[0] if args else None)
    except K8sStateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
