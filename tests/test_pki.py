"""The kubeadm-like PKI: layout, chains, subjects, SANs, modes, kubeconfigs, and a real TLS handshake."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.pki import Pki, generate_pki, write_kubeconfig

LAYOUT = [
    "ca.crt",
    "ca.key",
    "apiserver.crt",
    "apiserver.key",
    "apiserver-kubelet-client.crt",
    "apiserver-kubelet-client.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "front-proxy-client.crt",
    "front-proxy-client.key",
    "sa.key",
    "sa.pub",
    "etcd/ca.crt",
    "etcd/ca.key",
    "etcd/server.crt",
    "etcd/server.key",
    "etcd/peer.crt",
    "etcd/peer.key",
    "etcd/healthcheck-client.crt",
    "etcd/healthcheck-client.key",
    "apiserver-etcd-client.crt",
    "apiserver-etcd-client.key",
    "admin.crt",
    "admin.key",
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return generate_pki(
        tmp_path_factory.mktemp("pki"),
        apiserver_sans=["10.89.0.2", "k8ss-cp", "fd00::2"],
        etcd_sans=["10.89.0.2"],
        cluster_name="k8ss-test",
    )


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _cn(c: x509.Certificate) -> str:
    return str(c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _orgs(c: x509.Certificate) -> list[str]:
    return [str(a.value) for a in c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def _eku(c: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_layout_and_modes(pki: Pki) -> None:
    for rel in LAYOUT:
        p = pki.directory / rel
        assert p.is_file(), rel
        mode = stat.S_IMODE(p.stat().st_mode)
        if rel.endswith(".key"):
            assert mode == 0o600, rel
        else:
            assert mode == 0o644, rel
    assert pki.etcd_server_crt == pki.directory / "etcd" / "server.crt"
    assert Pki(pki.directory).apiserver_etcd_client_key == pki.apiserver_etcd_client_key


@pytest.mark.parametrize(
    ("leaf", "ca", "cn", "orgs", "usage"),
    [
        ("apiserver.crt", "ca.crt", "kube-apiserver", [], ExtendedKeyUsageOID.SERVER_AUTH),
        (
            "apiserver-kubelet-client.crt",
            "ca.crt",
            "kube-apiserver-kubelet-client",
            ["system:masters"],
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        ("admin.crt", "ca.crt", "kubernetes-admin", ["system:masters"], ExtendedKeyUsageOID.CLIENT_AUTH),
        (
            "front-proxy-client.crt",
            "front-proxy-ca.crt",
            "front-proxy-client",
            [],
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        ("etcd/server.crt", "etcd/ca.crt", "kube-etcd", [], ExtendedKeyUsageOID.SERVER_AUTH),
        ("etcd/peer.crt", "etcd/ca.crt", "kube-etcd-peer", [], ExtendedKeyUsageOID.CLIENT_AUTH),
        (
            "etcd/healthcheck-client.crt",
            "etcd/ca.crt",
            "kube-etcd-healthcheck-client",
            [],
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        (
            "apiserver-etcd-client.crt",
            "etcd/ca.crt",
            "kube-apiserver-etcd-client",
            [],
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
    ],
)
def test_chain_subject_usage(
    pki: Pki, leaf: str, ca: str, cn: str, orgs: list[str], usage: x509.ObjectIdentifier
) -> None:
    cert = _cert(pki.directory / leaf)
    issuer = _cert(pki.directory / ca)
    cert.verify_directly_issued_by(issuer)  # raises when the signature/issuer don't match
    assert _cn(cert) == cn
    assert _orgs(cert) == orgs
    assert usage in _eku(cert)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    # the key file belongs to the certificate
    key = serialization.load_pem_private_key((pki.directory / leaf).with_suffix(".key").read_bytes(), None)
    assert key.public_key() == cert.public_key()


def test_cas_are_distinct_and_self_signed(pki: Pki) -> None:
    cas = [_cert(pki.ca_crt), _cert(pki.front_proxy_ca_crt), _cert(pki.etcd_ca_crt)]
    assert [_cn(c) for c in cas] == ["kubernetes", "front-proxy-ca", "etcd-ca"]
    for c in cas:
        c.verify_directly_issued_by(c)
        assert c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    from cryptography.exceptions import InvalidSignature

    with pytest.raises((ValueError, InvalidSignature)):
        _cert(pki.apiserver_etcd_client_crt).verify_directly_issued_by(_cert(pki.ca_crt))


def test_sans(pki: Pki) -> None:
    san = _cert(pki.apiserver_crt).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    assert {"kubernetes", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "k8ss-cp"} <= dns
    assert {"10.96.0.1", "10.89.0.2", "127.0.0.1", "fd00::2"} <= ips
    esan = _cert(pki.etcd_server_crt).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(i) for i in esan.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1", "10.89.0.2"}
    assert ipaddress.ip_address("10.89.0.2") in esan.get_values_for_type(x509.IPAddress)


def test_service_account_keypair(pki: Pki) -> None:
    key = serialization.load_pem_private_key(pki.sa_key.read_bytes(), None)
    pub = serialization.load_pem_public_key(pki.sa_pub.read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == pub
    assert pki.sa_key.read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")


def test_client_cert_for_components(pki: Pki) -> None:
    crt, key = pki.client_cert("kubelet-node-1", "system:node:node-1", ["system:nodes"])
    assert (crt.name, key.name) == ("kubelet-node-1.crt", "kubelet-node-1.key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = _cert(crt)
    cert.verify_directly_issued_by(_cert(pki.ca_crt))
    assert (_cn(cert), _orgs(cert)) == ("system:node:node-1", ["system:nodes"])
    assert _eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    crt2, _ = pki.client_cert("kube-proxy", "system:kube-proxy")
    assert _orgs(_cert(crt2)) == []
    with pytest.raises(K8sStateError, match="plain file name"):
        pki.client_cert("../evil", "x")


def test_client_cert_without_ca(tmp_path: Path) -> None:
    with pytest.raises(K8sStateError, match=r"ca\.crt"):
        Pki(tmp_path).client_cert("x", "x")


def test_kubeconfig(pki: Pki, tmp_path: Path) -> None:
    crt, key = pki.client_cert("scheduler", "system:kube-scheduler")
    path = pki.write_kubeconfig(
        tmp_path / "scheduler.conf", "https://10.89.0.2:6443", crt, key, "system:kube-scheduler"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["current-context"] == "system:kube-scheduler@k8ss-test"
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.89.0.2:6443"
    # the official client understands it
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    assert cfg.host == "https://10.89.0.2:6443"
    assert Path(cfg.ssl_ca_cert).read_bytes() == pki.ca_crt.read_bytes()
    assert Path(cfg.cert_file).read_bytes() == crt.read_bytes()
    with pytest.raises(K8sStateError, match="cannot read"):
        write_kubeconfig(tmp_path / "x.conf", "https://x", tmp_path / "missing.crt", crt, key, "c", "u")


def test_real_tls_handshake_with_client_cert(pki: Pki) -> None:
    """OpenSSL (via ssl) accepts the chain: apiserver cert for 127.0.0.1, admin client cert required."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.apiserver_crt, pki.apiserver_key)
    server_ctx.load_verify_locations(pki.ca_crt)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
    client_ctx.load_cert_chain(pki.admin_crt, pki.admin_key)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        seen: dict[str, object] = {}

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen["peer"] = tls.getpeercert()
                tls.sendall(b"ok")

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
        t.join(10)
    subject = dict(x[0] for x in seen["peer"]["subject"])  # type: ignore[index]
    assert subject == {"organizationName": "system:masters", "commonName": "kubernetes-admin"}
