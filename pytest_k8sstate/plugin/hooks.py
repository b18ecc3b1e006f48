"""The pytest plugin (entry point ``k8sstate``): options, markers, fixtures, report hooks.

Thin on purpose: clusters come from the provider registry (``pytest_k8sstate.providers``), snapshots and
diffs from ``pytest_k8sstate.state.model``, assertions from ``pytest_k8sstate.assertions.dataplane``.

Fixtures
    ``k8s_cluster`` (session): the test's cluster — the session cluster from the options, or, for a test
        marked ``@pytest.mark.k8sstate(nodes=…, proxy_mode=…)`` with another spec, a cluster of that spec
        (one per distinct spec per session; such tests get a ``[k8s-…]`` parameter id).
    ``k8s_clusters`` (session): the pool: ``.get(nodes=3, proxy_mode="nftables")`` for more clusters.
    ``cluster_state`` (function): snapshot before the test; ``.diff()``, ``.snapshot(label)``; artifacts
        and a report section on failure.
    ``k8s`` (function): a :class:`~pytest_k8sstate.k8s.helper.K8sHelper` bound to the test's cluster; what it
        applied is deleted after the test.
Markers
    ``k8sstate(provider=, nodes=, proxy_mode=, version=, fresh=False)``, ``needs(capability, …)``,
    ``finding(number, title)`` (collected into a table printed at the end of the run).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pytest_k8sstate.plugin.options as k8s_config
from pytest_k8sstate.errors import K8sStateError, ProviderError
from pytest_k8sstate.k8s.helper import K8sHelper

pytest.register_assert_rewrite("pytest_k8sstate.assertions.dataplane")

if TYPE_CHECKING:
    from pytest_k8sstate.providers.base import Cluster, Provider
    from pytest_k8sstate.state.model import Snapshot, StateDiff

__all__ = [
    "ClusterKey",
    "ClusterPool",
    "ClusterState",
    "FindingResult",
    "FindingsCollector",
    "artifact_dir_for",
    "summarize_diff",
    "write_artifacts",
]

SETTINGS_KEY = pytest.StashKey[k8s_config.Settings]()
POOL_KEY = pytest.StashKey["ClusterPool"]()
FINDINGS_KEY = pytest.StashKey["FindingsCollector"]()
STATE_KEY = pytest.StashKey["ClusterState"]()

MARKER_ARGS = ("provider", "nodes", "proxy_mode", "version", "fresh")
FINDING_PROPERTY = "k8sstate_finding"

# Why a provider lacks a capability, and what to use instead (shown in `needs` skip reasons).
_MISSING_REASONS: dict[tuple[str, str], str] = {
    ("local", "container-runtime"): "the local provider runs pods with kwok (no container runtime)",
    ("local", "kubelet"): "the local provider's nodes are kwok nodes (no kubelet)",
    ("local", "cni"): "the local provider has no CNI plugin (kwok assigns pod IPs)",
    ("local", "kindnet"): "kindnet runs only on kind clusters",
}
_ALTERNATIVES: dict[str, str] = {
    "container-runtime": "use --k8s-provider kind",
    "kubelet": "use --k8s-provider kind",
    "cni": "use --k8s-provider kind",
    "kindnet": "use --k8s-provider kind",
}


def __getattr__(name: str) -> Any:
    """Re-export the assertion helpers: ``from pytest_k8sstate.plugin.hooks import assert_new_keys``."""
    if name.startswith("assert_"):
        module = importlib.import_module("pytest_k8sstate.assertions.dataplane")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    k8s_config.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "k8sstate(provider=None, nodes=None, proxy_mode=None, version=None, fresh=False): run the test on a "
        "cluster of this spec (one per distinct spec per session); fresh=True resets the cluster to its "
        "pristine state before the test",
    )
    config.addinivalue_line(
        "markers",
        "needs(capability, ...): skip unless the test's cluster has every capability (container-runtime, "
        "kubelet, ipvs, cni, kindnet, nftables, iptables, etcd)",
    )
    config.addinivalue_line(
        "markers",
        "finding(number, title): the test checks a finding; listed in the k8sstate findings table at the end",
    )
    _set_assertion_verbosity(config.get_verbosity())
    settings = k8s_config.resolve(config)
    config.stash[SETTINGS_KEY] = settings
    collector = FindingsCollector()
    config.stash[FINDINGS_KEY] = collector
    config.pluginmanager.register(collector, "k8sstate-findings")
    workerinput = getattr(config, "workerinput", None)
    worker = str(workerinput["workerid"]) if workerinput else "main"
    config.stash[POOL_KEY] = ClusterPool(settings, worker=worker, log=_terminal_logger(config))


def _set_assertion_verbosity(level: int) -> None:
    """Pass ``-v`` to the assertion helpers once a test module has imported them (no import here:
    projects that never use them do not pay for it)."""
    module = sys.modules.get("pytest_k8sstate.assertions.dataplane")
    if module is not None and module.get_verbosity() != level:
        module.set_verbosity(level)


def pytest_report_header(config: pytest.Config) -> str | None:
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return None
    extra = f", reuse {settings.reuse_cluster}" if settings.reuse_cluster else ""
    return (
        f"k8sstate: provider {settings.provider}, {settings.nodes} worker nodes, proxy mode "
        f"{settings.proxy_mode}{extra}, artifacts {settings.artifacts}"
    )


def _terminal_logger(config: pytest.Config) -> Callable[[str], None]:
    def log(message: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capman = config.pluginmanager.get_plugin("capturemanager")
        ctx = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
        with ctx:
            reporter.ensure_newline()
            writer = getattr(reporter, "_tw", None)  # mid-line after the progress "[100%]"?
            if writer is not None and getattr(writer, "width_of_current_line", None):
                reporter.write("\n")
            reporter.write_line(f"[k8sstate] {message}")

    return log


# --------------------------------------------------------------------------------------------------- clusters


@dataclass(frozen=True)
class ClusterKey:
    """What makes two clusters interchangeable for a test."""

    provider: str
    nodes: int
    proxy_mode: str
    version: str | None

    def describe(self) -> str:
        version = f", Kubernetes {self.version}" if self.version else ""
        return f"{self.provider}, 1 control plane + {self.nodes} workers, {self.proxy_mode}{version}"

    def param_id(self) -> str:
        parts = [self.provider, f"{self.nodes}w", self.proxy_mode]
        if self.version:
            parts.append(self.version)
        return "k8s-" + "-".join(parts)


def _default_provider_factory(
    name: str, log: Callable[[str], None], settings: k8s_config.Settings
) -> Provider:
    """A provider from the registry (``providers.base.get_provider``), reporting progress to ``log``."""
    from pytest_k8sstate.providers.base import get_provider

    options: dict[str, Any] = {"progress": log}
    if name == "existing":
        options["kubeconfig"] = settings.kubeconfig
    try:
        return get_provider(name, **options)
    except TypeError:  # a provider without a progress callback
        options.pop("progress")
        return get_provider(name, **options)


class ClusterPool:
    """Clusters of one pytest process, one per distinct :class:`ClusterKey`; deletes what it created."""

    def __init__(
        self,
        settings: k8s_config.Settings,
        *,
        worker: str = "main",
        log: Callable[[str], None] = lambda _msg: None,
        provider_factory: Callable[[str], Provider] | None = None,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.log = log
        self._provider_factory = provider_factory or (
            lambda name: _default_provider_factory(name, self.log, self.settings)
        )
        self._providers: dict[str, Provider] = {}
        self._provider_reports: dict[str, bool] = {}
        self._clusters: dict[ClusterKey, Cluster] = {}
        self._owned: dict[str, Cluster] = {}  # name -> cluster this pool must delete (or keep)
        self._failed: dict[ClusterKey, BaseException] = {}
        self._api_clients: dict[str, Any] = {}
        self._helpers: dict[str, K8sHelper] = {}
        self.kept: list[tuple[str, str]] = []  # (provider, name) kept at close
        self._counter = 0
        self._seq = next(_POOL_SEQ)  # several pools in one process (pytester runs in-process)

    # keys ------------------------------------------------------------------------------------------------
    def default_key(self) -> ClusterKey:
        s = self.settings
        return ClusterKey(s.provider, s.nodes, s.proxy_mode, s.version)

    def key_for(self, kwargs: Mapping[str, Any], where: str = "@pytest.mark.k8sstate") -> ClusterKey:
        """The key for a ``k8sstate`` marker's keyword arguments (missing ones from the options)."""
        unknown = sorted(set(kwargs) - set(MARKER_ARGS))
        if unknown:
            raise k8s_config_error(where, f"unknown argument(s) {', '.join(unknown)}", ", ".join(MARKER_ARGS))
        base = self.default_key()
        provider = kwargs.get("provider", base.provider)
        if provider not in k8s_config.PROVIDERS:
            raise k8s_config_error(
                where, f"invalid provider={provider!r}", "one of " + ", ".join(k8s_config.PROVIDERS)
            )
        proxy_mode = kwargs.get("proxy_mode", base.proxy_mode)
        if proxy_mode not in k8s_config.PROXY_MODES:
            raise k8s_config_error(
                where, f"invalid proxy_mode={proxy_mode!r}", "one of " + ", ".join(k8s_config.PROXY_MODES)
            )
        nodes = kwargs.get("nodes", base.nodes)
        if isinstance(nodes, bool) or not isinstance(nodes, int) or not 0 <= nodes <= k8s_config.MAX_NODES:
            raise k8s_config_error(
                where, f"invalid nodes={nodes!r}", f"an int from 0 to {k8s_config.MAX_NODES}"
            )
        version = kwargs.get("version", base.version)
        if version is not None and not isinstance(version, str):
            raise k8s_config_error(where, f"invalid version={version!r}", "a string like '1.37.0'")
        return ClusterKey(provider, nodes, proxy_mode, version.removeprefix("v") if version else None)

    # providers and clusters ------------------------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            self._providers[name] = self._provider_factory(name)
            # a provider that took our progress callback already logs "cluster X ready (4.2s)"
            self._provider_reports[name] = getattr(self._providers[name], "progress", None) is not None
        return self._providers[name]

    def _name_for(self, key: ClusterKey) -> str:
        """``pt<pid><worker>[p<pool>][-<n>]``: unique per process, xdist worker, pool and spec."""
        if key == self.default_key() and self.settings.reuse_cluster:
            reuse = self.settings.reuse_cluster  # one per xdist worker: NAME-gw0, NAME-gw1, ...
            return reuse if self.worker == "main" else f"{reuse}-{self.worker}".lower()
        suffix = "" if key == self.default_key() else f"-{self._next()}"
        worker = self.worker if self.worker != "main" else "m"
        pool = f"p{self._seq}" if self._seq else ""
        return f"pt{os.getpid() % 100000}{worker}{pool}{suffix}".lower()

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    def static_capabilities(self, key: ClusterKey) -> frozenset[str] | None:
        """What the provider can offer at most, when it says so without a cluster (else None)."""
        try:
            caps = self.provider(key.provider).capabilities
        except K8sStateError:
            return None
        return frozenset(caps) if caps else None

    def get(self, key: ClusterKey | None = None, **kwargs: Any) -> Cluster:
        """The cluster for ``key`` (or for marker-style ``kwargs``), created on first use."""
        if key is None:
            key = self.key_for(kwargs, where="k8s_clusters.get()")
        if key in self._clusters:
            return self._clusters[key]
        if key in self._failed:
            first = self._failed[key]
            raise ProviderError(
                f"the {key.describe()} cluster failed to start earlier in this session: {first}"
            )
        try:
            cluster = self._start(key)
        except K8sStateError as exc:
            self._failed[key] = exc
            raise
        self._clusters[key] = cluster
        return cluster

    def _start(self, key: ClusterKey) -> Cluster:
        from pytest_k8sstate.providers.base import ClusterSpec

        provider = self.provider(key.provider)
        name = self._name_for(key)
        settings = self.settings
        reuse = key == self.default_key() and settings.reuse_cluster is not None
        if key.provider == "existing":
            # attach (the kubeconfig's current context); "delete" at the end removes only the plugin's
            # debug pods from the cluster, never the cluster
            cluster = provider.create(ClusterSpec(name=name, nodes=key.nodes, proxy_mode=key.proxy_mode))
            self.log(f"attached to cluster {cluster.name} of {settings.kubeconfig}")
            self._owned[cluster.name] = cluster
            return cluster
        if reuse:
            try:
                cluster = provider.get(name)
            except K8sStateError:
                self.log(f"cluster {name} not found; creating it (kept for --k8s-reuse-cluster {name})")
            else:
                self.log(f"reusing {key.provider} cluster {name} (--k8s-reuse-cluster)")
                return cluster
        spec = ClusterSpec(
            name=name,
            nodes=key.nodes,
            proxy_mode=key.proxy_mode,
            version=key.version,
            kubeconfig_out=settings.kubeconfig if key == self.default_key() else None,
            persistent=reuse or settings.keep_cluster,
        )
        self.log(f"creating {key.provider} cluster {name} ({key.describe()}) ...")
        started = time.monotonic()
        cluster = provider.create(spec)
        if not self._provider_reports.get(key.provider, False):
            self.log(f"cluster {name} ready in {time.monotonic() - started:.1f}s")
        if reuse:
            self.kept.append((key.provider, cluster.name))
        else:
            self._owned[cluster.name] = cluster
        return cluster

    def reset(self, cluster: Cluster) -> None:
        """Bring ``cluster`` back to its pristine state (``fresh=True``)."""
        started = time.monotonic()
        self.provider(cluster.provider).reset(cluster)
        self.log(f"reset cluster {cluster.name} in {time.monotonic() - started:.2f}s")

    def api_client(self, cluster: Cluster) -> Any:
        """One ``kubernetes.client.ApiClient`` per cluster (from its kubeconfig)."""
        if cluster.name not in self._api_clients:
            self._api_clients[cluster.name] = cluster.kube_api()
        return self._api_clients[cluster.name]

    def dynamic_client(self, cluster: Cluster) -> Any:
        """One ``kubernetes.dynamic.DynamicClient`` per cluster: API discovery once per session."""
        if cluster.name not in self._helpers:
            self._helpers[cluster.name] = K8sHelper(self.api_client(cluster), cluster=cluster)
        return self._helpers[cluster.name].dynamic

    def close(self) -> list[str]:
        """Delete the clusters this pool created (or keep them); returns error messages, never raises."""
        errors: list[str] = []
        for helper in self._helpers.values():
            helper.close()
        self._helpers.clear()
        for client in self._api_clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self._api_clients.clear()
        for name, cluster in list(self._owned.items()):
            if self.settings.keep_cluster:
                self.kept.append((cluster.provider, name))
                continue
            started = time.monotonic()
            try:
                self.provider(cluster.provider).delete(name)
            except Exception as exc:  # keep deleting the others
                errors.append(f"deleting cluster {name} failed: {exc}")
            else:
                if cluster.provider == "existing":
                    self.log(f"detached from cluster {name} (removed the plugin's debug pods)")
                else:
                    self.log(f"deleted cluster {name} in {time.monotonic() - started:.1f}s")
        self._owned.clear()
        self._clusters.clear()
        return errors


