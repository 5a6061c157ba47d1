"""``ticor data icons``: the worked example of ``ticor adapt``, a domain the training data never saw.

Material Design Icons (npm ``@mdi/svg``, pinned in :data:`ticor.dataset.sources.ICON_SOURCE`):
about 7,000 named single-colour SVG icons, grouped by ``baseIconId`` into about 2,200 *concepts*
(``account-network`` and its ``-outline``/``-off`` variants are one concept). A concept's
captions are its base icon's name and aliases in words (``account network``, ``user network``);
its pictures are the base icon and up to ``VARIANTS - 1`` variants.

Concepts are split by a hash of their id into an adaptation part and a test part, so the test
part's concepts are never seen in adaptation. Each part is a pair file like a user's:

- ``adapt.csv`` / ``test.csv``: ``text, image, label, group, negative, lang``; for each picture
  one matching caption (name or alias, in turn) and one non-matching caption, alternately
  ``random`` (any other concept of the part) and ``hard`` (a concept sharing a category tag),
  never one whose caption shares a word with the picture's own (``arrow up`` is not a wrong
  caption of ``arrow up bold``);
- ``adapt-N.csv`` (N in :data:`CURVE`): the first whole concepts of ``adapt.csv`` in a fixed
  order, at most N pairs, each file holding the smaller ones (the learning curve);
- ``captions.csv``: the adaptation part's matching rows only, without ``label`` (a list of
  captioned pictures: the form ``ticor adapt`` takes without labels).

Pictures are rendered once to ``pictures/NAME.png`` (``SIZE`` px, the dataset's drawing path).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ticor._console import Progress
from ticor.dataset.render import RenderJob, render
from ticor.dataset.sources import ICON_SOURCE, extract

SIZE = 160
CURVE = (100, 300, 1000, 2000)  # adapt-N.csv: the first concepts of adapt.csv, at most N pairs (nested)
VARIANTS = 2  # pictures per concept (the base icon first)
TEST_SHARE = 0.35  # of the concepts
COLUMNS = ("text", "image", "label", "group", "negative", "lang")
EXAMPLE_VERSION = 2


@dataclass(frozen=True)
class Concept:
    id: str
    captions: tuple[str, ...]
    icons: tuple[str, ...]  # icon names (svg/NAME.svg), base first
    tags: tuple[str, ...]


def words(name: str) -> str:
    return name.replace("-", " ").strip()


def concepts(meta: list[dict]) -> list[Concept]:
    """One concept per base icon that is not deprecated."""
    live = [m for m in meta if not m.get("deprecated")]
    by_id = {m["id"]: m for m in live}

    def root(icon_id: str) -> str:  # a base icon may itself be a variant of another (19 of them): follow it
        seen = set()
        while icon_id in by_id and by_id[icon_id]["baseIconId"] != icon_id and icon_id not in seen:
            seen.add(icon_id)
            icon_id = by_id[icon_id]["baseIconId"]
        return icon_id

    members: dict[str, list[str]] = defaultdict(list)
    for m in sorted(live, key=lambda m: m["name"]):
        members[root(m["id"])].append(m["name"])
    out = []
    for base_id, names in sorted(members.items()):
        base = by_id.get(base_id)
        if base is None:
            continue
        others = [n for n in names if n != base["name"]]
        caps = tuple(dict.fromkeys([words(base["name"]), *(words(a) for a in base.get("aliases", []))]))
        out.append(Concept(base["name"], caps, (base["name"], *others[: VARIANTS - 1]), tuple(base.get("tags", []))))
    return out


def part_of(concept: Concept) -> str:
    h = int(hashlib.sha256(concept.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < TEST_SHARE else "adapt"


def pair_rows(part: list[Concept], seed: int) -> list[dict[str, str]]:
    """For each picture: one matching caption and one non-matching one (random or hard, in turn)."""
    rng = random.Random(seed)
    by_tag: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(part):
        for t in c.tags:
            by_tag[t].append(i)
    vocab = [{w for cap in c.captions for w in cap.split()} for c in part]

    def unrelated(i: int, j: int) -> bool:  # no word in common: ``arrow up`` is no negative of ``arrow up bold``
        return j != i and not vocab[i] & vocab[j]

    rows = []
    turn = 0
    for i, c in enumerate(part):
        for k, icon in enumerate(c.icons):
            image = f"pictures/{icon}.png"
            rows.append({"text": c.captions[k % len(c.captions)], "image": image, "label": "1", "group": c.id,
                         "negative": "", "lang": "en"})
            same_tag = sorted({j for t in c.tags for j in by_tag[t] if unrelated(i, j)})
            kind = "hard" if turn % 2 and same_tag else "random"
            turn += 1
            if kind == "hard":
                j = rng.choice(same_tag)
            else:
                j = rng.randrange(len(part))
                while not unrelated(i, j):
                    j = rng.randrange(len(part))
            other = part[j]
            rows.append({"text": rng.choice(other.captions), "image": image, "label": "0", "group": c.id,
                         "negative": kind, "lang": "en"})
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def build_icons(out: Path, cache: Path | None = None, seed: int = 0, quiet: bool = False) -> dict:
    """Build the example into ``out`` (pictures, three pair files, ``manifest.json``); returns the manifest."""
    root = extract(ICON_SOURCE, cache)
    pkg = root / "package"
    all_concepts = concepts(json.loads((pkg / "meta.json").read_text(encoding="utf-8")))
    out.mkdir(parents=True, exist_ok=True)
    pictures = out / "pictures"
    pictures.mkdir(exist_ok=True)
    icons = sorted({i for c in all_concepts for i in c.icons})
    bar = Progress("ticor data icons: render", len(icons), quiet)
    skipped: dict[str, str] = {}
    for n, icon in enumerate(icons):
        target = pictures / f"{icon}.png"
        if not target.is_file():
            r = render(RenderJob(f"mdi/{icon}", "svg", str(pkg / "svg" / f"{icon}.svg")), SIZE)
            if r.png is None:
                skipped[icon] = r.reason
            else:
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(r.png)
                tmp.replace(target)
        bar.update(n + 1)
    bar.close()
    kept = [Concept(c.id, c.captions, tuple(i for i in c.icons if i not in skipped), c.tags) for c in all_concepts]
    kept = [c for c in kept if c.icons]
    parts = {p: [c for c in kept if part_of(c) == p] for p in ("adapt", "test")}
    counts = {}
    for name, part in parts.items():
        rows = pair_rows(part, seed + (name == "test"))
        _write_csv(out / f"{name}.csv", rows, COLUMNS)
        counts[name] = {"concepts": len(part), "pairs": len(rows), "pictures": len({r["image"] for r in rows})}
        if name == "adapt":
            for n in CURVE:  # whole concepts, in a fixed shuffled order, so each file holds the smaller ones
                order = sorted({r["group"] for r in rows}, key=lambda g: hashlib.sha256(f"curve:{g}".encode()).digest())
                rank = {g: k for k, g in enumerate(order)}
                ranked = sorted(rows, key=lambda r: rank[r["group"]])
                cut = ranked[:n]
                if len(ranked) > n and cut and ranked[n]["group"] == cut[-1]["group"]:
                    cut = [r for r in cut if r["group"] != cut[-1]["group"]]
                _write_csv(out / f"adapt-{n}.csv", cut, COLUMNS)
                counts[f"adapt-{n}"] = {"pairs": len(cut), "concepts": len({r["group"] for r in cut})}
            matches = [r for r in rows if r["label"] == "1"]
            _write_csv(out / "captions.csv", matches, ("text", "image", "group", "lang"))
            counts["captions"] = {"rows": len(matches)}
    shutil.copyfile(pkg / "LICENSE", out / "LICENSE")
    manifest = {"example": "mdi-icons", "version": EXAMPLE_VERSION, "source": {
        "package": ICON_SOURCE.spec, "sha256": ICON_SOURCE.sha256, "license": ICON_SOURCE.license},
        "size": SIZE, "seed": seed, "test_share": TEST_SHARE, "skipped": skipped, "parts": counts}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest
