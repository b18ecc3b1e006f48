"""Plugin settings: every setting is a CLI option *and* an ini key (and, where natural, an env variable).

Resolved once per session into the frozen :class:`Settings`. Precedence, highest first:
command line, environment variable (``K8SSTATE_*``), ini file, built-in default. A value given on the
command line always wins, also a falsy one (``--k8sstate-nodes 0``): options default to ``None`` so "not
given" is distinguishable from "given as 0/empty".

Bad values raise :class:`pytest.UsageError` naming the option, the value, where it came from and the
accepted choices.

Names: every option is ``--k8sstate-*`` (ini ``k8sstate_*``, env ``K8SSTATE_*``) so that no other plugin
can clash with it. The spellings of 0.1 (``--k8s-provider``, ini ``k8s_provider``, ...) still work for one
release with a :class:`K8sStateDeprecationWarning`, but only where no clash is possible: they are added
(:func:`.legacy.add_legacy_options`) after every plugin and initial conftest registered its options, and
only those names nobody else took (pytest-kubernetes registers ``--k8s-provider``, ``--k8s-version`` and
``--k8s-kubeconfig``: beside it those three old spellings are simply absent).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from pytest_k8sstate.plugin.provider_help import (
    HELP_KIND_CONFIG,
    HELP_KIND_IMAGE,
    HELP_MINIKUBE_CNI,
    HELP_MINIKUBE_CPUS,
    HELP_MINIKUBE_DRIVER,
    HELP_MINIKUBE_MEMORY,
    HELP_POOL,
)
from pytest_k8sstate.providers.base import CNIS as CNIS

_D = TypeVar("_D", str, None)

PROVIDERS = ("local", "kind", "minikube", "existing")
PROXY_MODES = ("iptables", "nftables", "ipvs")
IP_FAMILIES = ("ipv4", "ipv6", "dual")
DEFAULT_IP_FAMILY = "ipv4"
DEFAULT_PROVIDER = "local"
DEFAULT_NODES = 2
DEFAULT_PROXY_MODE = "iptables"
DEFAULT_ARTIFACTS = ".k8sstate"
MAX_NODES = 64
DEFAULT_LOG_LINES = 50
MAX_LOG_LINES = 100_000
COMPONENT_LOGS = ("auto", "always", "never")
DEFAULT_COMPONENT_LOGS = "auto"

_VERSION_RE = re.compile(r"^v?\d+\.\d+(\.\d+)?([-+][0-9A-Za-z.-]+)?$")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,24}[a-z0-9])?$")  # 26 chars: room for "-gw12" under xdist
_TRUE = frozenset({"1", "true", "yes", "on", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "n", ""})

HELP_PROVIDER = (
    "cluster provider: local (real control plane + kube-proxy per node in network namespaces, pods by kwok; "
    "the default), kind, minikube, existing (attach to --k8sstate-kubeconfig)"
)
HELP_NODES = f"number of worker nodes besides the control-plane node (default {DEFAULT_NODES})"
HELP_PROXY_MODE = f"kube-proxy mode: {', '.join(PROXY_MODES)} (default {DEFAULT_PROXY_MODE})"
HELP_IP_FAMILY = (
    f"IP families of the cluster: {', '.join(IP_FAMILIES)} (dual-stack, IPv4 primary; "
    f"default {DEFAULT_IP_FAMILY}; local and kind)"
)
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
    "kubeconfig of the cluster to attach to with --k8sstate-provider existing "
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

HELP_TEST_NAMESPACE = (
    "give each test its own namespace (created before it, deleted after it; the k8s_api helper applies "
    "manifests without a namespace into it): yes (default) or no (everything goes into 'default'); a test "
    "opts out with @pytest.mark.k8sstate(namespace='default')"
)
HELP_SHARE_CLUSTER = (
    "xdist workers share one cluster (created by the first worker, deleted by the controller at the end) "
    "instead of one cluster each; always the case for --k8sstate-provider existing"
)
HELP_LOG_LINES = (
    "on failure, the last N log lines of every container in the test's namespace go into the report "
    f"and the artifacts (default {DEFAULT_LOG_LINES}; 0: none)"
)
HELP_COMPONENT_LOGS = (
    "on failure, export the cluster components' logs (kind: `kind export logs`): auto (default: only when "
    "a component looks unhealthy), always, never"
)


@dataclass(frozen=True)
class _Option:
    name: str  # CLI flag without dashes, e.g. "k8sstate-nodes"
    env: str
    help: str
    metavar: str | None = None  # the value's name in --help; None for a flag (store_true)
    repeatable: bool = False  # action "append" on the command line, a line list in the ini file
    legacy: str | None = None  # the deprecated 0.1 spelling (without dashes), e.g. "k8s-nodes"

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def ini(self) -> str:
        return self.dest

    @property
    def legacy_flag(self) -> str | None:
        return f"--{self.legacy}" if self.legacy else None

    @property
    def legacy_dest(self) -> str:
        """Never the other plugin's dest: ``k8sstate_legacy_k8s_nodes``."""
        return "k8sstate_legacy_" + (self.legacy or self.name).replace("-", "_")

    @property
    def legacy_ini(self) -> str | None:
        return self.legacy.replace("-", "_") if self.legacy else None