_POOL_SEQ = itertools.count()


def k8s_config_error(where: str, what: str, expected: str) -> K8sStateError:
    from pytest_k8sstate.errors import ConfigError

    return ConfigError(f"{where}: {what}; expected {expected}")


def _pool(config: pytest.Config) -> ClusterPool:
    return config.stash[POOL_KEY]


def _marker_key(pool: ClusterPool, node: pytest.Item | pytest.Function | Any) -> ClusterKey | None:
    marker = node.get_closest_marker("k8sstate")
    if marker is None:
        return None
    if marker.args:
        raise k8s_config_error(
            f"{node.nodeid}: @pytest.mark.k8sstate",
            f"invalid positional args {marker.args!r}",
            "keyword arguments",
        )
    kwargs = {k: v for k, v in marker.kwargs.items() if k != "fresh"}
    return pool.key_for(kwargs, where=f"{node.nodeid}: @pytest.mark.k8sstate")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests whose ``k8sstate`` marker asks for another cluster get ``k8s_cluster`` parametrized (its key)."""
    if "k8s_cluster" not in metafunc.fixturenames:
        return
    pool = metafunc.config.stash.get(POOL_KEY, None)
    if pool is None:
        return
    error = None
    try:
        key = _marker_key(pool, metafunc.definition)
    except K8sStateError as exc:
        key, error = None, str(exc)
    if error is not None:
        pytest.fail(error, pytrace=False)
    if key is None or key == pool.default_key():
        return
    metafunc.parametrize("k8s_cluster", [key], indirect=True, scope="session", ids=[key.param_id()])


@pytest.fixture(scope="session")
def k8s_clusters(pytestconfig: pytest.Config) -> ClusterPool:
    """The session's cluster pool: ``k8s_clusters.get(nodes=3, proxy_mode="nftables")``."""
    return _pool(pytestconfig)


