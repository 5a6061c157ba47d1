"""The photo domain: GCompris' resource and translation files read right, pinned, and split well."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import FIXTURE_DATA, read_jsonl
from ticor.dataset.catalog import noun_key
from ticor.dataset.gcompris import (
    LABELS,
    RCC_DIR,
    Simplifier,
    board_entries,
    credits,
    first_sentence,
    photo_concepts,
    read_qm,
    read_rcc,
)
from ticor.dataset.sources import SOURCES
from ticor.errors import SourceError


def test_the_new_sources_are_pinned() -> None:
    for name in ("gcompris", "opencc"):
        s = SOURCES[name]
        assert re.fullmatch(r"[0-9a-f]{64}", s.sha256), name
        assert s.version and s.keep and s.license_files
    assert SOURCES["gcompris"].spec == "gcompris-qt-data=3.1-2"
    assert SOURCES["opencc"].spec == "opencc@1.4.2"


def test_a_resource_file_unpacks_with_its_boards_pictures_and_credits(source_roots: dict[str, Path]) -> None:
    files = read_rcc((source_roots["gcompris"] / RCC_DIR / "explore_farm_animals.rcc").read_bytes())
    pictures = {k for k in files if k.endswith(".webp")}
    assert len(pictures) == 9
    board = files["gcompris/src/activities/explore_farm_animals/resource/board/board1.qml"].decode()
    entries = board_entries(board)
    assert {e["image2"] for e in entries} == pictures
    horse = next(e for e in entries if e["title"] == "Horse")
    assert first_sentence(horse["text"]) == "The horse goes 'neigh'."
    for name, blob in files.items():
        if name.endswith(".webp"):
            with Image.open(io.BytesIO(blob)) as im:
                assert im.format == "WEBP" and min(im.size) >= 300
    readme = files["gcompris/src/activities/explore_farm_animals/resource/animals/README"].decode()
    got = credits(readme)
    assert {Path(p).name for p in pictures} <= set(got)
    assert all(c.license in ("public-domain", "CC0-1.0") for n, c in got.items() if n.endswith(".webp"))


def test_a_damaged_resource_file_is_refused() -> None:
    with pytest.raises(SourceError, match="qres"):
        read_rcc(b"not a resource file at all")
    with pytest.raises(SourceError, match="translation"):
        read_qm(b"\x00" * 32)


def test_credit_blocks_with_inline_and_listed_files() -> None:
    text = ("Copyright: A. Person\nSource: https://example.org/a.jpg\nLicense: CC-BY-SA-4.0\nFiles: a.webp\n\n"
            "Copyright: B\nLicense: Public Domain\nFiles:\nx/b.webp\nc.webp\n\n"
            "Copyright: C\nLicense: GPLv3\nFiles: d.webp\n")
    got = credits(text)
    assert got["a.webp"].license == "CC-BY-SA-4.0" and got["a.webp"].author == "A. Person"
    assert got["a.webp"].source == "https://example.org/a.jpg"
    assert got["b.webp"].license == got["c.webp"].license == "public-domain"
    assert got["d.webp"].license == ""  # a licence the dataset does not take


def test_traditional_chinese_becomes_simplified(source_roots: dict[str, Path]) -> None:
    qm = read_qm((source_roots["gcompris"] / "usr/share/gcompris-qt/translations/gcompris_zh_TW.qm").read_bytes())
    assert qm["Horse"] == "馬"
    simplify = Simplifier(source_roots["opencc"])
    assert simplify(qm["This animal has single-toed hooves."]) == "这个动物有单趾蹄。"
    assert simplify("頭髮") == "头发"  # a phrase entry, not character by character


def test_every_photo_has_both_languages_and_a_credit(source_roots: dict[str, Path]) -> None:
    skipped: list = []
    concepts, used = photo_concepts(source_roots, skipped)
    jobs = [job for c in concepts for _, job in c.jobs]
    assert len(jobs) >= 240 and len(concepts) >= 160
    assert {j.key for j in jobs} == set(used)
    assert Counter(c.license for c in used.values()).keys() <= {
        "public-domain", "CC0-1.0", "CC-BY-2.0", "CC-BY-3.0", "CC-BY-SA-4.0"}
    for c in concepts:
        langs = {t.lang for t in c.texts}
        assert langs == {"en", "zh"}, c.key
        zh = [t.text for t in c.texts if t.lang == "zh"]
        # Chinese (Latin proper names inside a sentence are kept, as Chinese text writes them)
        assert all(len(re.findall(r"[\u4e00-\u9fff]", t)) >= len(re.findall(r"[A-Za-z]", t)) for t in zh), zh
        assert not any(re.search(r"[\u81fa\u9019\u99ac\u9ede]", t) for t in zh), "Traditional left over"
    reasons = Counter(s.reason for s in skipped)
    assert sum(reasons.values()) <= 12, reasons
    named = {re.sub(r"\d+$", "", Path(j.ref).stem) for j in jobs if "/categorization/" in j.ref or "/erase/" in j.ref}
    assert named <= set(LABELS)


def test_the_fixture_holds_photos_on_every_split_and_their_negatives_are_photos() -> None:
    items = read_jsonl(FIXTURE_DATA / "items.jsonl")
    photo_images = {i["image"] for i in items if i["family"] == "photo"}
    assert {i["split"] for i in items if i["family"] == "photo"} == {"train", "val", "test"}
    assert {i["source"] for i in items if i["family"] == "photo"} == {"gcompris"}
    for split in ("train", "val", "test"):
        rows = [r for r in read_jsonl(FIXTURE_DATA / "pairs" / f"{split}.jsonl") if r["family"] == "photo"]
        assert rows and {r["lang"] for r in rows} == {"en", "zh"}
        assert all(r["image"] in photo_images for r in rows), "a photo caption is paired only with photos"
    # a negative photo never shows the caption's own thing ("a giraffe" against the "Giraffe" photo)
    concept_of = {i["image"]: i["concept"] for i in items}
    nouns: dict[str, set[str]] = {}
    for t in read_jsonl(FIXTURE_DATA / "texts.jsonl"):
        nouns.setdefault(t["concept"], set()).add(noun_key(t["text"]))
    for split in ("train", "val", "test"):
        for r in read_jsonl(FIXTURE_DATA / "pairs" / f"{split}.jsonl"):
            if r["family"] == "photo" and r["label"] == 0:
                assert noun_key(r["text"]) not in nouns[concept_of[r["image"]]], r
    attribution = (FIXTURE_DATA / "ATTRIBUTION.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([0-9a-f]{12})` \|", attribution, flags=re.M))
    assert {Path(p).stem[:12] for p in photo_images} == listed
    manifest = json.loads((FIXTURE_DATA / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["sources"]["gcompris"]["sha256"] == SOURCES["gcompris"].sha256


def test_a_tampered_download_is_fetched_again_and_a_wrong_pin_refused(tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from ticor.dataset.sources import downloads_dir, extract, fetch

    source = SOURCES["opencc"]  # the smallest new source (1.4 MB, npm)
    cached = fetch(source)
    downloads = downloads_dir(tmp_path)
    downloads.mkdir(parents=True)
    tampered = downloads / source.filename
    shutil.copyfile(cached, tampered)
    with tampered.open("r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    root = extract(source, tmp_path)  # the bad file is not used: fetched again, verified, extracted
    assert (root / "package/data/dictionary/TSCharacters.txt").is_file()
    assert tampered.read_bytes() == cached.read_bytes()
    wrong = dataclasses.replace(source, sha256="0" * 64)
    with pytest.raises(SourceError, match="does not match the pinned"):
        fetch(wrong, tmp_path / "other")
    assert not (downloads_dir(tmp_path / "other") / source.filename).exists()


def test_the_heldout_photo_file_holds_every_val_and_test_photo_pair_with_its_concepts() -> None:
    from ticor.benchmarks.heldout_photos import heldout_rows

    rows = heldout_rows(FIXTURE_DATA)
    expected = [r["id"] for s in ("val", "test") for r in read_jsonl(FIXTURE_DATA / "pairs" / f"{s}.jsonl")
                if r["family"] == "photo"]
    assert [r["id"] for r in rows] == expected and expected
    concept = {r["image"]: r["concept"] for r in read_jsonl(FIXTURE_DATA / "items.jsonl")}
    for r in rows:
        assert r["group"] == concept[r["image"]]
        # a matching photo shows one of its caption's concepts, a non-matching one none of them
        assert (r["group"] in r["text_group"]) == (r["label"] == 1), r["id"]