def _opt(name: str, env: str, help: str, metavar: str | None = None, repeatable: bool = False) -> _Option:
    """An option of 0.1 (``--k8s-NAME``), now ``--k8sstate-NAME``."""
    return _Option(f"k8sstate-{name}", env, help, metavar, repeatable, legacy=f"k8s-{name}")


OPT_PROVIDER = _opt("provider", "K8SSTATE_PROVIDER", HELP_PROVIDER, "NAME")
OPT_NODES = _opt("nodes", "K8SSTATE_NODES", HELP_NODES, "N")
OPT_PROXY_MODE = _opt("proxy-mode", "K8SSTATE_PROXY_MODE", HELP_PROXY_MODE, "MODE")
OPT_IP_FAMILY = _opt("ip-family", "K8SSTATE_IP_FAMILY", HELP_IP_FAMILY, "FAMILY")
OPT_CNI = _opt("cni", "K8SSTATE_CNI", HELP_CNI, "NAME")
OPT_VERSION = _opt("version", "K8SSTATE_KUBERNETES_VERSION", HELP_VERSION, "VERSION")
OPT_KEEP_CLUSTER = _opt("keep-cluster", "K8SSTATE_KEEP_CLUSTER", HELP_KEEP_CLUSTER)
OPT_REUSE_CLUSTER = _opt("reuse-cluster", "K8SSTATE_REUSE_CLUSTER", HELP_REUSE_CLUSTER, "NAME")
OPT_KUBECONFIG = _opt("kubeconfig", "K8SSTATE_KUBECONFIG", HELP_KUBECONFIG, "PATH")
OPT_ARTIFACTS = _opt("artifacts", "K8SSTATE_ARTIFACTS", HELP_ARTIFACTS, "DIR")
OPT_INCLUDE_SECRETS = _opt("include-secrets", "K8SSTATE_INCLUDE_SECRETS", HELP_INCLUDE_SECRETS)
OPT_IGNORE = _opt("ignore", "K8SSTATE_IGNORE", HELP_IGNORE, "PATTERN", repeatable=True)
OPT_TEST_NAMESPACE = _Option(
    "k8sstate-test-namespace", "K8SSTATE_TEST_NAMESPACE", HELP_TEST_NAMESPACE, "yes|no"
)
OPT_SHARE_CLUSTER = _Option("k8sstate-share-cluster", "K8SSTATE_SHARE_CLUSTER", HELP_SHARE_CLUSTER)
OPT_POOL = _Option("k8sstate-pool", "K8SSTATE_POOL", HELP_POOL, "N")
OPT_LOG_LINES = _Option("k8sstate-log-lines", "K8SSTATE_LOG_LINES", HELP_LOG_LINES, "N")
OPT_COMPONENT_LOGS = _Option(
    "k8sstate-component-logs", "K8SSTATE_COMPONENT_LOGS", HELP_COMPONENT_LOGS, "WHEN"
)
OPT_KIND_CONFIG = _Option("k8sstate-kind-config", "K8SSTATE_KIND_CONFIG", HELP_KIND_CONFIG, "FILE")
OPT_KIND_IMAGE = _Option("k8sstate-kind-image", "K8SSTATE_KIND_IMAGE", HELP_KIND_IMAGE, "TAG")
OPT_MINIKUBE_DRIVER = _Option(
    "k8sstate-minikube-driver", "K8SSTATE_MINIKUBE_DRIVER", HELP_MINIKUBE_DRIVER, "DRIVER"
)
OPT_MINIKUBE_CNI = _Option("k8sstate-minikube-cni", "K8SSTATE_MINIKUBE_CNI", HELP_MINIKUBE_CNI, "CNI")
OPT_MINIKUBE_CPUS = _Option("k8sstate-minikube-cpus", "K8SSTATE_MINIKUBE_CPUS", HELP_MINIKUBE_CPUS, "N")
OPT_MINIKUBE_MEMORY = _Option(
    "k8sstate-minikube-memory", "K8SSTATE_MINIKUBE_MEMORY", HELP_MINIKUBE_MEMORY, "SIZE"
)
PROVIDER_OPTIONS = (
    OPT_KIND_CONFIG,
    OPT_KIND_IMAGE,
    OPT_MINIKUBE_DRIVER,
    OPT_MINIKUBE_CNI,
    OPT_MINIKUBE_CPUS,
    OPT_MINIKUBE_MEMORY,
)
OPTIONS = (
    OPT_PROVIDER,
    OPT_NODES,
    OPT_PROXY_MODE,
    OPT_IP_FAMILY,
    OPT_CNI,
    OPT_VERSION,
    OPT_KEEP_CLUSTER,
    OPT_REUSE_CLUSTER,
    OPT_KUBECONFIG,
    OPT_ARTIFACTS,
    OPT_INCLUDE_SECRETS,
    OPT_IGNORE,
    OPT_TEST_NAMESPACE,
    OPT_SHARE_CLUSTER,
    OPT_POOL,
    OPT_LOG_LINES,
    OPT_COMPONENT_LOGS,
    *PROVIDER_OPTIONS,
)


