"""Full decoding without a cluster: kube-apiserver's round-trip idea over every message of the descriptors.

For each message of the generated schema an instance is built here with its own small encoder — every field
set to a value derived from its number and name, repeated fields twice, maps with two keys, nested messages
recursively — together with the JSON the apiserver would serve for it (written from the Go tag rules: JSON
names, inline structs, times, int-or-string, ...). Decoding the bytes must give exactly that JSON: every
leaf named, no ``#N`` left."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_k8sstate.etcd.decode.protobuf import active_schema
from pytest_k8sstate.etcd.decode.typed import SPECIAL, Compiled, decode_typed, go_duration


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len(num: int, data: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _int(num: int, v: int) -> bytes:
    return _varint(num << 3) + _varint(v)


@pytest.fixture(scope="module")
def schema() -> Compiled:
    c = active_schema()
    if c is None:
        pytest.skip("descriptors unavailable (no module cache, no module proxy)")
    return c


class _Gen:
    """Instances of schema messages: (wire bytes, the JSON expected from decoding them)."""

    def __init__(self, c: Compiled) -> None:
        self.c = c
        self.raw: dict[str, Any] = c.doc["messages"]

    def scalar(self, typ: str, num: int, name: str, seq: int) -> tuple[bytes, Any]:
        if typ == "string":
            v = f"{name}-{seq}"
            return _len(num, v.encode()), v
        if typ == "bytes":
            b = bytes([num & 0xFF, seq, 0xFF])
            return _len(num, b), base64.b64encode(b).decode()
        if typ == "bool":
            return _int(num, 1), True
        if typ in ("int32", "int64", "uint32", "uint64"):
            v = num * 10 + seq + (-1 if typ.startswith("int") and seq == 2 else 0) * 0
            return _int(num, v), v
        if typ == "double":
            return _varint(num << 3 | 1) + struct.pack("<d", num + 0.5), num + 0.5
        raise AssertionError(f"scalar {typ} not in the Kubernetes API: extend the test")

    def special(self, typ: str, name: str, num: int, stack: tuple[str, ...]) -> tuple[bytes, Any]:
        kind = SPECIAL[typ]
        if kind == "time":
            return _int(1, 1_700_000_000 + num), _rfc(1_700_000_000 + num, "%Y-%m-%dT%H:%M:%SZ")
        if kind == "microtime":
            body = _int(1, 1_700_000_000) + _int(2, 123_456_000)
            return body, "2023-11-14T22:13:20.123456Z"
        if kind == "duration":
            return _int(1, 90 * 10**9 + num), go_duration(90 * 10**9 + num)
        if kind == "intorstring":
            return (_int(1, 1) + _len(3, b"http"), "http") if num % 2 else (_int(2, num), num)
        if kind == "quantity":
            return _len(1, b"250m"), "250m"
        if kind == "raw":
            doc = {"f": num, "name": name}
            return _len(1, json.dumps(doc).encode()), doc
        sub, sub_json = (
            self.message(
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps", stack, top=False
            )
            if len(stack) < 3
            else (b"", {})
        )
        if kind == "orbool":
            return (_len(2, sub), sub_json) if num % 2 and len(stack) < 3 else (_int(1, 1), True)
        if len(stack) < 3:
            return _len(1, sub), sub_json
        if typ.endswith("StringArray"):
            return _len(2, b"a") + _len(2, b"b"), ["a", "b"]
        return b"", []

    def value(
        self, typ: str, num: int, name: str, seq: int, stack: tuple[str, ...]
    ) -> tuple[bytes, Any] | None:
        """The encoded *contents* of a length-delimited value of message ``typ`` (None: recursion cut)."""
        if typ in SPECIAL:
            return self.special(typ, name, num + seq, stack)
        if typ in stack or len(stack) > 8:
            return None
        return self.message(typ, stack, top=False)

    def message(self, name: str, stack: tuple[str, ...] = (), *, top: bool = True) -> tuple[bytes, Any]:
        m = self.raw[name]
        stack = (*stack, name)
        out = b""
        exp: dict[str, Any] = {}
        if m["slice"]:
            (num, _, typ, *_rest) = m["f"][0]
            vals = [f"item-{i}" for i in range(2)]
            return b"".join(_len(num, v.encode()) for v in vals), vals
        for num, jname, typ, repeated, omitempty, pointer, map_key, omitzero in m["f"]:
            got: list[Any] = []
            if map_key is not None:
                entries = {}
                for seq in (1, 2):
                    k = f"key-{seq}" if map_key == "string" else None
                    assert k is not None, f"{name}.{jname}: map key {map_key}"
                    if typ in self.raw:
                        v = self.value(typ, num, jname, seq, stack)
                        if v is None:
                            break
                        vb, vj = _len(2, v[0]), v[1]
                    else:
                        vb, vj = self.scalar(typ, 2, jname, seq)
                    out += _len(num, _len(1, k.encode()) + vb)
                    entries[k] = vj
                if entries:
                    exp[jname] = entries
                elif not (omitempty or omitzero):
                    exp[jname] = None
                continue
            for seq in (1, 2) if repeated else (1,):
                if typ in self.raw:
                    v = self.value(typ, num, jname, seq, stack)
                    if v is None:
                        break
                    out += _len(num, v[0])
                    got.append(v[1])
                else:
                    b, j = self.scalar(typ, num, jname, seq)
                    out += b
                    got.append(j)
            if not got:
                if not (omitempty or omitzero) and (repeated or pointer):
                    exp[jname] = None
                continue
            if repeated:
                exp[jname] = got
            elif jname == "":
                exp.update(got[0])
            else:
                exp[jname] = got[0]
        return out, exp


def _rfc(secs: int, fmt: str) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(secs, datetime.UTC).strftime(fmt)


def test_every_message_round_trips_with_every_field_named(schema: Compiled) -> None:
    gen = _Gen(schema)
    names = sorted(n for n in gen.raw if n not in SPECIAL)
    assert len(names) > 1000
    failures: list[str] = []
    leaves = 0
    for name in names:
        data, expected = gen.message(name)
        m = schema.message(name)
        assert m is not None
        got = decode_typed(schema, m, data) if not gen.raw[name]["slice"] else None
        if got is None:
            continue
        text = json.dumps(got)
        leaves += text.count(",") + 1
        if got != expected:
            failures.append(f"{name}: {text[:300]} != {json.dumps(expected)[:300]}")
        elif '"#' in text:
            failures.append(f"{name}: unnamed field in {text[:300]}")
    assert not failures, f"{len(failures)} of {len(names)} messages:\n" + "\n".join(failures[:20])
    assert leaves > 20000


def test_lookup_by_group_version_kind(schema: Compiled) -> None:
    for api_version, kind, message in [
        ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
        ("v1", "Pod", "k8s.io.api.core.v1.Pod"),
        ("batch/v1", "CronJob", "k8s.io.api.batch.v1.CronJob"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", "k8s.io.api.rbac.v1.ClusterRole"),
        (
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
        ),
        (
            "apiregistration.k8s.io/v1",
            "APIService",
            "k8s.io.kube_aggregator.pkg.apis.apiregistration.v1.APIService",
        ),
        (
            "internal.apiserver.k8s.io/v1alpha1",
            "StorageVersion",
            "k8s.io.api.apiserverinternal.v1alpha1.StorageVersion",
        ),
    ]:
        m = schema.lookup(api_version, kind)
        assert m is not None, (api_version, kind)
        assert m.name == message
    assert schema.lookup("apps/v1", "NoSuchKind") is None
    assert schema.lookup("example.com/v1", "Widget") is None
    assert schema.lookup("apps/v2", "Deployment") is None  # the version counts
    assert schema.lookup(None, None) is None


def test_json_names_come_from_go_tags(schema: Compiled) -> None:
    props = schema.message("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps")
    assert props is not None
    names = {f[0] for f in props.fields.values()}
    assert {"$ref", "$schema", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"} <= names
    vol = schema.message("k8s.io.api.core.v1.Volume")
    assert vol is not None
    assert vol.fields[2][0] == ""  # VolumeSource is inlined


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1500, "1.5µs"),
        (2_000_000, "2ms"),
        (1_500_000_000, "1.5s"),
        (90 * 10**9, "1m30s"),
        (3600 * 10**9, "1h0m0s"),
        (-(3723 * 10**9 + 5 * 10**8), "-1h2m3.5s"),
    ],
)
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


_KINDS = [
    ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
    ("v1", "Pod", "k8s.io.api.core.v1.Pod"),
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    ),
    (
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        "k8s.io.api.certificates.v1.CertificateSigningRequest",
    ),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(_KINDS))), st.data())
def test_fuzz_mutated_values_of_every_shape(which: int, data: st.DataObject) -> None:
    """Mutated values of fully described kinds: never raises, always strict JSON, errors name the key."""
    from pytest_k8sstate.etcd.decode import decode_value

    c = active_schema()
    if c is None:
        pytest.skip("descriptors unavailable")
    api_version, kind, message = _KINDS[which]
    body, _ = _Gen(c).message(message)
    b = bytearray(
        b"k8s\x00" + _len(1, _len(1, api_version.encode()) + _len(2, kind.encode())) + _len(2, body)
    )
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(b) - 1))
        op = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        if op == "flip":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del b[max(i, 1) :]
        else:
            b[i:i] = data.draw(st.binary(min_size=1, max_size=9))
    d = decode_value("/registry/fuzz/x", bytes(b))
    assert d.error is None or "internal decoder error" not in d.error, d.error
    assert d.error is None or d.error.startswith("/registry/fuzz/x")
    json.dumps(d.to_json(), allow_nan=False)
