"""A kubeadm-like PKI written with ``cryptography`` (no openssl, no cfssl).

``generate_pki(directory, apiserver_sans=[...], etcd_sans=[...])`` writes kubeadm's layout::

    ca.crt ca.key                         cluster CA (CN=kubernetes)
    apiserver.crt/key                     serving cert, SANs kubernetes.default.svc…, the service IP, yours
    apiserver-kubelet-client.crt/key      CN=kube-apiserver-kubelet-client, O=system:masters
    front-proxy-ca.crt/key                aggregation CA
    front-proxy-client.crt/key            CN=front-proxy-client
    sa.key sa.pub                         service-account signing key (EC P-256: ES256 tokens)
    etcd/ca.crt/key                       etcd CA (CN=etcd-ca)
    etcd/server.crt/key                   etcd serving cert (server+client auth), SANs localhost + yours
    etcd/peer.crt/key                     etcd peer cert
    etcd/healthcheck-client.crt/key       CN=kube-etcd-healthcheck-client
    apiserver-etcd-client.crt/key         CN=kube-apiserver-etcd-client (signed by the etcd CA)
    admin.crt/key                         CN=kubernetes-admin, O=system:masters

Keys are EC P-256 (generation takes microseconds, unlike RSA) and written with mode 0600.
Differences from kubeadm: ``apiserver-kubelet-client`` is in ``system:masters`` (kubeadm ≥ 1.29 uses
``kubeadm:cluster-admins`` plus a binding kubeadm creates; we create no bindings) and the apiserver cert
also carries ``localhost``/``127.0.0.1``.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pytest_k8sstate.errors import K8sStateError

__all__ = ["Pki", "generate_pki", "write_kubeconfig"]

_CA_DAYS = 3650
_LEAF_DAYS = 365
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate small clock skew between processes/namespaces

_SERVER = [ExtendedKeyUsageOID.SERVER_AUTH]
_CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]
_BOTH = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "EC PRIVATE KEY", what Go's keyutil reads
        serialization.NoEncryption(),
    )


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for n in names:
        if not n or n in seen:
            continue
        seen.add(n)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise K8sStateError(f"{path}: cannot read CA private key ({exc}); regenerate the PKI") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise K8sStateError(f"{path}: expected an EC private key; regenerate the PKI with generate_pki()")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise K8sStateError(f"{path}: cannot read certificate ({exc}); regenerate the PKI") from exc


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """kubeadm's key usages: digital signature + key encipherment, plus cert signing for CAs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    cn: str,
    *,
    orgs: Sequence[str] = (),
    usages: Sequence[x509.ObjectIdentifier],
    sans: Sequence[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, orgs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(_san(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


@dataclass(frozen=True)
class Pki:
    """Paths of a kubeadm-layout PKI under ``directory`` (``Pki(dir)`` also opens an existing one)."""

    directory: Path
    cluster_name: str = "kubernetes"

    def _p(self, rel: str) -> Path:
        return Path(self.directory) / rel

    # cluster CA and apiserver
    @property
    def ca_crt(self) -> Path:
        return self._p("ca.crt")

    @property
    def ca_key(self) -> Path:
        return self._p("ca.key")

    @property
    def apiserver_crt(self) -> Path:
        return self._p("apiserver.crt")

    @property
    def apiserver_key(self) -> Path:
        return self._p("apiserver.key")

    @property
    def apiserver_kubelet_client_crt(self) -> Path:
        return self._p("apiserver-kubelet-client.crt")

    @property
    def apiserver_kubelet_client_key(self) -> Path:
        return self._p("apiserver-kubelet-client.key")

    @property
    def front_proxy_ca_crt(self) -> Path:
        return self._p("front-proxy-ca.crt")

    @property
    def front_proxy_ca_key(self) -> Path:
        return self._p("front-proxy-ca.key")

    @property
    def front_proxy_client_crt(self) -> Path:
        return self._p("front-proxy-client.crt")

    @property
    def front_proxy_client_key(self) -> Path:
        return self._p("front-proxy-client.key")

    @property
    def sa_key(self) -> Path:
        return self._p("sa.key")

    @property
    def sa_pub(self) -> Path:
        return self._p("sa.pub")

    @property
    def admin_crt(self) -> Path:
        return self._p("admin.crt")

    @property
    def admin_key(self) -> Path:
        return self._p("admin.key")

    # etcd
    @property
    def etcd_ca_crt(self) -> Path:
        return self._p("etcd/ca.crt")

    @property
    def etcd_ca_key(self) -> Path:
        return self._p("etcd/ca.key")

    @property
    def etcd_server_crt(self) -> Path:
        return self._p("etcd/server.crt")

    @property
    def etcd_server_key(self) -> Path:
        return self._p("etcd/server.key")

    @property
    def etcd_peer_crt(self) -> Path:
        return self._p("etcd/peer.crt")

    @property
    def etcd_peer_key(self) -> Path:
        return self._p("etcd/peer.key")

    @property
    def etcd_healthcheck_client_crt(self) -> Path:
        return self._p("etcd/healthcheck-client.crt")

    @property
    def etcd_healthcheck_client_key(self) -> Path:
        return self._p("etcd/healthcheck-client.key")

    @property
    def apiserver_etcd_client_crt(self) -> Path:
        return self._p("apiserver-etcd-client.crt")

    @property
    def apiserver_etcd_client_key(self) -> Path:
        return self._p("apiserver-etcd-client.key")

    def client_cert(self, name: str, cn: str, orgs: Sequence[str] = ()) -> tuple[Path, Path]:
        """Issue a client certificate from the cluster CA → ``(name.crt, name.key)`` in the PKI directory.

        For component kubeconfigs: ``client_cert("controller-manager", "system:kube-controller-manager")``,
        ``client_cert("kubelet-n1", "system:node:n1", ["system:nodes"])``, ``"system:kube-proxy"``, …
        """
        if not name or "/" in name or name.startswith("."):
            raise K8sStateError(
                f"client certificate name {name!r} must be a plain file name such as 'kube-proxy'"
            )
        ca_cert = _load_cert(self.ca_crt)
        ca_key = _load_key(self.ca_key)
        cert, key = _leaf(ca_cert, ca_key, cn, orgs=orgs, usages=_CLIENT)
        crt_path, key_path = self._p(f"{name}.crt"), self._p(f"{name}.key")
        _write(key_path, _key_pem(key), 0o600)
        _write(crt_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return crt_path, key_path

    def write_kubeconfig(
        self, path: str | os.PathLike[str], server: str, crt: Path, key: Path, user: str
    ) -> Path:
        """Kubeconfig for ``server`` authenticating with ``crt``/``key`` against this PKI's CA."""
        return write_kubeconfig(path, server, self.ca_crt, crt, key, self.cluster_name, user)


def generate_pki(
    directory: str | os.PathLike[str],
    *,
    apiserver_sans: Sequence[str],
    etcd_sans: Sequence[str],
    cluster_name: str = "kubernetes",
    service_ip: str = "10.96.0.1",
) -> Pki:
    """Write a fresh kubeadm-layout PKI into ``directory`` (created; existing files are overwritten)."""
    pki = Pki(Path(directory), cluster_name)
    Path(directory).mkdir(parents=True, exist_ok=True)

    def save(
        crt_path: Path, key_path: Path, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
    ) -> None:
        _write(key_path, _key_pem(pair[1]), 0o600)
        _write(crt_path, pair[0].public_bytes(serialization.Encoding.PEM), 0o644)

    ca = _ca("kubernetes")
    save(pki.ca_crt, pki.ca_key, ca)
    api_sans = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        service_ip,
        "localhost",
        "127.0.0.1",
        *apiserver_sans,
    ]
    save(pki.apiserver_crt, pki.apiserver_key, _leaf(*ca, "kube-apiserver", usages=_SERVER, sans=api_sans))
    save(
        pki.apiserver_kubelet_client_crt,
        pki.apiserver_kubelet_client_key,
        _leaf(*ca, "kube-apiserver-kubelet-client", orgs=["system:masters"], usages=_CLIENT),
    )
    save(
        pki.admin_crt,
        pki.admin_key,
        _leaf(*ca, "kubernetes-admin", orgs=["system:masters"], usages=_CLIENT),
    )

    fp = _ca("front-proxy-ca")
    save(pki.front_proxy_ca_crt, pki.front_proxy_ca_key, fp)
    save(
        pki.front_proxy_client_crt,
        pki.front_proxy_client_key,
        _leaf(*fp, "front-proxy-client", usages=_CLIENT),
    )

    sa = _new_key()
    _write(pki.sa_key, _key_pem(sa), 0o600)
    _write(
        pki.sa_pub,
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )

    eca = _ca("etcd-ca")
    save(pki.etcd_ca_crt, pki.etcd_ca_key, eca)
    e_sans = ["localhost", "127.0.0.1", "::1", *etcd_sans]
    save(pki.etcd_server_crt, pki.etcd_server_key, _leaf(*eca, "kube-etcd", usages=_BOTH, sans=e_sans))
    save(pki.etcd_peer_crt, pki.etcd_peer_key, _leaf(*eca, "kube-etcd-peer", usages=_BOTH, sans=e_sans))
    save(
        pki.etcd_healthcheck_client_crt,
        pki.etcd_healthcheck_client_key,
        _leaf(*eca, "kube-etcd-healthcheck-client", usages=_CLIENT),
    )
    save(
        pki.apiserver_etcd_client_crt,
        pki.apiserver_etcd_client_key,
        _leaf(*eca, "kube-apiserver-etcd-client", usages=_CLIENT),
    )
    return pki


def _b64(path: Path) -> str:
    try:
        return base64.b64encode(Path(path).read_bytes()).decode("ascii")
    except OSError as exc:
        raise K8sStateError(
            f"{path}: cannot read ({exc}) while writing a kubeconfig; generate the PKI first"
        ) from exc


def write_kubeconfig(
    path: str | os.PathLike[str],
    server: str,
    ca: Path,
    crt: Path,
    key: Path,
    cluster: str,
    user: str,
) -> Path:
    """Write a self-contained kubeconfig (certificates embedded as ``*-data``), mode 0600."""
    context = f"{user}@{cluster}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(crt), "client-key-data": _b64(key)},
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    out = Path(path)
    _write(out, yaml.safe_dump(doc, sort_keys=False).encode(), 0o600)
    return out
