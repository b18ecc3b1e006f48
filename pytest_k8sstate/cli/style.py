"""Colour for the CLI's diff text: on a terminal (``--color auto``, the default) or when asked.

Plain ANSI escapes, no dependency: ``+`` lines green, ``-`` red, ``~`` yellow, per-Service summaries
cyan, section headers bold. ``NO_COLOR`` (https://no-color.org) turns ``auto`` off; anything that is not a
terminal (a pipe, a file, CI logs) gets plain text.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

__all__ = ["COLOR_CHOICES", "colorize", "use_color"]

COLOR_CHOICES = ("auto", "always", "never")

_RESET = "\033[0m"
_STYLES = (
    ("+ ", "\033[32m"),
    ("- ", "\033[31m"),
    ("~ ", "\033[33m"),
    ("service ", "\033[36m"),
)
_BOLD = "\033[1m"


def use_color(choice: str, stream: TextIO | None = None) -> bool:
    """``always``/``never``, or ``auto``: a terminal and no ``NO_COLOR``."""
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    s = stream if stream is not None else sys.stdout
    try:
        return s.isatty()
    except (AttributeError, ValueError):
        return False


def colorize(text: str) -> str:
    """The diff text with ANSI colours per line (by its first non-blank characters)."""
    out = []
    for line in text.splitlines():
        body = line.lstrip(" ")
        style = next((code for prefix, code in _STYLES if body.startswith(prefix)), None)
        if style is None and line and not line.startswith(" "):
            style = _BOLD
        out.append(f"{style}{line}{_RESET}" if style else line)
    return "\n".join(out)
