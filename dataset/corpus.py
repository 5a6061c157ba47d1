"""A held-out English and Chinese text corpus: the prose of Debian's manual pages.

Used to measure what trimming the text branch's vocabulary changes (``ticor export`` records it
in the bundle): never to choose pieces, never for training. Sources, pinned and sha256-checked
like the dataset sources and fetched by ``ticor data fetch``:

* English: ``manpages`` 6.03-2 (Linux man-pages: sections 2-7, the kernel and C library
  interfaces and overviews), licences per page (GPL, BSD, MIT and verbatim-copying terms).
* Chinese: ``manpages-zh`` 1.6.4.0-1, the Simplified Chinese translations (``zh_CN``) of
  common commands and interfaces, GFDL-1.2.

The roff source is reduced to its running text (request lines dropped, font and character
escapes removed), paragraphs are joined and split into sentences; sentences of 12-300
characters are kept (Chinese ones with at least four Han characters), de-duplicated, in a
fixed order. Nothing of it is shipped in a bundle.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from ticor.dataset.sources import Source, extract

MANPAGES_EN = Source(
    name="manpages-en",
    registry="debian",
    package="manpages",
    version="6.03-2",
    filename="manpages_6.03-2_all.deb",
    sha256="efa1ba4cd19ad7baeae959c9209a7eb74be2ebb858bcabb412597bfc9f588c91",
    license="per page: GPL-2+, BSD, MIT and verbatim-copying terms (usr/share/doc/manpages/copyright)",
    keep=("usr/share/man/", "usr/share/doc/manpages/copyright"),
    license_files=("usr/share/doc/manpages/copyright",),
)
MANPAGES_ZH = Source(
    name="manpages-zh",
    registry="debian",
    package="manpages-zh",
    version="1.6.4.0-1",
    filename="manpages-zh_1.6.4.0-1_all.deb",
    sha256="81bae29495f6445db290e3f329f1203eb19b651c2a7ea165b74ebdc853a32ac1",
    license="GFDL-1.2 (usr/share/doc/manpages-zh/copyright)",
    keep=("usr/share/man/zh_CN/", "usr/share/doc/manpages-zh/copyright"),
    license_files=("usr/share/doc/manpages-zh/copyright",),
)
CORPORA = {"en": MANPAGES_EN, "zh": MANPAGES_ZH}
MIN_CHARS, MAX_CHARS = 12, 300

_ESCAPES = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\s[+-]?\d+|\\\(..|\\\[[^\]]*\]|\\\*(\(..|\[[^\]]*\]|.)|\\[&e|^%:]")
_FONT_REQUESTS = {".B", ".I", ".BR", ".IR", ".RB", ".RI", ".BI", ".IB", ".SM", ".SB"}
_SENTENCE_END = re.compile(r"(?<=[。！？])|(?<=[.!?])\s+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def roff_text(source: str) -> list[str]:
    """The running-text lines of a roff page (empty strings between paragraphs)."""
    lines = []
    for line in source.splitlines():
        if line.startswith(("'", '.\\"')):
            continue
        if line.startswith("."):
            parts = line.split(None, 1)
            if parts[0] not in _FONT_REQUESTS or len(parts) < 2:
                lines.append("")  # any other request breaks the paragraph
                continue
            line = parts[1].replace('"', "")
        line = _ESCAPES.sub("", line.replace("\\-", "-"))
        lines.append(line.replace("\\", "").strip())
    return lines


def sentences(page: str, lang: str) -> list[str]:
    """Sentences of one page, joined across its lines (without spaces for Chinese)."""
    out: list[str] = []
    glue = "" if lang == "zh" else " "
    para: list[str] = []
    for line in [*roff_text(page), ""]:
        if line:
            para.append(line)
            continue
        if para:
            out += [s.strip() for s in _SENTENCE_END.split(glue.join(para)) if s and s.strip()]
            para = []
    return [s for s in out if MIN_CHARS <= len(s) <= MAX_CHARS and (lang != "zh" or len(_HAN.findall(s)) >= 4)]


def heldout_texts(cache: Path | None = None) -> dict[str, list[str]]:
    """``{"en": [...], "zh": [...]}``: every usable sentence of the pinned pages, once, in page order."""
    texts: dict[str, list[str]] = {}
    for lang, source in CORPORA.items():
        root = extract(source, cache) / "usr" / "share" / "man"
        seen: dict[str, None] = {}
        for page in sorted(root.rglob("*.gz")):
            for s in sentences(gzip.decompress(page.read_bytes()).decode("utf-8", "replace"), lang):
                seen.setdefault(s)
        texts[lang] = list(seen)
    return texts