@pytest.fixture(scope="session")
def k8s_cluster(request: pytest.FixtureRequest, k8s_clusters: ClusterPool) -> Cluster:
    """The test's cluster (session-scoped; one per distinct ``k8sstate`` marker spec)."""
    key: ClusterKey = getattr(request, "param", None) or k8s_clusters.default_key()
    try:
        return k8s_clusters.get(key)
    except K8sStateError as exc:
        raise pytest.fail.Exception(f"k8sstate: {exc}", pytrace=False) from None


def _missing_reason(key: ClusterKey, capability: str, cluster: Cluster | None = None) -> str:
    # the provider may say why this cluster lacks it (kind: a node image built without kindnetd)
    notes = cluster.details.get("missing_capabilities") if cluster is not None else None
    if isinstance(notes, dict) and isinstance(notes.get(capability), str):
        return f"needs {capability}: {notes[capability]}"
    if capability == "ipvs" and key.proxy_mode != "ipvs":
        return (
            f"needs ipvs: the cluster's kube-proxy runs in {key.proxy_mode} mode; use --k8s-proxy-mode ipvs "
            'or @pytest.mark.k8sstate(proxy_mode="ipvs")'
        )
    why = _MISSING_REASONS.get((key.provider, capability))
    if why is None:
        on = f" (cluster {cluster.name})" if cluster is not None else ""
        why = f"the {key.provider} provider{on} does not provide it"
    alternative = _ALTERNATIVES.get(capability)
    return f"needs {capability}: {why}" + (f"; {alternative}" if alternative else "")


