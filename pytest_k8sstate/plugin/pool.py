"""The cluster pool: one cluster per distinct :class:`ClusterKey` per pytest process (pytest-free).

The plugin's ``k8s_clusters`` fixture is a :class:`ClusterPool`; it creates clusters through the provider
registry on first use, reuses or keeps them as the options say, and deletes what it created at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest_k8sstate.plugin.options as k8s_config
from pytest_k8sstate.errors import ConfigError, K8sStateError, ProviderError
from pytest_k8sstate.k8s.helper import K8sHelper

if TYPE_CHECKING:
    from pytest_k8sstate.providers.base import Cluster, Provider

__all__ = ["MARKER_ARGS", "ClusterKey", "ClusterPool", "k8s_config_error"]

MARKER_ARGS = ("provider", "nodes", "proxy_mode", "ip_family", "cni", "version", "fresh")


@dataclass(frozen=True)
class ClusterKey:
    """What makes two clusters interchangeable for a test."""

    provider: str
    nodes: int
    proxy_mode: str
    version: str | None
    cni: str | None = None
    """None: the provider's default pod network."""
    ip_family: str = k8s_config.DEFAULT_IP_FAMILY

    def describe(self) -> str:
        version = f", Kubernetes {self.version}" if self.version else ""
        cni = f", CNI {self.cni}" if self.cni else ""
        family = f", {self.ip_family}" if self.ip_family != k8s_config.DEFAULT_IP_FAMILY else ""
        workers = f"1 control plane + {self.nodes} workers"
        return f"{self.provider}, {workers}, {self.proxy_mode}{family}{cni}{version}"

    def param_id(self) -> str:
        parts = [self.provider, f"{self.nodes}w", self.proxy_mode, *([self.cni] if self.cni else [])]
        if self.ip_family != k8s_config.DEFAULT_IP_FAMILY:
            parts.append(self.ip_family)
        if self.version:
            parts.append(self.version)
        return "k8s-" + "-".join(parts)


