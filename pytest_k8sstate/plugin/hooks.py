"""The pytest plugin (entry point ``k8sstate``): options, markers, fixtures, report hooks.

Hooks and fixtures only, calling a pytest-free core: the cluster pool (:mod:`.pool`), the per-test state and
artifacts (:mod:`.state`), the findings table (:mod:`.findings`), the options (:mod:`.options`). Clusters come
from the provider registry, snapshots and diffs from ``pytest_k8sstate.state``, assertions from
``pytest_k8sstate.assertions``.

Fixtures
    ``k8s_cluster`` (session): the test's cluster — the session cluster from the options, or, for a test
        marked ``@pytest.mark.k8sstate(nodes=…, proxy_mode=…)`` with another spec, a cluster of that spec
        (one per distinct spec per session; such tests get a ``[k8s-…]`` parameter id).
    ``k8s_clusters`` (session): the pool: ``.get(nodes=3, proxy_mode="nftables")`` for more clusters.
    ``cluster_state`` (function): snapshot before the test; ``.diff(namespace=…)``, ``.snapshot(label)``;
        artifacts and a report section on failure.
    ``k8sstate_namespace`` (function): the test's own namespace, created before it and deleted after it
        (``default`` with ``--k8sstate-test-namespace no`` or ``@pytest.mark.k8sstate(namespace="default")``).
    ``k8s_api`` (function): a :class:`~pytest_k8sstate.k8s.helper.K8sHelper` bound to the test's cluster and
        namespace; what it applied is deleted after the test.
Markers
    ``k8sstate(provider=, nodes=, proxy_mode=, ip_family=, cni=, version=, fresh=False, namespace=None)``,
    ``k8sstate_needs(capability, …)``, ``k8sstate_finding(number, title)`` (collected into a table printed
    at the end of the run). The 0.1 names (fixture ``k8s``, markers ``needs`` / ``finding``, options
    ``--k8s-*``) still work for one release with a deprecation warning: see :mod:`.legacy`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import pytest_k8sstate.plugin.options as k8s_config
from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.k8s.helper import K8sHelper
from pytest_k8sstate.plugin.findings import FINDING_PROPERTY, FindingsCollector, format_findings
from pytest_k8sstate.plugin.legacy import LEGACY_MARKERS, legacy_fixture_plugin, marker_args
from pytest_k8sstate.plugin.live import live_terminal
from pytest_k8sstate.plugin.pool import ClusterKey, ClusterPool, k8s_config_error
from pytest_k8sstate.plugin.reports import NAMESPACE_KEY, STATE_KEY, on_failure
from pytest_k8sstate.plugin.state import ClusterState
from pytest_k8sstate.providers.existing_shape import shape_mismatch
from pytest_k8sstate.providers.images import image_loader
from pytest_k8sstate.providers.registry import provider_class

pytest.register_assert_rewrite("pytest_k8sstate.assertions")

if TYPE_CHECKING:
    from pytest_k8sstate.providers.base import Cluster

SHAPE_ARGS = ("proxy_mode", "nodes", "cni", "version")
SETTINGS_KEY = pytest.StashKey[k8s_config.Settings]()
POOL_KEY = pytest.StashKey["ClusterPool"]()
FINDINGS_KEY = pytest.StashKey["FindingsCollector"]()


# --------------------------------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    k8s_config.add_options(parser)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser) -> Generator[None]:
    """Once every plugin and initial conftest has registered its options: the 0.1 option names nobody
    else took (see :func:`.legacy.add_legacy_options`)."""
    result = yield
    from pytest_k8sstate.plugin.legacy import add_legacy_options

    add_legacy_options(early_config, parser)
    return result


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "k8sstate(provider=None, nodes=None, proxy_mode=None, ip_family=None, cni=None, version=None, "
        "fresh=False, namespace=None): run the test on a cluster of this spec (one per distinct spec per "
        "session); fresh=True resets the cluster to its pristine state before the test; namespace='NAME' "
        "runs it in that existing namespace instead of its own",
    )
    needs = (
        "(capability, ...): skip unless the test's cluster has every capability (container-runtime, "
        "kubelet, ipvs, cni, kindnet, nftables, iptables, etcd)"
    )
    finding = "(number, title): the test checks a finding; listed in the k8sstate findings table at the end"
    config.addinivalue_line("markers", f"k8sstate_needs{needs}")
    config.addinivalue_line("markers", f"k8sstate_finding{finding}")
    for old, new in LEGACY_MARKERS.items():
        config.addinivalue_line("markers", f"{old}: deprecated spelling of {new} (pytest-k8sstate)")
    _set_assertion_verbosity(config.get_verbosity())
    settings = k8s_config.resolve(config)
    for message in settings.deprecations:
        config.issue_config_time_warning(k8s_config.K8sStateDeprecationWarning(message), stacklevel=2)
    config.stash[SETTINGS_KEY] = settings
    collector = FindingsCollector()
    config.stash[FINDINGS_KEY] = collector
    config.pluginmanager.register(collector, "k8sstate-findings")
    workerinput = getattr(config, "workerinput", None)
    worker = str(workerinput["workerid"]) if workerinput else "main"
    shared = str(workerinput["k8sstate_shared_name"]) if workerinput and settings.share_cluster else None
    pool = ClusterPool(settings, worker=worker, log=_terminal_logger(config), shared_name=shared)
    pool.refuse_shape = pytest.skip  # type: ignore[method-assign]  # existing cluster of another shape
    config.stash[POOL_KEY] = pool
    config.add_cleanup(live_terminal(config))  # live progress lines of long waits (plugin/live.py)
    # SIGTERM (a CI timeout) cleans up like Ctrl-C: pytest's KeyboardInterrupt path closes the pool
    from pytest_k8sstate.providers.host import sigterm_as_interrupt

    if sigterm_as_interrupt():
        config.add_cleanup(_restore_sigterm)


def _restore_sigterm() -> None:
    """Give SIGTERM its default action back at the end of the session (we installed ours over it)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _set_assertion_verbosity(level: int) -> None:
    """Pass ``-v`` to the assertion helpers once a test module has imported them (no import here:
    projects that never use them do not pay for it)."""
    module = sys.modules.get("pytest_k8sstate.assertions")
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
            reporter.flush()  # before a live progress line written to the same terminal

    return log


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
    kwargs = {k: v for k, v in marker.kwargs.items() if k not in ("fresh", "namespace")}
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
    """The skip reason for a test needing ``capability``, which ``key``'s provider (cluster) lacks."""
    return provider_class(key.provider).missing_reason(
        capability, proxy_mode=key.proxy_mode, cluster=cluster, ip_family=key.ip_family
    )


