"""Read the extracted sources into concepts: the things that have both pictures and texts.

A concept is one emoji (all its styles: Noto, OpenMoji, Fluent flat and colour), one Tux Paint
stamp, one Openclipart drawing, or one photographed thing of GCompris
(``ticor.dataset.gcompris``). Each carries its texts (English and Chinese), its render
jobs, a seed group key (what must never be split apart), hard-negative keys (siblings that look
alike) and noun keys (to merge the same thing across sources). Nothing here reads pixels.
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ticor.dataset.render import RenderJob
from ticor.evaluation import norm_text

CLDR_DIR = "usr/share/unicode/cldr/common"
NOTO_FONT = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
TUX_DIR = "usr/share/tuxpaint/stamps"
OCA_DIR = "usr/share/openclipart/svg"
OPENMOJI_CSV = "package/data/openmoji.csv"
OPENMOJI_SVG = "package/color/svg"
FLUENT_STYLES = {"fluent-flat": "package/icons/flat", "fluent-color": "package/icons/modern"}

LICENSES = {
    "noto": "OFL-1.1",
    "openmoji": "CC-BY-SA-4.0",
    "fluent-flat": "MIT",
    "fluent-color": "MIT",
    "tux": "GPL-2.0-or-later",
    "openclipart": "public-domain",
    "gcompris": "per picture: public-domain, CC0-1.0, CC-BY-2.0/3.0 or CC-BY-SA-4.0 (see ATTRIBUTION.md)",
}
# Which package each image source comes from (for the manifest and attribution).
IMAGE_SOURCE_PACKAGE = {
    "noto": "noto-emoji",
    "openmoji": "openmoji",
    "fluent-flat": "fluent-emoji",
    "fluent-color": "fluent-emoji",
    "tux": "tuxpaint-stamps",
    "openclipart": "openclipart",
    "gcompris": "gcompris",
}

SKIN_TONES = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}
IGNORED_CPS = {0xFE0F, 0xFE0E, 0x200D, 0x2640, 0x2642, 0x20E3} | SKIN_TONES
# People whose man/woman/person (and age) variants belong together.
PERSON_CPS = {0x1F9D1, 0x1F468, 0x1F469, 0x1F466, 0x1F467, 0x1F9D2, 0x1F474, 0x1F475, 0x1F9D3,
              0x1F46B, 0x1F46C, 0x1F46D}
OCA_MAX_TITLE_USES = 3
ARTICLES = {"a", "an", "the"}
OCA_PUBLIC_DOMAIN = ("publicdomain", "PublicDomain", "/zero/")


@dataclass(frozen=True)
class Text:
    lang: str  # "en" or "zh"
    kind: str  # "name", "keywords", "sentence", "title"
    text: str


@dataclass
class Concept:
    key: str  # stable, package-internal identity (never written next to an image path)
    family: str  # "emoji", "tux", "openclipart"
    seed: str  # group seed: concepts with the same seed always share a split
    hard_keys: tuple[str, ...]  # look-alike siblings for hard negatives
    nouns: tuple[str, ...]  # normalised names, for merging across sources
    head: str  # head noun, merged with concepts whose whole name it is
    tone_base: str = ""  # emoji without skin tones: a toneless text also fits its toned pictures
    toned: bool = False
    texts: list[Text] = field(default_factory=list)
    jobs: list[tuple[str, RenderJob]] = field(default_factory=list)  # (image source, job)


@dataclass(frozen=True)
class Credit:
    """Who made a picture, under which licence, and where the original is."""

    author: str
    license: str  # SPDX-like; empty when the recorded licence is not one the dataset takes
    source: str  # a URL, may be empty


@dataclass
class Skipped:
    source: str
    ref: str
    reason: str


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def noun_key(text: str) -> str:
    """A name reduced for cross-source matching: no articles, singular words."""
    words = [w for w in norm_text(text).split() if w not in ARTICLES]
    return " ".join(_singular(w) for w in words)


def head_noun(text: str) -> str:
    key = noun_key(text)
    words = key.split()
    return words[-1] if 0 < len(words) <= 3 else ""


# ---------------------------------------------------------------- emoji


def emoji_root(emoji: str) -> str:
    """Group seed for an emoji: its first meaningful code point, people variants folded."""
    cps = [ord(c) for c in emoji if ord(c) not in IGNORED_CPS]
    if not cps:
        return "emoji:" + "-".join(f"{ord(c):X}" for c in emoji)
    if 0x1F1E6 <= cps[0] <= 0x1F1FF or cps[0] == 0x1F3F4:  # flags: the whole sequence
        return "emoji:" + "-".join(f"{c:X}" for c in cps)
    rest = [c for c in cps if c not in PERSON_CPS]
    if cps[0] in PERSON_CPS:
        return "emoji:" + (f"{rest[0]:X}" if rest else "person")
    return f"emoji:{cps[0]:X}"


def _cldr(root: Path, lang: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    names: dict[str, str] = {}
    keywords: dict[str, list[str]] = {}
    for sub in ("annotations", "annotationsDerived"):
        tree = ET.parse(root / CLDR_DIR / sub / f"{lang}.xml")
        for node in tree.getroot().iter("annotation"):
            cp, text = node.get("cp"), (node.text or "").strip()
            if not cp or not text:
                continue
            if node.get("type") == "tts":
                names[cp] = text
            else:
                keywords[cp] = [k.strip() for k in text.split("|") if k.strip()]
    return names, keywords


def _fluent_slug(name: str) -> str:
    name = name.lower()
    for ch in "’'“”":
        name = name.replace(ch, "")
    name = re.sub(r"\bskin tone\b", "", name)
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def emoji_concepts(roots: dict[str, Path], skipped: list[Skipped]) -> list[Concept]:
    cldr = roots["cldr"]
    en_names, en_kw = _cldr(cldr, "en")
    zh_names, zh_kw = _cldr(cldr, "zh")
    font = str(roots["noto-emoji"] / NOTO_FONT)
    openmoji = roots["openmoji"]
    fluent_files = {
        style: {p.stem.removesuffix("-default"): p for p in sorted((roots["fluent-emoji"] / d).glob("*.svg"))}
        for style, d in FLUENT_STYLES.items()
    }
    concepts = []
    with (openmoji / OPENMOJI_CSV).open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["group"].startswith("extras") or row["group"] == "component":
            continue
        emoji, hexcode = row["emoji"], row["hexcode"]
        cldr_key = emoji.replace("\ufe0f", "")
        name = en_names.get(cldr_key)
        if name is None:
            skipped.append(Skipped("cldr", hexcode, "no CLDR English name (newer emoji)"))
            continue
        texts = [Text("en", "name", name)]
        if en_kw.get(cldr_key):
            texts.append(Text("en", "keywords", ", ".join(en_kw[cldr_key])))
        if zh_names.get(cldr_key):
            texts.append(Text("zh", "name", zh_names[cldr_key]))
        if zh_kw.get(cldr_key):
            texts.append(Text("zh", "keywords", "、".join(zh_kw[cldr_key])))
        jobs = [("noto", RenderJob(f"noto:{hexcode}", "glyph", emoji, font))]
        svg = openmoji / OPENMOJI_SVG / f"{hexcode}.svg"
        if svg.exists():
            jobs.append(("openmoji", RenderJob(f"openmoji:{hexcode}", "svg", str(svg))))
        slug = _fluent_slug(name)
        for style, files in fluent_files.items():
            if slug in files:
                jobs.append((style, RenderJob(f"{style}:{files[slug].name}", "svg", str(files[slug]))))
        base_name = name.split(":")[0]
        concepts.append(
            Concept(
                key=f"emoji:{hexcode}",
                family="emoji",
                seed=emoji_root(emoji),
                hard_keys=(f"emoji-subgroup:{row['subgroups']}",),
                nouns=(noun_key(base_name),),
                head=head_noun(base_name),
                texts=texts,
                jobs=jobs,
                tone_base="".join(c for c in emoji if ord(c) not in SKIN_TONES | {0xFE0F}),
                toned=any(ord(c) in SKIN_TONES for c in emoji),
            )
        )
    return concepts


# ---------------------------------------------------------------- Tux Paint


def _tux_texts(path: Path) -> list[Text]:
    raw = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    texts = []
    if raw and raw[0].strip():
        texts.append(Text("en", "sentence", raw[0].strip()))
    for line in raw[1:]:
        if line.startswith("zh_CN.utf8="):
            value = line.split("=", 1)[1].strip()
            if value:
                texts.append(Text("zh", "sentence", value))
    return texts


def tux_concepts(roots: dict[str, Path], skipped: list[Skipped]) -> list[Concept]:
    base = roots["tuxpaint-stamps"] / TUX_DIR
    concepts = []
    for txt in sorted(base.rglob("*.txt")):
        rel = txt.relative_to(base).with_suffix("")
        png, svg = txt.with_suffix(".png"), txt.with_suffix(".svg")
        if png.exists():
            job = RenderJob(f"tux:{rel}.png", "png", str(png))
        elif svg.exists():
            job = RenderJob(f"tux:{rel}.svg", "svg", str(svg))
        else:
            skipped.append(Skipped("tux", str(rel), "description without a picture"))
            continue
        texts = _tux_texts(txt)
        if not texts or texts[0].lang != "en":
            skipped.append(Skipped("tux", str(rel), "no English description"))
            continue
        english = texts[0].text
        concepts.append(
            Concept(
                key=f"tux:{rel}",
                family="tux",
                seed="text:" + norm_text(english),
                hard_keys=(f"tux-folder:{rel.parent}",),
                nouns=(noun_key(english),),
                head=head_noun(english),
                texts=texts,
                jobs=[("tux", job)],
            )
        )
    return concepts


# ---------------------------------------------------------------- Openclipart

_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "cc": "http://web.resource.org/cc/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "svg": "http://www.w3.org/2000/svg",
}
_CC_NEW = "http://creativecommons.org/ns#"


def _oca_meta(path: Path) -> tuple[str, str, list[str]]:
    """(title, license resource, texts drawn in the picture) of an Openclipart SVG."""
    root = ET.parse(path).getroot()
    title, license_ref = "", ""
    for ns in (_NS["cc"], _CC_NEW):
        work = root.find(f".//{{{ns}}}Work")
        if work is None:
            continue
        node = work.find(f"{{{_NS['dc']}}}title")
        if node is not None and node.text:
            title = node.text.strip()
        lic = work.find(f"{{{ns}}}license")
        if lic is not None:
            license_ref = lic.get(f"{{{_NS['rdf']}}}resource", "")
        break
    drawn = ["".join(t.itertext()) for t in root.iter(f"{{{_NS['svg']}}}text")]
    return title, license_ref, drawn


def openclipart_concepts(roots: dict[str, Path], skipped: list[Skipped]) -> list[Concept]:
    base = roots["openclipart"] / OCA_DIR
    found = []
    for svg in sorted(base.rglob("*.svg")):
        rel = str(svg.relative_to(base))
        try:
            title, license_ref, drawn = _oca_meta(svg)
        except (ET.ParseError, OSError, UnicodeDecodeError):
            skipped.append(Skipped("openclipart", rel, "unparseable svg"))
            continue
        if not any(mark in license_ref for mark in OCA_PUBLIC_DOMAIN):
            skipped.append(Skipped("openclipart", rel, "not public domain"))
            continue
        found.append((svg, rel, title, drawn))
    uses = Counter(norm_text(title) for _, _, title, _ in found)
    concepts = []
    for svg, rel, title, drawn in found:
        key = norm_text(title)
        if len(re.findall(r"[^\W\d_]", key)) < 3:
            skipped.append(Skipped("openclipart", rel, "no usable title"))
            continue
        if uses[key] > OCA_MAX_TITLE_USES:
            skipped.append(Skipped("openclipart", rel, "boilerplate title"))
            continue
        if any(key in norm_text(t) for t in drawn if t.strip()):
            skipped.append(Skipped("openclipart", rel, "title drawn in the picture"))
            continue
        folder = str(Path(rel).parent)
        concepts.append(
            Concept(
                key=f"openclipart:{rel}",
                family="openclipart",
                seed="text:" + key,
                hard_keys=(f"openclipart-folder:{folder}",),
                nouns=(noun_key(title),),
                head=head_noun(title),
                texts=[Text("en", "title", title)],
                jobs=[("openclipart", RenderJob(f"openclipart:{rel}", "svg", str(svg)))],
            )
        )
    return concepts


def all_concepts(roots: dict[str, Path]) -> tuple[list[Concept], list[Skipped], dict[str, Credit]]:
    """Every concept, what was left out (with the reason), and the credit of each photo (by render-job key)."""
    from ticor.dataset.gcompris import photo_concepts

    skipped: list[Skipped] = []
    photos, credits = photo_concepts(roots, skipped)
    concepts = (
        emoji_concepts(roots, skipped)
        + tux_concepts(roots, skipped)
        + openclipart_concepts(roots, skipped)
        + photos
    )
    return concepts, skipped, credits