class K8sStateDeprecationWarning(pytest.PytestDeprecationWarning):
    """A spelling of pytest-k8sstate 0.1 that still works for one release."""


@dataclass(frozen=True)
class Settings:
    """Every plugin setting, resolved (see the module docstring for precedence)."""

    provider: str = DEFAULT_PROVIDER
    nodes: int = DEFAULT_NODES
    proxy_mode: str = DEFAULT_PROXY_MODE
    ip_family: str = DEFAULT_IP_FAMILY
    cni: str | None = None
    version: str | None = None
    keep_cluster: bool = False
    reuse_cluster: str | None = None
    kubeconfig: Path | None = None
    artifacts: Path = Path(DEFAULT_ARTIFACTS)
    include_secrets: bool = False
    ignore: tuple[str, ...] = ()
    test_namespace: bool = True
    share_cluster: bool = False
    log_lines: int = DEFAULT_LOG_LINES
    component_logs: str = DEFAULT_COMPONENT_LOGS
    pool: int = 0
    """``local``: clusters kept ready by the warm pool of each shape (0: no pool)."""
    provider_options: tuple[tuple[str, str, str | int | Path], ...] = ()
    """(provider, option name, value) of the provider-specific options given (``kind``: ``config_file``,
    ``image``; ``minikube``: ``driver``, ``cni``, ``cpus``, ``memory``): :meth:`options_for`."""
    deprecations: tuple[str, ...] = ()
    """Deprecated spellings used (one message each; the plugin issues them as warnings)."""

    def options_for(self, provider: str) -> dict[str, str | int | Path]:
        """The provider-specific keyword options of ``provider`` (for ``get_provider(provider, **...)``)."""
        return {name: value for p, name, value in self.provider_options if p == provider}


def _add(group: pytest.OptionGroup, flag: str, dest: str, opt: _Option, help: str) -> None:
    if opt.metavar is None:
        group.addoption(flag, dest=dest, action="store_true", default=None, help=help)
    else:
        action = "append" if opt.repeatable else "store"
        group.addoption(flag, dest=dest, metavar=opt.metavar, action=action, default=None, help=help)


def _addini(parser: pytest.Parser, name: str, opt: _Option, help: str) -> None:
    if opt.repeatable:
        parser.addini(name, help, type="linelist", default=[])
    else:
        parser.addini(name, help, type="string", default="")


def add_options(parser: pytest.Parser) -> None:
    """Register every option in the ``k8sstate`` group plus its ini key."""
    group = parser.getgroup("k8sstate", "Kubernetes cluster state (pytest-k8sstate)")
    for opt in OPTIONS:
        _add(group, opt.flag, opt.dest, opt, opt.help)
    for opt in OPTIONS:
        _addini(parser, opt.ini, opt, opt.help)


LEGACY_KEY = pytest.StashKey[frozenset[str]]()
"""The deprecated option and ini names this session registered (only those nobody else had taken)."""


@dataclass(frozen=True)
class _Raw:
    """One value and where it came from (for error messages and relative paths)."""

    value: str
    origin: str  # "command line", "environment variable K8SSTATE_X", "ini file"
    base: Path  # directory a relative path is resolved against


_USED_KEY = pytest.StashKey[dict[str, str]]()  # deprecated name -> its replacement, in order of use


def _deprecated(config: pytest.Config, old: str, new: str) -> None:
    config.stash.setdefault(_USED_KEY, {})[old] = new


def _legacy_cli(config: pytest.Config, opt: _Option) -> object:
    legacy = config.stash.get(LEGACY_KEY, frozenset())
    if opt.legacy_flag is None or opt.legacy_flag not in legacy:
        return None
    value = config.getoption(opt.legacy_dest, default=None)
    if value is not None:
        _deprecated(config, opt.legacy_flag, opt.flag)
    return value