def _precheck_capability(pool: ClusterPool, key: ClusterKey, capability: str) -> str | None:
    """A skip reason when ``capability`` is certainly missing for ``key`` (no cluster is created)."""
    try:
        cls = provider_class(key.provider)
    except K8sStateError:
        return None  # reported when the cluster is asked for
    return cls.precheck_capability(
        capability, proxy_mode=key.proxy_mode, static=pool.static_capabilities(key), ip_family=key.ip_family
    )


def _needs(item: pytest.Item) -> list[str]:
    caps: list[str] = []
    for args in marker_args(item, "k8sstate_needs"):
        for arg in args:
            caps.extend([arg] if isinstance(arg, str) else list(arg))
    return list(dict.fromkeys(caps))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests whose ``k8sstate_needs`` are certainly missing *before* any fixture runs.

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
    """Applies ``k8sstate_needs`` (skip) and ``k8sstate(fresh=True)`` (reset) before the other fixtures."""
    node = request.node
    if not isinstance(node, pytest.Item):
        return
    needs = _needs(node)
    marker = node.get_closest_marker("k8sstate")
    fresh = bool(marker.kwargs.get("fresh", False)) if marker is not None else False
    shape = {k: v for k, v in marker.kwargs.items() if k in SHAPE_ARGS} if marker is not None else {}
    if not needs and not fresh and not shape:
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
    if cluster.provider == "existing":  # one cluster as it is: a marker asking for another shape skips
        mismatch = shape_mismatch(cluster, shape)
        if mismatch is not None:
            pytest.skip(mismatch)
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


def _marker_namespace(node: pytest.Item) -> str | None:
    for marker in node.iter_markers("k8sstate"):
        if "namespace" in marker.kwargs:
            value = marker.kwargs["namespace"]
            if not isinstance(value, str) or not value:
                raise pytest.fail.Exception(
                    f"{node.nodeid}: @pytest.mark.k8sstate: invalid namespace={value!r}; expected a "
                    "namespace name such as 'default'",
                    pytrace=False,
                )
            return value
    return None


@pytest.fixture
def k8sstate_namespace(
    request: pytest.FixtureRequest, k8s_cluster: Cluster, k8s_clusters: ClusterPool
) -> Iterator[str]:
    """The test's own namespace: created before the test, deleted after it (bounded wait).

    ``default`` (or the marker's ``namespace=``) when the test opts out with
    ``@pytest.mark.k8sstate(namespace="default")`` or the session with ``--k8sstate-test-namespace no``;
    a conftest may override this fixture to return a fixed name for a whole directory.
    """
    from pytest_k8sstate.k8s.namespaces import create_namespace, delete_namespace, namespace_name

    settings = request.config.stash[SETTINGS_KEY]
    fixed = _marker_namespace(request.node)
    if fixed is None and not settings.test_namespace:
        fixed = "default"
    try:
        api = k8s_clusters.api_client(k8s_cluster)
        if fixed is None:
            name = namespace_name(request.node.nodeid)
            create_namespace(api, name, test_id=request.node.nodeid)
    except K8sStateError as exc:
        raise pytest.fail.Exception(
            f"k8sstate: creating the test's namespace on cluster {k8s_cluster.name} failed: {exc}",
            pytrace=False,
        ) from None
    namespace = fixed if fixed is not None else name
    request.node.stash[NAMESPACE_KEY] = (api, namespace)
    yield namespace
    if fixed is None:
        problem = delete_namespace(api, namespace, timeout=NAMESPACE_DELETE_TIMEOUT)
        if problem is not None:
            warnings.warn(
                pytest.PytestWarning(f"k8sstate: cleanup after {request.node.nodeid}: {problem}"),
                stacklevel=1,
            )