def _default_provider_factory(
    name: str, log: Callable[[str], None], settings: k8s_config.Settings
) -> Provider:
    """A provider from the registry (``providers.registry.get_provider``), reporting progress to ``log``."""
    from pytest_k8sstate.providers.registry import get_provider

    options: dict[str, Any] = {"progress": log, **settings.options_for(name)}
    if name == "existing":
        options["kubeconfig"] = settings.kubeconfig
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
        shared_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.shared_name = shared_name
        """xdist with ``share_cluster``: the name of the one session cluster every worker uses (from the
        controller); None otherwise."""
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
        self.shared: list[tuple[str, str]] = []
        """(provider, name) of shared clusters: workers report them, the controller deletes them at close."""
        self._counter = 0
        self._seq = next(_POOL_SEQ)  # several pools in one process (pytester runs in-process)

    # keys ------------------------------------------------------------------------------------------------
    def default_key(self) -> ClusterKey:
        s = self.settings
        return ClusterKey(s.provider, s.nodes, s.proxy_mode, s.version, s.cni, s.ip_family)

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
        cni = kwargs.get("cni", base.cni)
        if cni is not None and cni not in k8s_config.CNIS:
            raise k8s_config_error(where, f"invalid cni={cni!r}", "one of " + ", ".join(k8s_config.CNIS))
        ip_family = kwargs.get("ip_family", base.ip_family)
        if ip_family not in k8s_config.IP_FAMILIES:
            raise k8s_config_error(
                where, f"invalid ip_family={ip_family!r}", "one of " + ", ".join(k8s_config.IP_FAMILIES)
            )
        version = version.removeprefix("v") if version else None
        return ClusterKey(provider, nodes, proxy_mode, version, cni, ip_family)

    # providers and clusters ------------------------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            self._providers[name] = self._provider_factory(name)
            # a provider that took our progress callback already logs "cluster X ready (4.2s)"
            self._provider_reports[name] = getattr(self._providers[name], "progress", None) is not None
        return self._providers[name]

    def _sharing(self, key: ClusterKey) -> bool:
        return self.shared_name is not None and key == self.default_key()

    def _name_for(self, key: ClusterKey) -> str:
        """``pt<pid><worker>[p<pool>][-<n>]``: unique per process, xdist worker, pool and spec."""
        if self._sharing(key) and not self.settings.reuse_cluster:
            return str(self.shared_name)
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
        cluster = self._get(key)
        if cluster.provider == "existing":  # one cluster as it is: asking for another shape is refused
            from pytest_k8sstate.providers.existing_shape import shape_mismatch

            base = self.default_key()
            fields = ("proxy_mode", "nodes", "cni", "version")
            asked = {f: getattr(key, f) for f in fields if getattr(key, f) != getattr(base, f)}
            reason = shape_mismatch(cluster, asked)
            if reason is not None:
                self.refuse_shape(reason)
        return cluster

    def refuse_shape(self, reason: str) -> None:
        """Called when the existing cluster is not the shape asked for (the plugin skips the test)."""
        raise ProviderError(reason)

    def _get(self, key: ClusterKey) -> Cluster:
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
        if self._sharing(key) and key.provider != "existing" and not reuse:
            return self._start_shared(key, provider, name)
        if key.provider == "existing":
            # attach (the kubeconfig's current context); "delete" at the end removes only the plugin's
            # debug pods from the cluster, never the cluster
            cluster = provider.create(ClusterSpec(name=name, nodes=key.nodes, proxy_mode=key.proxy_mode))
            self.log(f"attached to cluster {cluster.name} of {settings.kubeconfig}")
            if self.worker != "main":  # xdist: the others still use the debug pods; the controller cleans up
                self.shared.append((key.provider, cluster.name))
            else:
                self._owned[cluster.name] = cluster
            return cluster
        if reuse:
            try:
                cluster = provider.get(name)
            except K8sStateError as exc:
                self._refuse_broken(key.provider, name, exc)
                self.log(f"cluster {name} not found; creating it (kept for --k8sstate-reuse-cluster {name})")
            else:
                self.log(f"reusing {key.provider} cluster {name} (--k8sstate-reuse-cluster)")
                return cluster
        provider.check_cni(key.cni)
        provider.check_ip_family(key.ip_family)
        spec = ClusterSpec(
            name=name,
            nodes=key.nodes,
            proxy_mode=key.proxy_mode,
            ip_family=key.ip_family,
            cni=key.cni,
            version=key.version,
            kubeconfig_out=settings.kubeconfig if key == self.default_key() else None,
            persistent=reuse or settings.keep_cluster,
        )
        warm = self._take_warm(key, provider, spec) if settings.pool and not reuse else None
        if warm is not None:
            cluster = warm
        else:
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

    def _take_warm(self, key: ClusterKey, provider: Provider, spec: Any) -> Cluster | None:
        """A ready cluster of ``key``'s shape from the warm pool (``--k8sstate-pool``), its server started
        if none runs; None when none is ready (nor being created): the caller creates one."""
        if key.provider != "local" or key.cni is not None:
            return None
        from pytest_k8sstate.providers.host import proc_start_time
        from pytest_k8sstate.providers.local import warm

        wspec = warm.WarmSpec(key.nodes, key.proxy_mode, key.ip_family, key.version)
        started = time.monotonic()
        try:
            server = warm.ensure_serving(wspec, size=self.settings.pool)
        except (OSError, K8sStateError) as exc:
            self.log(f"warm pool: cannot start its server ({exc}); creating the cluster instead")
            return None
        if server is not None:
            self.log(
                f"started the warm pool {wspec.slug()} ({self.settings.pool} ready; log "
                f"{warm.pool_dir(wspec) / 'serve.log'}; `k8sstate pool stop` ends it)"
            )
        owner = None if spec.persistent else os.getpid()
        name = warm.take(
            wspec,
            owner_pid=owner,
            owner_start=proc_start_time(owner) if owner else None,
            kubeconfig_out=spec.kubeconfig_out,
            wait=float(getattr(provider, "timeout", 120.0)),
            starting=(lambda: server.poll() is None) if server is not None else None,
            log=self.log,
        )
        if name is None:
            return None
        try:
            cluster = provider.get(name)
        except BaseException:
            with contextlib.suppress(Exception):
                provider.delete(name)  # it is ours now: not left behind
            raise
        took = time.monotonic() - started
        self.log(f"took cluster {name} ({key.describe()}) from the warm pool in {took:.2f}s")
        return cluster

    def _start_shared(self, key: ClusterKey, provider: Provider, name: str) -> Cluster:
        """The first worker creates the shared cluster (under a lock), the others attach to it."""
        import fcntl

        from pytest_k8sstate.providers.base import ClusterSpec
        from pytest_k8sstate.util.files import cache_dir

        locks = cache_dir() / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"share-{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (also if this process dies)
            if name in provider.list():
                cluster = provider.get(name)
                self.log(f"using the shared {key.provider} cluster {name} (--k8sstate-share-cluster)")
            else:
                self.log(f"creating the shared {key.provider} cluster {name} ({key.describe()}) ...")
                provider.check_cni(key.cni)
                provider.check_ip_family(key.ip_family)
                spec = ClusterSpec(
                    name=name,
                    nodes=key.nodes,
                    proxy_mode=key.proxy_mode,
                    ip_family=key.ip_family,
                    cni=key.cni,
                    version=key.version,
                    kubeconfig_out=self.settings.kubeconfig,
                    persistent=True,  # outlives this worker: the controller deletes it at the end
                )
                cluster = provider.create(spec)
        self.shared.append((key.provider, name))
        return cluster

    def _refuse_broken(self, provider_name: str, name: str, exc: K8sStateError) -> None:
        """``provider.get(name)`` failed: ProviderError when the cluster exists (broken); None when absent."""
        try:
            exists = name in self.provider(provider_name).list()
        except K8sStateError:
            exists = False
        if not exists:
            return
        delete = f"k8sstate cluster delete --name {name} --provider {provider_name}"
        recover = f"\nto recover: `{delete}`, then rerun"
        if "cluster delete" in str(exc):
            recover = ""
        raise ProviderError(
            f"--k8sstate-reuse-cluster {name}: the {provider_name} cluster {name} exists but cannot be "
            f"reused: {exc}{recover}"
        ) from exc

    def reset(self, cluster: Cluster) -> None:
        """Bring ``cluster`` back to its pristine state (``fresh=True``)."""
        started = time.monotonic()
        self.provider(cluster.provider).reset(cluster)
        self.log(f"reset cluster {cluster.name} in {time.monotonic() - started:.2f}s")

    def live_keys(self) -> list[ClusterKey]:
        """The specs whose cluster this pool created and could :meth:`release` (not the session's default
        cluster, nor kept, reused, shared or attached ones)."""
        if self.settings.keep_cluster:
            return []
        default = self.default_key()
        return [
            key
            for key, cluster in self._clusters.items()
            if key != default and cluster.name in self._owned and cluster.provider != "existing"
        ]

    def release(self, key: ClusterKey) -> None:
        """Delete the cluster of ``key`` now (no test left needs it); a later :meth:`get` creates it again.
        A failed delete is logged and left for :meth:`close` to try again; never raises."""
        if key not in self.live_keys():
            return
        cluster = self._clusters.pop(key)
        helper = self._helpers.pop(cluster.name, None)
        if helper is not None:
            helper.close()
        client = self._api_clients.pop(cluster.name, None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        started = time.monotonic()
        try:
            self.provider(cluster.provider).delete(cluster.name)
        except Exception as exc:  # close() tries again at the end
            self.log(f"deleting cluster {cluster.name} (no test left needs it) failed: {exc}")
            return
        del self._owned[cluster.name]
        took = time.monotonic() - started
        self.log(f"deleted cluster {cluster.name} in {took:.1f}s (no test left needs it)")

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
        for provider_name, name in dict.fromkeys(self.shared) if self.worker == "main" else ():
            if self.settings.keep_cluster:
                self.kept.append((provider_name, name))
                continue
            try:
                provider = self.provider(provider_name)
                if provider_name != "existing" and name not in provider.list():
                    continue
                provider.delete(name)
            except Exception as exc:
                errors.append(f"deleting shared cluster {name} failed: {exc}")
            else:
                self.log(f"deleted the shared {provider_name} cluster {name}")
        self._owned.clear()
        self._clusters.clear()
        return errors


_POOL_SEQ = itertools.count()


def k8s_config_error(where: str, what: str, expected: str) -> K8sStateError:
    return ConfigError(f"{where}: {what}; expected {expected}")
