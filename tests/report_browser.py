"""Headless Chromium for the HTML report's tests: the rendered DOM (``--dump-dom``) parsed into elements,
screenshots, and a PNG check that a screenshot is not blank (decoded here: zlib + PNG filters)."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = os.environ.get("K8SSTATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT = 120.0
VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)


def chromium_missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return (
            f"{CHROMIUM} missing: apt-get install -y --no-install-recommends chromium (scripts/setup.sh does)"
        )
    return None


def run_chromium(args: list[str], profile: Path) -> bytes:
    """Chromium headless with its own profile directory; killed (its whole process group) on timeout."""
    profile.mkdir(parents=True, exist_ok=True)
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        *args,
    ]
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"chromium did not finish within {TIMEOUT:g}s: {' '.join(args)}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
    return out


@dataclass
class El:
    tag: str
    attrs: dict[str, str]
    parent: El | None = None
    children: list[El] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.texts) + "".join(c.text for c in self.children)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[El]:
        out: list[El] = []
        for c in self.children:
            if (tag is None or c.tag == tag) and (cls is None or cls in c.classes):
                out.append(c)
            out.extend(c.find_all(tag, cls))
        return out


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = El("#document", {})
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = El(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(el)
        if tag not in VOID:
            self.cur = el

    def handle_endtag(self, tag: str) -> None:
        node: El | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.texts.append(data)


def dump_dom(page: Path, profile: Path) -> El:
    """The DOM Chromium built from ``page``, as a tree of :class:`El`."""
    out = run_chromium(["--dump-dom", page.resolve().as_uri()], profile)
    p = _Parser()
    p.feed(out.decode("utf-8"))
    p.close()
    return p.root


def screenshot(page: Path, png: Path, profile: Path, size: tuple[int, int] = (1400, 1100)) -> Path:
    run_chromium(
        [
            f"--screenshot={png}",
            f"--window-size={size[0]},{size[1]}",
            "--hide-scrollbars",
            page.resolve().as_uri(),
        ],
        profile,
    )
    return png


def png_pixels(png: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA non-interlaced PNG."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    pos, idat = 8, b""
    width = height = 0
    bpp = 4
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (8, 0), (depth, interlace)
            assert color in (2, 6), color
            bpp = 4 if color == 6 else 3
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def ink_fraction(png: Path, step: int = 4) -> tuple[int, int, float, int]:
    """(width, height, fraction of sampled pixels differing from the top-left one, distinct colours)."""
    width, height, rows = png_pixels(png)
    bpp = len(rows[0]) // width
    bg = rows[0][:3]
    seen: set[bytes] = set()
    ink = total = 0
    for y in range(0, height, step):
        row = rows[y]
        for x in range(0, width, step):
            px = row[x * bpp : x * bpp + 3]
            seen.add(px)
            total += 1
            ink += px != bg
    return width, height, ink / max(total, 1), len(seen)