def _precheck_capability(pool: ClusterPool, key: ClusterKey, capability: str) -> str | None:
    """A skip reason when ``capability`` is certainly missing for ``key`` (no cluster is created)."""
    if capability == "ipvs":
        if key.proxy_mode != "ipvs":
            return _missing_reason(key, capability)
        if key.provider in ("local", "kind", "minikube"):  # nodes share this kernel
            from pytest_k8sstate.providers.local.provider import check_ipvs_support

            try:
                check_ipvs_support()
            except K8sStateError as exc:
                return f"needs ipvs: {exc}"
        return None
    static = pool.static_capabilities(key)
    if static is not None and capability not in static:
        return _missing_reason(key, capability)
    return None


def _needs(item: pytest.Item) -> list[str]:
    caps: list[str] = []
    for marker in item.iter_markers("needs"):
        for arg in marker.args:
            caps.extend([arg] if isinstance(arg, str) else list(arg))
    return list(dict.fromkeys(caps))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests whose ``needs`` are certainly missing *before* any fixture runs.

    Session-scoped fixtures (the test's ``k8s_cluster`` for a ``k8sstate(proxy_mode="ipvs")`` marker) are
    set up before function-scoped autouse ones, so the static check must happen here or an unsatisfiable
    cluster would be created (and fail) just to skip the test.
    """
    _set_assertion_verbosity(item.config.get_verbosity())
    needs = _needs(item)
    if not needs:
        return
    pool = _pool(item.config)
    try:
        key = _marker_key(pool, item) or pool.default_key()
    except K8sStateError:
        return  # reported by the _k8sstate_markers fixture
    for cap in needs:
        reason = _precheck_capability(pool, key, cap)
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture(autouse=True)
def _k8sstate_markers(request: pytest.FixtureRequest) -> None:
    """Applies ``needs`` (skip) and ``k8sstate(fresh=True)`` (reset) before the test's other fixtures."""
    node = request.node
    if not isinstance(node, pytest.Item):
        return
    needs = _needs(node)
    marker = node.get_closest_marker("k8sstate")
    fresh = bool(marker.kwargs.get("fresh", False)) if marker is not None else False
    if not needs and not fresh:
        return
    pool = _pool(request.config)
    try:
        key = _marker_key(pool, node) or pool.default_key()
    except K8sStateError as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    # (what is certainly missing was skipped by pytest_runtest_setup before any fixture ran)
    try:
        cluster = pool.get(key)
    except K8sStateError as exc:
        raise pytest.fail.Exception(f"k8sstate: {exc}", pytrace=False) from None
    for cap in needs:
        if cap not in cluster.capabilities:
            pytest.skip(_missing_reason(key, cap, cluster))
    if fresh:
        try:
            pool.reset(cluster)
        except K8sStateError as exc:
            raise pytest.fail.Exception(
                f"k8sstate: resetting cluster {cluster.name} failed: {exc}", pytrace=False
            ) from None


# --------------------------------------------------------------------------------------------------- state


def sanitize_nodeid(nodeid: str, limit: int = 120) -> str:
    """A directory name for a test node id: ``tests/a.py::test_x[1]`` → ``tests_a.py__test_x_1_``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "__")).strip("._") or "test"
    if len(name) > limit:
        import hashlib

        digest = hashlib.sha256(nodeid.encode()).hexdigest()[:10]
        name = f"{name[: limit - 11]}-{digest}"
    return name


def artifact_dir_for(artifacts: Path, nodeid: str) -> Path:
    return artifacts / sanitize_nodeid(nodeid)


_NODE_PARTS = (
    ("rules_added", "rules added"),
    ("rules_removed", "rules removed"),
    ("chains_added", "chains added"),
    ("chains_removed", "chains removed"),
    ("nft_rules_added", "nft rules added"),
    ("nft_rules_removed", "nft rules removed"),
    ("nft_elements_added", "nft set/map elements added"),
    ("nft_elements_removed", "nft set/map elements removed"),
    ("ipset_members_added", "ipset members added"),
    ("ipset_members_removed", "ipset members removed"),
    ("ipvs_added", "IPVS services added"),
    ("ipvs_removed", "IPVS services removed"),
    ("addrs_added", "addresses added"),
    ("addrs_removed", "addresses removed"),
    ("routes_added", "routes added"),
    ("routes_removed", "routes removed"),
    ("links_added", "links added"),
    ("links_removed", "links removed"),
)


def summarize_diff(diff: StateDiff) -> str:
    """One line, default view: ``3 etcd keys added, 1 modified; 12 rules added on 3 nodes``."""
    counts = [
        (len(diff.etcd_added()), "added"),
        (len(diff.etcd_removed()), "removed"),
        (len(diff.etcd_modified()), "modified"),
    ]
    etcd_parts = [f"{n} {label}" for n, label in counts if n]
    if etcd_parts:
        first_n = next(n for n, _ in counts if n)
        etcd_parts[0] = etcd_parts[0].replace(" ", " etcd key " if first_n == 1 else " etcd keys ", 1)
        etcd_text = ", ".join(etcd_parts)
    else:
        etcd_text = "no etcd key changed"
    hidden = sum(diff.hidden_counts().values())
    if hidden:
        etcd_text += f" ({hidden} more hidden by ignore patterns)"
    node_parts: list[str] = []
    for attr, label in _NODE_PARTS:
        per_node = [len(getattr(nd, attr)) for nd in diff.nodes.values()]
        total = sum(per_node)
        if total:
            changed = sum(1 for n in per_node if n)
            node_parts.append(f"{total} {label} on {changed} node{'s' if changed != 1 else ''}")
    return f"{etcd_text}; " + (", ".join(node_parts) if node_parts else "no node state changed")


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_artifacts(
    directory: Path,
    *,
    before: Snapshot | None,
    after: Snapshot | None,
    diff: StateDiff | None,
    extra: Mapping[str, Snapshot] | None = None,
) -> list[Path]:
    """Save ``before.json``, ``after.json``, ``diff.json`` (+ intermediate snapshots) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for label, snap in (("before", before), ("after", after), *sorted((extra or {}).items())):
        if snap is None:
            continue
        path = directory / f"{sanitize_nodeid(label, 60)}.json"
        snap.save(path)
        written.append(path)
    if diff is not None:
        path = directory / "diff.json"
        _write_json_atomic(path, diff.to_json())
        written.append(path)
    return written


class ClusterState:
    """State of the test's cluster around the test (the ``cluster_state`` fixture)."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        ignore: tuple[str, ...] = (),
        include_secrets: bool = False,
    ) -> None:
        self.cluster = cluster
        self.extra_ignore = ignore
        self.include_secrets = include_secrets
        self.before: Snapshot = self._take("before")
        self.after: Snapshot | None = None
        self.snapshots: dict[str, Snapshot] = {}

    def _take(self, label: str) -> Snapshot:
        return self.cluster.snapshot(label, include_secrets=self.include_secrets)

    @property
    def ignore(self) -> tuple[str, ...]:
        from pytest_k8sstate.state.model import DEFAULT_IGNORE

        return DEFAULT_IGNORE + self.extra_ignore

    def snapshot(self, label: str) -> Snapshot:
        """Take an intermediate snapshot (also saved with the artifacts on failure)."""
        if label in ("before", "after") or label in self.snapshots:
            raise K8sStateError(f"cluster_state.snapshot({label!r}): label already used; pick another label")
        snap = self._take(label)
        self.snapshots[label] = snap
        return snap

    def diff(self, since: Snapshot | str | None = None) -> StateDiff:
        """Snapshot now (``.after``) and return the diff from ``before`` (or ``since``) to now."""
        self.after = self._take("after")
        return self.diff_between(self._resolve(since) if since is not None else self.before, self.after)

    def eventually(
        self,
        check: Callable[[Snapshot], object],
        *,
        timeout: float = 30.0,
        interval: float = 0.2,
    ) -> Snapshot:
        """Snapshot until ``check(snapshot)`` stops raising AssertionError (e.g. kube-proxy has synced).

        ``check`` is typically an assertion helper: ``lambda s: assert_dnat_to(s, service=…, endpoints=…)``.
        Returns the snapshot that passed (also ``.after``); re-raises the last AssertionError, prefixed
        with how long it waited, when ``timeout`` passes.
        """
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            snap = self._take("after")
            attempts += 1
            self.after = snap
            try:
                check(snap)
            except AssertionError as exc:
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"still failing after {timeout:g}s ({attempts} snapshots): {exc}"
                    ) from None
            else:
                return snap
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def diff_between(self, a: Snapshot, b: Snapshot) -> StateDiff:
        return a.diff(b, ignore=self.ignore)

    def _resolve(self, ref: Snapshot | str) -> Snapshot:
        if not isinstance(ref, str):
            return ref
        if ref == "before":
            return self.before
        if ref not in self.snapshots:
            raise K8sStateError(f"no snapshot labelled {ref!r}; taken: before, {', '.join(self.snapshots)}")
        return self.snapshots[ref]

    def save_failure(self, directory: Path, *, detail_lines: int = 15) -> str:
        """Snapshot the state at failure, write the artifacts, return the report section text."""
        try:
            after = self._take("after")
        except Exception as exc:
            return f"k8sstate: capturing the cluster state at failure failed: {exc}"
        diff: StateDiff | None = None
        try:
            diff = self.diff_between(self.before, after)
        except Exception as exc:
            head = f"k8sstate: diff before → failure failed: {exc}"
            detail = ""
        else:
            head = f"k8sstate: {summarize_diff(diff)}"
            detail = diff.summary(limit=detail_lines)
        try:
            write_artifacts(directory, before=self.before, after=after, diff=diff, extra=self.snapshots)
        except Exception as exc:
            where = f"writing artifacts to {directory} failed: {exc}"
        else:
            where = f"artifacts: {directory}"
        try:
            from pytest_k8sstate.providers.base import get_provider

            get_provider(self.cluster.provider).export_logs(self.cluster.name, directory / "logs")
        except Exception as exc:  # logs are a bonus: never hide the test's own failure
            where += f" (component logs not exported: {exc})"
        return f"{head}; {where}" + (f"\n{detail}" if detail else "")


@pytest.fixture
def cluster_state(request: pytest.FixtureRequest, k8s_cluster: Cluster) -> Iterator[ClusterState]:
    """Snapshot before the test; ``.diff()`` after; artifacts + report section on failure."""
    settings = request.config.stash[SETTINGS_KEY]
    try:
        state = ClusterState(k8s_cluster, ignore=settings.ignore, include_secrets=settings.include_secrets)
    except K8sStateError as exc:
        raise pytest.fail.Exception(
            f"k8sstate: snapshot of cluster {k8s_cluster.name} before the test failed: {exc}", pytrace=False
        ) from None
    request.node.stash[STATE_KEY] = state
    yield state
    with contextlib.suppress(KeyError):
        del request.node.stash[STATE_KEY]


@pytest.fixture
def k8s(
    request: pytest.FixtureRequest, k8s_cluster: Cluster, k8s_clusters: ClusterPool
) -> Iterator[K8sHelper]:
    """A :class:`K8sHelper` for the test's cluster; objects it applied are deleted after the test."""
    try:
        dynamic = k8s_clusters.dynamic_client(k8s_cluster)
    except K8sStateError as exc:
        raise pytest.fail.Exception(f"k8sstate: cluster {k8s_cluster.name}: {exc}", pytrace=False) from None
    helper = K8sHelper(
        k8s_clusters.api_client(k8s_cluster),
        namespace="default",
        cluster=k8s_cluster,
        manifests_dir=request.config.rootpath / "manifests",
        dynamic=dynamic,
    )
    yield helper
    problems = helper.cleanup(timeout=30)
    for problem in problems:
        warnings.warn(
            pytest.PytestWarning(f"k8sstate: cleanup after {request.node.nodeid}: {problem}"), stacklevel=1
        )


# --------------------------------------------------------------------------------------------------- reports


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when == "call" and report.failed:
        state = item.stash.get(STATE_KEY, None)
        settings = item.config.stash.get(SETTINGS_KEY, None)
        if state is not None and settings is not None:
            directory = artifact_dir_for(settings.artifacts, item.nodeid)
            report.sections.append(("k8sstate", state.save_failure(directory)))
    return report


@dataclass
class FindingResult:
    number: str
    title: str
    nodeid: str
    outcome: str = "not run"
    reason: str = ""
    phases: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.outcome}: {self.reason}" if self.reason else self.outcome


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("finding")
        if marker is None:
            continue
        number = marker.args[0] if marker.args else marker.kwargs.get("number", "?")
        title = marker.args[1] if len(marker.args) > 1 else marker.kwargs.get("title", item.name)
        item.user_properties.append((FINDING_PROPERTY, [str(number), str(title)]))


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