def _legacy_ini(config: pytest.Config, opt: _Option) -> object:
    legacy = config.stash.get(LEGACY_KEY, frozenset())
    if opt.legacy_ini is None or opt.legacy_ini not in legacy:
        return None
    value = config.getini(opt.legacy_ini)
    if value:
        _deprecated(config, f"ini option {opt.legacy_ini}", f"ini option {opt.ini}")
    return value


def _lookup(config: pytest.Config, opt: _Option, env: Mapping[str, str]) -> _Raw | None:
    cli = config.getoption(opt.dest, default=None)
    if cli is not None:
        return _Raw(str(cli), f"command line {opt.flag}", config.invocation_params.dir)
    cli = _legacy_cli(config, opt)
    if cli is not None:
        return _Raw(str(cli), f"command line {opt.legacy_flag}", config.invocation_params.dir)
    env_value = env.get(opt.env)
    if env_value is not None and env_value != "":
        return _Raw(env_value, f"environment variable {opt.env}", config.invocation_params.dir)
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    ini_value = config.getini(opt.ini)
    if isinstance(ini_value, str) and ini_value.strip():
        return _Raw(ini_value.strip(), f"ini option {opt.ini}", base)
    ini_value = _legacy_ini(config, opt)
    if isinstance(ini_value, str) and ini_value.strip():
        return _Raw(ini_value.strip(), f"ini option {opt.legacy_ini}", base)
    return None


def _bad(opt: _Option, raw: _Raw, expected: str) -> pytest.UsageError:
    return pytest.UsageError(
        f"{opt.flag}: invalid value {raw.value!r} (from {raw.origin}); expected {expected}"
    )


def _int(
    config: pytest.Config, opt: _Option, env: Mapping[str, str], default: int, hi: int, what: str
) -> int:
    """A whole number from 0 to ``hi`` (``default`` when not given)."""
    raw = _lookup(config, opt, env)
    if raw is None:
        return default
    try:
        value = int(raw.value.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= hi:
        raise _bad(opt, raw, f"a whole number of {what} from 0 to {hi}")
    return value


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


def _bool(config: pytest.Config, opt: _Option, env: Mapping[str, str], default: bool = False) -> bool:
    raw = _lookup(config, opt, env)
    if raw is None:
        return default
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
    ip_family = _choice(config, OPT_IP_FAMILY, env, IP_FAMILIES, DEFAULT_IP_FAMILY)

    nodes = _int(config, OPT_NODES, env, DEFAULT_NODES, MAX_NODES, "worker nodes")

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

    ini_ignore = list(config.getini(OPT_IGNORE.ini)) + list(_legacy_ini(config, OPT_IGNORE) or [])  # type: ignore[call-overload]
    ignore: list[str] = [str(p).strip() for p in ini_ignore if str(p).strip()]
    env_ignore = env.get(OPT_IGNORE.env, "")
    ignore.extend(p for p in re.split(r"[,\s]+", env_ignore) if p)
    cli_ignore = list(config.getoption(OPT_IGNORE.dest, default=None) or [])
    cli_ignore += list(_legacy_cli(config, OPT_IGNORE) or [])  # type: ignore[call-overload]
    for pattern in cli_ignore:
        if not str(pattern).strip():
            raise pytest.UsageError(
                f"{OPT_IGNORE.flag}: empty pattern; give a key glob like '/registry/events/**'"
            )
        ignore.append(str(pattern).strip())

    log_lines = _int(config, OPT_LOG_LINES, env, DEFAULT_LOG_LINES, MAX_LOG_LINES, "log lines")

    from pytest_k8sstate.plugin.provider_options import provider_options as _provider_options
    from pytest_k8sstate.plugin.provider_options import warm_pool

    pool = warm_pool(config, env, provider)
    provider_options = _provider_options(config, env)
    used = config.stash.get(_USED_KEY, {})
    deprecations = tuple(
        f"{old} is deprecated and will be removed in the next release: use {new}" for old, new in used.items()
    )
    return Settings(
        provider=provider,
        nodes=nodes,
        proxy_mode=proxy_mode,
        ip_family=ip_family,
        cni=cni,
        version=version,
        keep_cluster=_bool(config, OPT_KEEP_CLUSTER, env),
        reuse_cluster=reuse,
        kubeconfig=kubeconfig,
        artifacts=artifacts,
        include_secrets=_bool(config, OPT_INCLUDE_SECRETS, env),
        ignore=tuple(dict.fromkeys(ignore)),
        test_namespace=_bool(config, OPT_TEST_NAMESPACE, env, default=True),
        share_cluster=provider == "existing" or _bool(config, OPT_SHARE_CLUSTER, env),
        log_lines=log_lines,
        pool=pool,
        component_logs=_choice(config, OPT_COMPONENT_LOGS, env, COMPONENT_LOGS, DEFAULT_COMPONENT_LOGS),
        provider_options=provider_options,
        deprecations=deprecations,
    )
