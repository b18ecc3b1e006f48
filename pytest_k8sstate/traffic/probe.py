"""Real connections: N TCP connections to ``IP:PORT``, each asking the agnhost ``netexec`` that answers who
it is (``/hostname``) and which source address it saw (``/clientip``).

One connection carries both requests (HTTP/1.1 pipelining; the second says ``Connection: close``), so the
backend and the source it saw belong to the same conntrack entry. The client is busybox (``sh`` + ``nc``),
run where the connections start: a node (:data:`NODE_BUSYBOX`, copied in by :func:`install_busybox`), a pod
of the agnhost image (``/bin/busybox``, :class:`PodExec`) or, for tests, this machine. All connections of a
probe run in one shell loop there (one ``exec``); every connection has a timeout (busybox ``timeout``) and
the whole run a deadline. Refused, timed-out and otherwise failed connections are counted separately, from
``nc``'s message and exit code.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import ConfigError, K8sStateError
from pytest_k8sstate.node.exec import DEFAULT_TIMEOUT, LocalExec, NetnsExec, NodeExec

__all__ = [
    "HOST_BUSYBOX",
    "NODE_BUSYBOX",
    "OUTCOMES",
    "POD_BUSYBOX",
    "PROBE_SCRIPT",
    "Connection",
    "PodExec",
    "ProbeResult",
    "classify",
    "install_busybox",
    "parse_probe_output",
    "run_probe",
]

NODE_BUSYBOX = "/opt/k8sstate/bin/busybox"  # named busybox: it picks the applet from its own name
POD_BUSYBOX = "/bin/busybox"
HOST_BUSYBOX = "/bin/busybox"  # Debian's busybox-static
OUTCOMES = ("ok", "refused", "timeout", "unreachable", "error")
MAX_COUNT = 100_000
_MARK = "@@k8ss-probe"

# $0 = busybox, $1 = IP, $2 = port, $3 = count, $4 = timeout of each whole connection (s). Each connection: a
# marker line "@@k8ss-probe <i> <exit code>" then what nc printed (both HTTP responses, or its error).
# Not `nc -w`: busybox's nc then connects non-blocking and reports an ICMP port-unreachable (kube-proxy's
# REJECT) as "timed out"; a plain connect reports it as "Connection refused" (checked on kernel 6.18).
PROBE_SCRIPT = r"""bb=$0; ip=$1; port=$2; n=$3; t=$4; i=0
req='GET /hostname HTTP/1.1\r\nHost: k8ss\r\n\r\n'
req="${req}GET /clientip HTTP/1.1\r\nHost: k8ss\r\nConnection: close\r\n\r\n"
while [ "$i" -lt "$n" ]; do
  i=$((i+1))
  out=$(printf "$req" | "$bb" timeout "$t" "$bb" nc "$ip" "$port" 2>&1)
  rc=$?
  printf '\n@@k8ss-probe %s %s\n%s' "$i" "$rc" "$out"