NAMESPACE_DELETE_TIMEOUT = 60.0


@pytest.fixture
def cluster_state(request: pytest.FixtureRequest, k8s_cluster: Cluster) -> Iterator[ClusterState]:
    """Snapshot before the test; ``.diff()`` after; artifacts + report section on failure.

    When the test also has its own namespace (it uses ``k8s_api``), the namespace is created first, so
    it is not part of the diff, and ``cluster_state.namespace`` names it.
    """
    settings = request.config.stash[SETTINGS_KEY]
    namespace = None
    if "k8sstate_namespace" in request.fixturenames:
        namespace = request.getfixturevalue("k8sstate_namespace")
    try:
        state = ClusterState(
            k8s_cluster,
            ignore=settings.ignore,
            include_secrets=settings.include_secrets,
            namespace=namespace,
            # per-step logs (default on; K8SSTATE_LOGS=0 turns off), pod netns (K8SSTATE_POD_NETNS=1)
            logs=os.environ.get("K8SSTATE_LOGS", "1") not in ("0", "false", "no", ""),
            pods=os.environ.get("K8SSTATE_POD_NETNS", "0") not in ("0", "false", "no", ""),
        )
    except K8sStateError as exc:
        raise pytest.fail.Exception(
            f"k8sstate: snapshot of cluster {k8s_cluster.name} before the test failed: {exc}", pytrace=False
        ) from None
    request.node.stash[STATE_KEY] = state
    yield state
    with contextlib.suppress(KeyError):
        del request.node.stash[STATE_KEY]


@pytest.fixture
def k8s_api(
    request: pytest.FixtureRequest, k8s_cluster: Cluster, k8s_clusters: ClusterPool, k8sstate_namespace: str
) -> Iterator[K8sHelper]:
    """A :class:`K8sHelper` for the test's cluster whose default namespace is the test's own (manifests
    without a namespace are applied into it); objects it applied are deleted after the test."""
    try:
        dynamic = k8s_clusters.dynamic_client(k8s_cluster)
    except K8sStateError as exc:
        raise pytest.fail.Exception(f"k8sstate: cluster {k8s_cluster.name}: {exc}", pytrace=False) from None
    helper = K8sHelper(
        k8s_clusters.api_client(k8s_cluster),
        namespace=k8sstate_namespace,
        cluster=k8s_cluster,
        manifests_dir=request.config.rootpath / "manifests",
        dynamic=dynamic,
        image_loader=image_loader(k8s_cluster),
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
        on_failure(item, report, item.config.stash.get(SETTINGS_KEY, None))
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        found = next(iter(marker_args(item, "k8sstate_finding", kwargs=True)), None)
        if found is None:
            continue
        args, kwargs = found
        number = args[0] if args else kwargs.get("number", "?")
        title = args[1] if len(args) > 1 else kwargs.get("title", item.name)
        item.user_properties.append((FINDING_PROPERTY, [str(number), str(title)]))


@pytest.hookimpl(trylast=True)  # after the fixture manager parsed every plugin
def pytest_sessionstart(session: pytest.Session) -> None:
    """The deprecated ``k8s`` fixture, only when no other plugin (pytest-kubernetes) defines one."""
    plugin = legacy_fixture_plugin(session)
    if plugin is not None:
        session.config.pluginmanager.register(plugin, "k8sstate-legacy-fixtures")


def pytest_sessionfinish(session: pytest.Session) -> None:
    pool = session.config.stash.get(POOL_KEY, None)
    if pool is None:
        return
    for error in pool.close():
        pool.log(error)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # xdist worker: the controller prints the kept clusters
        workeroutput["k8sstate_kept"] = [list(k) for k in pool.kept]
        workeroutput["k8sstate_shared"] = [list(k) for k in pool.shared]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect the clusters a worker kept (``--k8sstate-keep-cluster``)."""
    pool = node.config.stash.get(POOL_KEY, None)
    output = getattr(node, "workeroutput", None) or {}
    if pool is not None:
        pool.kept.extend((str(provider), str(name)) for provider, name in output.get("k8sstate_kept") or [])
        pool.shared.extend(
            (str(provider), str(name)) for provider, name in output.get("k8sstate_shared") or []
        )


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: the name of the cluster the workers share (``--k8sstate-share-cluster``)."""
    import os

    node.workerinput["k8sstate_shared_name"] = f"pt{os.getpid() % 100000}sh"


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
                f"kept {provider} cluster {name}: reuse it with --k8sstate-reuse-cluster {hint}; "
                f"delete it with: k8sstate cluster delete --provider {provider} --name {name}"
            )
