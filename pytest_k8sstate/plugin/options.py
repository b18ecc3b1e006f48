"""Plugin settings: every setting is a CLI option *and* an ini key (and, where natural, an env variable).

Resolved once per session into the frozen :class:`Settings`. Precedence, highest first:
command line, environment variable (``K8SSTATE_*``), ini file, built-in default. A value given on the
command line always wins, also a falsy one (``--k8s-nodes 0``): options default to ``None`` so "not
given" is distinguishable from "given as 0/empty".

Bad values raise :class:`pytest.UsageError` naming the option, the value, where it came from and the
accepted choices.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from pytest_k8sstate.providers.base import CNIS as CNIS

_D = TypeVar("_D", str, None)

PROVIDERS = ("local", "kind", "minikube", "existing")
PROXY_MODES = ("iptables", "nftables", "ipvs")
DEFAULT_PROVIDER = "local"
DEFAULT_NODES = 2
DEFAULT_PROXY_MODE = "iptables"
DEFAULT_ARTIFACTS = ".k8sstate"
MAX_NODES = 64

_VERSION_RE = re.compile(r"^v?\d+\.\d+(\.\d+)?([-+][0-9A-Za-z.-]+)?$")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,24}[a-z0-9])?$")  # 26 chars: room for "-gw12" under xdist
_TRUE = frozenset({"1", "true", "yes", "on", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "n", ""})

HELP_PROVIDER = (
    "cluster provider: local (real control plane + kube-proxy per node in network namespaces, pods by kwok; "
    "the default), kind, minikube, existing (attach to --k8s-kubeconfig)"
)
HELP_NODES = f"number of worker nodes besides the control-plane node (default {DEFAULT_NODES})"
HELP_PROXY_MODE = f"kube-proxy mode: {', '.join(PROXY_MODES)} (default {DEFAULT_PROXY_MODE})"
HELP_CNI = (
    f"pod network (CNI) of the cluster: {', '.join(CNIS)} (default: the provider's own; kind: the node "
    "image's default CNI; local has none: kwok assigns pod IPs)"
)
HELP_VERSION = "Kubernetes version of the cluster, e.g. 1.37.0 (default: the provider's pinned version)"
HELP_KEEP_CLUSTER = "keep the clusters at the end of the session (prints how to reuse and delete them)"
HELP_REUSE_CLUSTER = (
    "use the cluster NAME if it exists (create it otherwise) and keep it after the session; "
    "for a fast edit-run loop"
)
HELP_KUBECONFIG = (
    "kubeconfig of the cluster to attach to with --k8s-provider existing "
    "(default: $KUBECONFIG, then ~/.kube/config); with the other providers the session cluster's "
    "kubeconfig is also written to PATH"
)
HELP_ARTIFACTS = (
    f"directory for snapshots and diffs of failed tests (default {DEFAULT_ARTIFACTS}/ under the rootdir); "
    "each test gets <DIR>/<sanitised node id>/"
)
HELP_INCLUDE_SECRETS = (
    "include Secret values in snapshots and artifacts (by default only their identity is kept)"
)
HELP_IGNORE = (
    "extra etcd key glob to hide from the default diff view and helpers, e.g. '/registry/events/**' "
    "(repeatable; added to the built-in ignore list)"
)


@dataclass(frozen=True)
class _Option:
    name: str  # CLI flag without dashes, e.g. "k8s-nodes"
    env: str
    help: str
    metavar: str | None = None  # the value's name in --help; None for a flag (store_true)
    repeatable: bool = False  # action "append" on the command line, a line list in the ini file

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def ini(self) -> str:
        return self.dest


OPT_PROVIDER = _Option("k8s-provider", "K8SSTATE_PROVIDER", HELP_PROVIDER, "NAME")
OPT_NODES = _Option("k8s-nodes", "K8SSTATE_NODES", HELP_NODES, "N")
OPT_PROXY_MODE = _Option("k8s-proxy-mode", "K8SSTATE_PROXY_MODE", HELP_PROXY_MODE, "MODE")
OPT_CNI = _Option("k8s-cni", "K8SSTATE_CNI", HELP_CNI, "NAME")
OPT_VERSION = _Option("k8s-version", "K8SSTATE_KUBERNETES_VERSION", HELP_VERSION, "VERSION")
OPT_KEEP_CLUSTER = _Option("k8s-keep-cluster", "K8SSTATE_KEEP_CLUSTER", HELP_KEEP_CLUSTER)
OPT_REUSE_CLUSTER = _Option("k8s-reuse-cluster", "K8SSTATE_REUSE_CLUSTER", HELP_REUSE_CLUSTER, "NAME")
OPT_KUBECONFIG = _Option("k8s-kubeconfig", "K8SSTATE_KUBECONFIG", HELP_KUBECONFIG, "PATH")
OPT_ARTIFACTS = _Option("k8s-artifacts", "K8SSTATE_ARTIFACTS", HELP_ARTIFACTS, "DIR")
OPT_INCLUDE_SECRETS = _Option("k8s-include-secrets", "K8SSTATE_INCLUDE_SECRETS", HELP_INCLUDE_SECRETS)
OPT_IGNORE = _Option("k8s-ignore", "K8SSTATE_IGNORE", HELP_IGNORE, "PATTERN", repeatable=True)
OPTIONS = (
    OPT_PROVIDER,
    OPT_NODES,
    OPT_PROXY_MODE,
    OPT_CNI,
    OPT_VERSION,
    OPT_KEEP_CLUSTER,
    OPT_REUSE_CLUSTER,
    OPT_KUBECONFIG,
    OPT_ARTIFACTS,
    OPT_INCLUDE_SECRETS,
    OPT_IGNORE,
)


@dataclass(frozen=True)
class Settings:
    """Every plugin setting, resolved (see the module docstring for precedence)."""

    provider: str = DEFAULT_PROVIDER
    nodes: int = DEFAULT_NODES
    proxy_mode: str = DEFAULT_PROXY_MODE
    cni: str | None = None
    version: str | None = None
    keep_cluster: bool = False
    reuse_cluster: str | None = None
    kubeconfig: Path | None = None
    artifacts: Path = Path(DEFAULT_ARTIFACTS)
    include_secrets: bool = False
    ignore: tuple[str, ...] = ()


def add_options(parser: pytest.Parser) -> None:
    """Register every option in the ``k8sstate`` group plus its ini key."""
    group = parser.getgroup("k8sstate", "Kubernetes cluster state (pytest-k8sstate)")
    for opt in OPTIONS:
        if opt.metavar is None:
            group.addoption(opt.flag, dest=opt.dest, action="store_true", default=None, help=opt.help)
        else:
            action = "append" if opt.repeatable else "store"
            group.addoption(
                opt.flag, dest=opt.dest, metavar=opt.metavar, action=action, default=None, help=opt.help
            )
    for opt in OPTIONS:
        if opt.repeatable:
            parser.addini(opt.ini, opt.help, type="linelist", default=[])
        else:
            parser.addini(opt.ini, opt.help, type="string", default="")


@dataclass(frozen=True)
class _Raw:
    """One value and where it came from (for error messages and relative paths)."""

    value: str
    origin: str  # "command line", "environment variable K8SSTATE_X", "ini file"
    base: Path  # directory a relative path is resolved against


def _lookup(config: pytest.Config, opt: _Option, env: Mapping[str, str]) -> _Raw | None:
    cli = config.getoption(opt.dest, default=None)
    if cli is not None:
        return _Raw(str(cli), f"command line {opt.flag}", config.invocation_params.dir)
    env_value = env.get(opt.env)
    if env_value is not None and env_value != "":
        return _Raw(env_value, f"environment variable {opt.env}", config.invocation_params.dir)
    ini_value = config.getini(opt.ini)
    if isinstance(ini_value, str) and ini_value.strip():
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return _Raw(ini_value.strip(), f"ini option {opt.ini}", base)
    return None


def _bad(opt: _Option, raw: _Raw, expected: str) -> pytest.UsageError:
    return pytest.UsageError(
        f"{opt.flag}: invalid value {raw.value!r} (from {raw.origin}); expected {expected}"
    )


def _choice(
    config: pytest.Config, opt: _Option, env: Mapping[str, str], choices: tuple[str, ...], default: _D
) -> str | _D:
    raw = _lookup(config, opt, env)
    if raw is None:
        return default
    value = raw.value.strip().lower()
    if value not in choices:
        raise _bad(opt, raw, "one of " + ", ".join(choices))
    return value


def _bool(config: pytest.Config, opt: _Option, env: Mapping[str, str]) -> bool:
    raw = _lookup(config, opt, env)
    if raw is None:
        return False
    value = raw.value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _bad(opt, raw, "a boolean: true/false, yes/no, on/off or 1/0")


def _path(config: pytest.Config, opt: _Option, env: Mapping[str, str]) -> Path | None:
    raw = _lookup(config, opt, env)
    if raw is None:
        return None
    if not raw.value.strip():
        raise _bad(opt, raw, "a non-empty path")
    path = Path(os.path.expanduser(raw.value.strip()))
    return path if path.is_absolute() else raw.base / path


def resolve(config: pytest.Config, env: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting from ``config`` and ``env`` (default ``os.environ``) into :class:`Settings`."""
    env = os.environ if env is None else env
    provider = _choice(config, OPT_PROVIDER, env, PROVIDERS, DEFAULT_PROVIDER)
    proxy_mode = _choice(config, OPT_PROXY_MODE, env, PROXY_MODES, DEFAULT_PROXY_MODE)
    cni = _choice(config, OPT_CNI, env, CNIS, None)

    nodes = DEFAULT_NODES
    raw = _lookup(config, OPT_NODES, env)
    if raw is not None:
        try:
            nodes = int(raw.value.strip())
        except ValueError:
            raise _bad(OPT_NODES, raw, f"a whole number of worker nodes from 0 to {MAX_NODES}") from None
        if not 0 <= nodes <= MAX_NODES:
            raise _bad(OPT_NODES, raw, f"a whole number of worker nodes from 0 to {MAX_NODES}")

    version: str | None = None
    raw = _lookup(config, OPT_VERSION, env)
    if raw is not None:
        version = raw.value.strip()
        if not _VERSION_RE.match(version):
            raise _bad(OPT_VERSION, raw, "a Kubernetes version like 1.37.0 or v1.37.0")
        version = version.removeprefix("v")

    reuse: str | None = None
    raw = _lookup(config, OPT_REUSE_CLUSTER, env)
    if raw is not None:
        reuse = raw.value.strip()
        if not _NAME_RE.match(reuse):
            raise _bad(
                OPT_REUSE_CLUSTER, raw, "a cluster name of 1-26 lowercase letters, digits and '-' (e.g. dev)"
            )

    kubeconfig = _path(config, OPT_KUBECONFIG, env)
    if provider == "existing" and kubeconfig is None:
        fallback = env.get("KUBECONFIG", "").split(os.pathsep)[0]
        kubeconfig = Path(fallback).expanduser() if fallback else Path("~/.kube/config").expanduser()
    if provider == "existing" and not kubeconfig.is_file():  # type: ignore[union-attr]
        raise pytest.UsageError(
            f"{OPT_PROVIDER.flag} existing: kubeconfig {kubeconfig} does not exist; "
            f"pass {OPT_KUBECONFIG.flag} PATH (or set KUBECONFIG)"
        )

    artifacts = _path(config, OPT_ARTIFACTS, env) or config.rootpath / DEFAULT_ARTIFACTS

    ignore: list[str] = [str(p).strip() for p in config.getini(OPT_IGNORE.ini) if str(p).strip()]
    env_ignore = env.get(OPT_IGNORE.env, "")
    ignore.extend(p for p in re.split(r"[,\s]+", env_ignore) if p)
    cli_ignore = config.getoption(OPT_IGNORE.dest, default=None) or []
    for pattern in cli_ignore:
        if not str(pattern).strip():
            raise pytest.UsageError(
                f"{OPT_IGNORE.flag}: empty pattern; give a key glob like '/registry/events/**'"
            )
        ignore.append(str(pattern).strip())

    return Settings(
        provider=provider,
        nodes=nodes,
        proxy_mode=proxy_mode,
        cni=cni,
        version=version,
        keep_cluster=_bool(config, OPT_KEEP_CLUSTER, env),
        reuse_cluster=reuse,
        kubeconfig=kubeconfig,
        artifacts=artifacts,
        include_secrets=_bool(config, OPT_INCLUDE_SECRETS, env),
        ignore=tuple(dict.fromkeys(ignore)),
    )