done
printf '\n@@k8ss-probe end\n'
"""


@dataclass(frozen=True)
class Connection:
    """One probed connection: ``outcome`` is one of :data:`OUTCOMES`; for ``ok`` the backend's hostname and
    the ``IP:PORT`` it saw the connection come from; else ``detail`` (nc's message)."""

    index: int
    outcome: str
    backend: str | None = None
    client: str | None = None
    detail: str = ""

    @property
    def client_ip(self) -> str | None:
        return self.client.rpartition(":")[0].strip("[]") if self.client else None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "outcome": self.outcome,
            "backend": self.backend,
            "client": self.client,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Connection:
        return cls(
            int(d["index"]), str(d["outcome"]), d.get("backend"), d.get("client"), str(d.get("detail", ""))
        )


@dataclass(frozen=True)
class ProbeResult:
    """``count`` connections from ``source`` (``node/NAME``, ``pod/NS/NAME`` or ``local``) to ``target``."""

    target: str
    source: str
    connections: tuple[Connection, ...]
    seconds: float
    source_ip: str | None = None
    backend_ips: Mapping[str, str] = field(default_factory=dict)  # hostname -> pod IP, when looked up

    def counts(self) -> dict[str, int]:
        """Connections per backend hostname (``ok``) or per failure outcome."""
        return dict(
            Counter(c.backend if c.outcome == "ok" and c.backend else c.outcome for c in self.connections)
        )

    def outcomes(self) -> dict[str, int]:
        return dict(Counter(c.outcome for c in self.connections))

    def clients_by_backend(self) -> dict[str, set[str]]:
        """Source IPs each backend saw."""
        seen: dict[str, set[str]] = {}
        for c in self.connections:
            if c.outcome == "ok" and c.backend and c.client_ip:
                seen.setdefault(c.backend, set()).add(c.client_ip)
        return seen

    @property
    def rate(self) -> float:
        """Connections per second (the whole run, including the exec)."""
        return len(self.connections) / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "source": self.source,
            "source_ip": self.source_ip,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "counts": self.counts(),
            "backend_ips": dict(self.backend_ips),
            "connections": [c.to_json() for c in self.connections],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProbeResult:
        return cls(
            target=str(d["target"]),
            source=str(d["source"]),
            connections=tuple(Connection.from_json(c) for c in d["connections"]),
            seconds=float(d["seconds"]),
            source_ip=d.get("source_ip"),
            backend_ips=dict(d.get("backend_ips") or {}),
        )


def classify(returncode: int, output: str) -> Connection:
    """One connection's raw nc output → :class:`Connection` (index 0; the caller sets it)."""
    bodies = _http_bodies(output)
    if len(bodies) >= 2 and bodies[0][0] == 200 and bodies[1][0] == 200:
        return Connection(0, "ok", bodies[0][1].strip(), bodies[1][1].strip())
    low = output.lower()
    detail = output.strip().splitlines()[-1][:200] if output.strip() else f"nc exited {returncode}, no output"
    if "refused" in low:
        return Connection(0, "refused", detail=detail)
    if "timed out" in low or "timeout" in low:
        return Connection(0, "timeout", detail=detail)
    if "unreachable" in low or "no route" in low:
        return Connection(0, "unreachable", detail=detail)
    if returncode in (124, 143):  # busybox timeout killed nc: no connection or no complete answer in time
        return Connection(0, "timeout", detail="no connection or no complete answer within the timeout")
    if bodies:
        detail = f"HTTP {', '.join(str(code) for code, _ in bodies)} (expected 200 from agnhost netexec)"
    return Connection(0, "error", detail=detail)


_STATUS = re.compile(r"HTTP/1\.[01] (\d{3})[^\r\n]*\r?\n")


def _http_bodies(text: str) -> list[tuple[int, str]]:
    """(status, body) of each HTTP response in ``text`` (bodies delimited by Content-Length)."""
    out: list[tuple[int, str]] = []
    pos = 0
    while True:
        m = _STATUS.search(text, pos)
        if m is None:
            return out
        head_end = text.find("\r\n\r\n", m.end() - 2)
        if head_end < 0:
            return out
        headers = text[m.end() : head_end]
        cl = re.search(r"(?im)^content-length:\s*(\d+)", headers)
        start = head_end + 4
        end = start + int(cl[1]) if cl else len(text)
        out.append((int(m[1]), text[start:end]))
        pos = end


def parse_probe_output(text: str, count: int, *, where: str = "probe") -> tuple[Connection, ...]:
    """The probe script's output → one :class:`Connection` per connection, in order.

    Raises :class:`K8sStateError` naming ``where`` when the output is cut short (not ``count`` markers and
    the end marker), e.g. the exec was killed.
    """
    parts = text.split(f"\n{_MARK} ")
    conns: list[Connection] = []
    ended = False
    for part in parts[1:]:
        header, _, body = part.partition("\n")
        fields = header.split()
        if fields == ["end"]:
            ended = True
            break
        if len(fields) != 2 or not fields[0].isdigit() or not fields[1].lstrip("-").isdigit():
            raise K8sStateError(f"{where}: unexpected probe output line {header!r}")
        c = classify(int(fields[1]), body)
        conns.append(Connection(int(fields[0]), c.outcome, c.backend, c.client, c.detail))
    if not ended or len(conns) != count:
        tail = text[-300:].strip()
        raise K8sStateError(
            f"{where}: probe output has {len(conns)} of {count} connections"
            f"{'' if ended else ' and no end marker'}; last output: {tail!r}"
        )
    return tuple(conns)


def _check_args(ip: str, port: int, count: int, timeout: float) -> None:
    if not re.fullmatch(r"[0-9a-fA-F.:]+", ip):
        raise ConfigError(
            f"probe target {ip!r} is not an IP address; give IP:PORT or NAMESPACE/SERVICE[:PORT]"
        )
    if not 0 < port < 65536:
        raise ConfigError(f"probe target port {port} is out of range 1-65535")
    if not 0 < count <= MAX_COUNT:
        raise ConfigError(f"--count {count}: expected 1..{MAX_COUNT}")
    if not 1 <= timeout <= 60:
        raise ConfigError(
            f"probe timeout {timeout:g}s: expected 1..60 s (busybox timeout takes whole seconds)"
        )


def run_probe(
    exec: NodeExec,
    ip: str,
    port: int,
    count: int,
    *,
    busybox: str,
    source: str,
    timeout: float = 2.0,
    source_ip: str | None = None,
) -> ProbeResult:
    """Run ``count`` connections to ``ip:port`` through ``exec`` (a node, a pod, this machine) with the
    busybox at ``busybox`` there: ``timeout`` bounds each whole connection (connect included) and
    ``count × (timeout + 1) + 30`` s the whole run."""
    _check_args(ip, port, count, timeout)
    t = str(int(timeout))
    deadline = count * (int(timeout) + 1) + 30.0
    t0 = time.monotonic()
    res = exec.run(
        [busybox, "sh", "-c", PROBE_SCRIPT, busybox, ip, str(port), str(count), t],
        timeout=deadline,
        check=False,
    )
    seconds = time.monotonic() - t0
    where = f"probe from {source} to {ip}:{port}"
    if _MARK not in res.text:
        err = res.stderr.decode(errors="replace").strip()
        raise K8sStateError(
            f"{where}: the probe did not run (exit {res.returncode}): {err[-300:] or res.text[-300:]}"
        )
    conns = parse_probe_output(res.text, count, where=where)
    target = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return ProbeResult(target, source, conns, seconds, source_ip)


def install_busybox(exec: NodeExec, local: Path = Path(HOST_BUSYBOX), path: str = NODE_BUSYBOX) -> str:
    """Copy this machine's static busybox to ``path`` on the node unless a same-sized one is there.

    A node that shares this machine's filesystem (``local``'s network namespaces) runs ``local`` itself:
    nothing is written outside the project's own directories."""
    if type(exec) is LocalExec or isinstance(exec, NetnsExec):
        if not local.is_file():
            raise ConfigError(
                f"{local}: not found; the probe client is Debian's static busybox: "
                "apt-get install busybox-static"
            )
        return str(local)
    try:
        data = local.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{local}: {exc.strerror}; the probe client is Debian's static busybox: "
            "apt-get install busybox-static"
        ) from None
    have = exec.run(
        ["sh", "-c", 'wc -c < "$0" 2>/dev/null || echo 0', path], timeout=DEFAULT_TIMEOUT, check=False
    )
    if have.text.strip() == str(len(data)):
        return path
    script = 'mkdir -p "${0%/*}" && cat > "$0.tmp" && chmod 755 "$0.tmp" && mv "$0.tmp" "$0"'
    exec.run(["sh", "-c", script, path], input=data, timeout=60)
    return path


class PodExec(LocalExec):
    """``kubectl exec -i`` into a pod (the :class:`~pytest_k8sstate.node.exec.NodeExec` protocol)."""

    def __init__(
        self,
        namespace: str,
        pod: str,
        *,
        kubeconfig: Path | str,
        kubectl: str = "kubectl",
        container: str = "",
    ) -> None:
        super().__init__(f"pod/{namespace}/{pod}")
        self.namespace = namespace
        self.pod = pod
        self.kubeconfig = str(kubeconfig)
        self.kubectl = kubectl
        self.container = container

    @property
    def where(self) -> str:
        return self.node

    def command(self, argv: Sequence[str]) -> list[str]:
        cont = ["-c", self.container] if self.container else []
        kube = [self.kubectl, "--kubeconfig", self.kubeconfig, "-n", self.namespace]
        return [*kube, "exec", "-i", self.pod, *cont, "--", *argv]

    def which(self, program: str) -> bool:
        return self.run(["sh", "-c", 'command -v "$0"', program], check=False, timeout=10).returncode == 0
