"""Guarantees of a built dataset, checked on the committed fixture (no network needed).

Every check recomputes from the files themselves rather than trusting the builder's manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import defaultdict
from pathlib import Path

from PIL import Image

from tests.conftest import read_jsonl

SPLITS = ("train", "val", "test")


def _norm(text: str) -> str:
    # Written independently of the builder's norm_text, on purpose.
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def _load(root: Path):
    items = read_jsonl(root / "items.jsonl")
    texts = read_jsonl(root / "texts.jsonl")
    pairs = {s: read_jsonl(root / "pairs" / f"{s}.jsonl") for s in SPLITS}
    return items, texts, pairs


def test_every_image_is_a_fixed_size_rgb_png_named_by_its_own_hash(fixture_data: Path) -> None:
    items, _, _ = _load(fixture_data)
    manifest = json.loads((fixture_data / "manifest.json").read_text())
    size = manifest["image"]["size"]
    paths = sorted({i["image"] for i in items})
    assert len(paths) >= 150
    for rel in paths:
        assert re.fullmatch(r"images/[0-9a-f]{2}/[0-9a-f]{64}\.png", rel), rel
        data = (fixture_data / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == Path(rel).stem
        with Image.open(fixture_data / rel) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (size, size)
    on_disk = {str(p.relative_to(fixture_data)) for p in (fixture_data / "images").rglob("*") if p.is_file()}
    assert on_disk == set(paths), "stray or missing picture files"


def test_splits_are_disjoint_by_group_image_bytes_and_text(fixture_data: Path) -> None:
    items, texts, _ = _load(fixture_data)
    seen: dict[str, dict[str, str]] = defaultdict(dict)
    for row in items:
        digest = hashlib.sha256((fixture_data / row["image"]).read_bytes()).hexdigest()
        for kind, value in (("group", row["group"]), ("image", digest)):
            assert seen[kind].setdefault(value, row["split"]) == row["split"], (kind, value)
    for row in texts:
        for kind, value in (("group", row["group"]), ("text", _norm(row["text"]))):
            assert seen[kind].setdefault(value, row["split"]) == row["split"], (kind, value)
    assert {row["split"] for row in items} == set(SPLITS)


def test_every_pair_label_is_right(fixture_data: Path) -> None:
    items, texts, pairs = _load(fixture_data)
    images_of: dict[str, set[str]] = defaultdict(set)
    for row in items:
        images_of[row["concept"]].add(row["image"])
    matching: dict[str, set[str]] = defaultdict(set)
    for row in texts:
        matching[_norm(row["text"])] |= images_of[row["concept"]]
    split_of_image = {row["image"]: row["split"] for row in items}
    family_of_concept = {row["concept"]: row["family"] for row in items}
    families_of_text: dict[str, set[str]] = defaultdict(set)
    for row in texts:
        families_of_text[_norm(row["text"])].add(family_of_concept[row["concept"]])
    total = 0
    for split, rows in pairs.items():
        ids = [p["id"] for p in rows]
        assert len(ids) == len(set(ids))
        for p in rows:
            total += 1
            assert p["label"] == int(p["image"] in matching[_norm(p["text"])]), p
            assert split_of_image[p["image"]] == split
            assert (p["negative"] is None) == (p["label"] == 1)
            assert p["family"] in families_of_text[_norm(p["text"])], p
            assert p["lang"] in ("en", "zh")
    assert total > 200


def test_pairs_are_balanced_and_cover_languages_and_kinds(fixture_data: Path) -> None:
    _, _, pairs = _load(fixture_data)
    rows = [p for s in SPLITS for p in pairs[s]]
    pos = sum(p["label"] for p in rows)
    assert pos == len(rows) - pos, "one negative per positive"
    kinds = {p["negative"] for p in rows if p["negative"]}
    assert kinds == {"random", "hard"}
    hard = sum(p["negative"] == "hard" for p in rows)
    assert 0.3 < hard / (len(rows) - pos) <= 0.5 + 1e-9
    assert {p["lang"] for p in rows} == {"en", "zh"}
    assert {p["family"] for p in rows} == {"emoji", "tux", "openclipart", "photo"}


def test_no_output_path_or_id_carries_the_answer(fixture_data: Path) -> None:
    items, texts, pairs = _load(fixture_data)
    # Hex-only words ("face", "bead") can occur in any hash; layout words are no leak.
    words = {
        w for row in texts for w in _norm(row["text"]).split()
        if len(w) >= 4 and not re.fullmatch(r"[0-9a-f]+", w) and w not in {"images", "train", "test"}
    }
    assert len(words) > 100
    for p in (p for s in SPLITS for p in pairs[s]):
        for field in ("image", "id"):
            assert not any(w in p[field].lower() for w in words), p[field]
    for row in items:
        assert re.fullmatch(r"c[0-9a-f]{12}", row["concept"]) and re.fullmatch(r"g[0-9a-f]{12}", row["group"])


def test_manifest_hashes_and_counts_match_the_files(fixture_data: Path) -> None:
    manifest = json.loads((fixture_data / "manifest.json").read_text())
    for rel, digest in manifest["outputs"].items():
        assert hashlib.sha256((fixture_data / rel).read_bytes()).hexdigest() == digest, rel
    _, _, pairs = _load(fixture_data)
    assert manifest["counts"]["pairs_by_split"] == {s: len(pairs[s]) for s in SPLITS}
    for name, info in manifest["inputs"]["sources"].items():
        assert re.fullmatch(r"[0-9a-f]{64}", info["sha256"]), name


def test_licenses_and_attribution_ship_with_the_pictures(fixture_data: Path) -> None:
    items, _, _ = _load(fixture_data)
    sources = {row["source"] for row in items}
    assert {"noto", "openmoji", "fluent-flat", "fluent-color", "tux", "openclipart"} <= sources
    licenses = {p.name for p in (fixture_data / "licenses").iterdir()}
    assert "openmoji-LICENSE.txt" in licenses  # CC-BY-SA-4.0
    assert "GPL-2" in licenses and "tuxpaint-stamps-copyright" in licenses
    attribution = (fixture_data / "ATTRIBUTION.md").read_text()
    assert "CC BY-SA 4.0" in attribution and "GPL-2.0-or-later" in attribution
    assert "CC BY-SA 4.0" in (fixture_data / "licenses" / "openmoji-LICENSE.txt").read_text() or (
        "Attribution-ShareAlike 4.0" in (fixture_data / "licenses" / "openmoji-LICENSE.txt").read_text()
    )


def test_fixture_stays_small(fixture_data: Path) -> None:
    total = sum(p.stat().st_size for p in fixture_data.rglob("*") if p.is_file())
    assert total < 4 * 1024 * 1024, f"fixture is {total / 1e6:.1f} MB"