class FindingsCollector:
    """Collects the outcome of every ``finding``-marked test (also from xdist workers' reports)."""

    def __init__(self) -> None:
        self.results: dict[str, FindingResult] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        finding: Any = next((v for k, v in report.user_properties if k == FINDING_PROPERTY), None)
        if not isinstance(finding, (list, tuple)) or len(finding) != 2:
            return
        number, title = finding
        result = self.results.setdefault(report.nodeid, FindingResult(str(number), str(title), report.nodeid))
        result.phases.append(report.when or "")
        if hasattr(report, "wasxfail"):
            result.outcome, result.reason = ("xfailed" if report.skipped else "xpassed"), str(report.wasxfail)
        elif report.skipped:
            result.outcome, result.reason = "skipped", _skip_reason(report)
        elif report.failed:
            if report.when == "call":
                result.outcome, result.reason = "failed", ""
            elif result.outcome != "failed":
                result.outcome, result.reason = "error", f"in {report.when}"
        elif report.when == "call" and result.outcome == "not run":
            result.outcome = "passed"


def _number_key(number: str) -> tuple[int, str]:
    match = re.match(r"\d+", number)
    return (int(match.group()) if match else 10**9, number)


def format_findings(results: Mapping[str, FindingResult]) -> list[str]:
    """The findings table as lines (sorted by finding number)."""
    rows = sorted(results.values(), key=lambda r: (_number_key(r.number), r.nodeid))
    width = max((len(r.number) for r in rows), default=1)
    title_width = min(max((len(_row_title(r)) for r in rows), default=7), 70)
    lines = [f"{'#':>{width}}  {'finding':<{title_width}}  result"]
    for r in rows:
        title = _row_title(r)
        if len(title) > title_width:
            title = title[: title_width - 1] + "…"
        lines.append(f"{r.number:>{width}}  {title:<{title_width}}  {r.describe()}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    lines.append(", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())))
    return lines


