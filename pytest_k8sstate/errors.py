"""One base exception for everything the plugin raises on purpose.

Every message names the input (file, node, key, binary), where in it (line, field) and the fix.
The CLI and the pytest plugin print ``str(exc)`` for these and never a traceback.
"""

from __future__ import annotations

MAX_ERROR_LINE = 300
"""ParseError/TraceError messages are cut to this many characters per line (the middle is elided):
a 10 MB chain name must not make a 10 MB error line."""


def bound_message(msg: str, limit: int = MAX_ERROR_LINE) -> str:
    """``msg`` with every line longer than ``limit`` cut in the middle (head and tail kept)."""
    if len(msg) <= limit and "\n" not in msg:
        return msg
    out = []
    for line in msg.split("\n"):
        if len(line) > limit:
            keep = limit - 40  # room for the marker below (a length of up to 30 digits)
            cut = f" …[{len(line) - keep} chars]… "
            head = keep * 2 // 3
            line = line[:head] + cut + line[len(line) - (keep - head) :]
        out.append(line)
    return "\n".join(out)


class K8sStateError(Exception):
    """Base class of every error pytest-k8sstate raises deliberately."""


class ParseError(K8sStateError):
    """Malformed input: names the source, the 1-based line (when known) and what was expected."""

    def __init__(self, source: str, line: int | None, expected: str, got: str | None = None) -> None:
        self.source = source
        self.line = line
        self.expected = expected
        self.got = got
        where = f"{source}:{line}" if line is not None else source
        msg = f"{where}: expected {expected}"
        if got is not None:
            shown = got if len(got) <= 80 else got[:77] + "..."
            msg += f", got {shown!r}"
        super().__init__(bound_message(msg))


class CommandError(K8sStateError):
    """A command run on a node (or locally) failed, timed out or is missing."""


class CommandNotFound(CommandError):
    """The command's program does not exist where it was to run."""


class CommandTimeout(CommandError):
    """The command did not finish within its timeout (its process group was killed)."""


class CaptureError(K8sStateError):
    """Capturing state (etcd or a node) failed."""


class TraceError(K8sStateError):
    """The packet tracer reached a rule it cannot evaluate."""

    def __init__(self, msg: str) -> None:
        super().__init__(bound_message(msg))


class BinaryError(K8sStateError):
    """A pinned binary is missing and could not be downloaded or built."""


class ProviderError(K8sStateError):
    """Cluster lifecycle failed (create, delete, readiness, node access)."""


class ConfigError(K8sStateError):
    """A bad option, ini value or environment variable."""