def _row_title(result: FindingResult) -> str:
    param = re.search(r"\[(.*)\]$", result.nodeid)
    return f"{result.title} [{param.group(1)}]" if param else result.title


def pytest_sessionfinish(session: pytest.Session) -> None:
    pool = session.config.stash.get(POOL_KEY, None)
    if pool is None:
        return
    for error in pool.close():
        pool.log(error)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # xdist worker: the controller prints the kept clusters
        workeroutput["k8sstate_kept"] = [list(k) for k in pool.kept]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect the clusters a worker kept (``--k8s-keep-cluster``)."""
    pool = node.config.stash.get(POOL_KEY, None)
    kept = (getattr(node, "workeroutput", None) or {}).get("k8sstate_kept") or []
    if pool is not None:
        pool.kept.extend((str(provider), str(name)) for provider, name in kept)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    collector = config.stash.get(FINDINGS_KEY, None)
    results = collector.results if collector is not None else {}
    if results:
        terminalreporter.write_sep("=", "k8sstate findings")
        for line in format_findings(results):
            terminalreporter.write_line(line)
    pool = config.stash.get(POOL_KEY, None)
    if pool is not None and pool.kept:
        terminalreporter.write_sep("=", "k8sstate: kept clusters")
        reuse = pool.settings.reuse_cluster
        for provider, name in pool.kept:
            hint = reuse if reuse and re.fullmatch(rf"{re.escape(reuse)}(-gw\d+)?", name) else name
            terminalreporter.write_line(
                f"kept {provider} cluster {name}: reuse it with --k8s-reuse-cluster {hint}; "
                f"delete it with: k8sstate cluster delete --provider {provider} --name {name}"
            )
