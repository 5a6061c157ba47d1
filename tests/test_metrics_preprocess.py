"""Metrics against brute force, and the shared input preparation on real fixture pictures."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FIXTURE_DATA, read_jsonl
from ticor.errors import UsageError
from ticor.metrics import at_threshold, best_threshold, evaluate, rank_families, recall_at_k, roc_auc
from ticor.preprocess import ImageSpec, TextSpec, image_array, load_image


def brute_auc(y, s):
    pos = [b for a, b in zip(y, s) if a]
    neg = [b for a, b in zip(y, s) if not a]
    return sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_roc_auc_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        s = rng.integers(0, 6, 40) / 5.0  # many ties
        if 0 < y.sum() < 40:
            assert roc_auc(y, s) == pytest.approx(brute_auc(y, s))
    assert np.isnan(roc_auc(np.ones(4), np.arange(4)))


def test_best_threshold_maximises_f1() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.normal(0.4, 0.2, 200), 0, 1)
    thr = best_threshold(y, s)
    best = max(at_threshold(y, s, t)["f1"] for t in np.unique(s))
    assert at_threshold(y, s, thr)["f1"] == pytest.approx(best)
    with pytest.raises(ValueError):
        best_threshold(np.ones(3), np.arange(3))


def test_at_threshold_counts() -> None:
    m = at_threshold(np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.8, 0.1]), 0.5)
    assert m == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "n": 4}


def test_recall_at_k() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1]])
    r = recall_at_k(scores, [{2}, {1}], ks=(1, 2))
    assert r == {"recall@1": 0.5, "recall@2": 1.0}


def test_evaluate_splits_by_language_and_negative_kind() -> None:
    rows = [{"label": 1, "lang": "en", "negative": None}, {"label": 0, "lang": "en", "negative": "hard"},
            {"label": 1, "lang": "zh", "negative": None}, {"label": 0, "lang": "zh", "negative": "random"}]
    m = evaluate(rows, np.array([0.9, 0.95, 0.8, 0.1]), 0.5)
    assert m["by_negative"]["hard"]["roc_auc"] == 0.0  # the hard negative outranks both positives
    assert m["by_negative"]["random"]["roc_auc"] == 1.0
    assert m["by_lang"]["zh"]["f1"] == 1.0 and m["by_lang"]["en"]["precision"] == 0.5


def test_evaluate_reports_each_family_and_its_own_retrieval() -> None:
    # two photo captions and one emoji caption; pictures p1, p2 (photos), e1 (emoji)
    rows = [
        {"text": "a hammer", "image": "p1", "label": 1, "family": "photo", "lang": "en", "negative": None},
        {"text": "a hammer", "image": "p2", "label": 0, "family": "photo", "lang": "en", "negative": "random"},
        {"text": "a fish", "image": "p2", "label": 1, "family": "photo", "lang": "en", "negative": None},
        {"text": "a fish", "image": "p1", "label": 0, "family": "photo", "lang": "en", "negative": "hard"},
        {"text": "cat face", "image": "e1", "label": 1, "family": "emoji", "lang": "en", "negative": None},
        {"text": "cat face", "image": "p1", "label": 0, "family": "emoji", "lang": "en", "negative": "random"},
    ]
    scores = np.array([0.9, 0.2, 0.4, 0.6, 0.8, 0.1])
    # rows: sorted texts (a fish, a hammer, cat face); columns: sorted pictures (e1, p1, p2)
    matrix = np.array([[0.9, 0.6, 0.4],   # "a fish": e1 (an emoji) beats its photo p2, and so does p1
                       [0.1, 0.9, 0.2],   # "a hammer": p1 first
                       [0.8, 0.1, 0.0]])  # "cat face": e1 first
    truth = [{2}, {1}, {0}]
    families = rank_families(rows, ["a fish", "a hammer", "cat face"], ["e1", "p1", "p2"])
    assert families == (["photo", "photo", "emoji"], ["emoji", "photo", "photo"])
    m = evaluate(rows, scores, 0.5, (matrix, truth, *families))
    photo = m["by_family"]["photo"]
    assert photo["n"] == 4 and photo["roc_auc"] == pytest.approx(0.75)
    assert m["by_family"]["emoji"]["roc_auc"] == 1.0
    # among the photos only (p1, p2): "a hammer" finds p1 first, "a fish" finds p1 before p2
    assert photo["retrieval"]["recall@1"] == pytest.approx(0.5)
    assert photo["retrieval"]["images"] == 2 and photo["retrieval"]["texts"] == 2
    assert m["retrieval"]["recall@1"] == pytest.approx(2 / 3)
    assert "retrieval" not in m["by_family"]["emoji"]  # one emoji picture: nothing to rank


def test_fixture_pictures_pass_through_unchanged_in_geometry() -> None:
    spec = ImageSpec(size=128)
    item = read_jsonl(FIXTURE_DATA / "items.jsonl")[0]
    arr = load_image(FIXTURE_DATA / item["image"], spec)
    assert arr.shape == (3, 128, 128) and arr.dtype == np.float32
    with Image.open(FIXTURE_DATA / item["image"]) as im:
        raw = np.asarray(im.convert("RGB"), np.float32) / 255.0
    back = arr.transpose(1, 2, 0) * np.array(spec.std, np.float32) + np.array(spec.mean, np.float32)
    assert np.abs(back - raw).max() < 1e-5  # 128 px dataset pictures are not resampled


def test_non_square_pictures_are_padded_not_cropped() -> None:
    spec = ImageSpec(size=16)
    img = Image.new("RGB", (64, 32), (0, 0, 0))
    arr = image_array(img, spec).transpose(1, 2, 0) * np.array(spec.std) + np.array(spec.mean)
    assert np.allclose(arr[0, 8], 1.0, atol=1e-4)  # top band: white padding
    assert np.allclose(arr[8, 8], 0.0, atol=1e-4)  # middle: the black picture, all of it kept


def test_exif_orientation_is_applied(tmp_path) -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "r.jpg"
    img.save(path, exif=exif, quality=95)
    arr = load_image(path, ImageSpec(size=40))
    rgb = arr.transpose(1, 2, 0) * np.array(ImageSpec().std) + np.array(ImageSpec().mean)
    top, bottom = rgb[12, 20], rgb[28, 20]
    assert top[2] > 0.8 and bottom[0] > 0.8  # after rotation the blue half is on top


def test_bad_specs_are_refused() -> None:
    with pytest.raises(UsageError):
        ImageSpec(resize_filter="nearest-ish")
    with pytest.raises(UsageError):
        ImageSpec(size=4)
    spec = TextSpec(prefix="", max_length=8, pad_token="[PAD]")
    assert TextSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    assert ImageSpec.from_json(json.loads(json.dumps(ImageSpec().to_json()))) == ImageSpec()


def test_manifest_problems_are_reported_before_loading(tmp_path) -> None:
    from ticor.bundle import BundleError, read_manifest

    with pytest.raises(BundleError, match="not a ticor bundle"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "ticor-bundle", "schema_version": 99}))
    with pytest.raises(BundleError, match="schema version 99"):
        read_manifest(tmp_path)
    base = {"format": "ticor-bundle", "schema_version": 1, "preset": "p", "precision": "fp32", "graphs": {},
            "text": {}, "image": {}, "threshold": 0.5,
            "files": {n: {"bytes": 1, "sha256": "0" * 64}
                      for n in ("text.onnx", "image.onnx", "head.onnx", "tokenizer.json")}}
    (tmp_path / "manifest.json").write_text(json.dumps(base))
    with pytest.raises(BundleError, match=r"head\.onnx is missing"):
        read_manifest(tmp_path)
    for n in base["files"]:
        (tmp_path / n).write_bytes(b"x")
    with pytest.raises(BundleError, match="sha256"):
        read_manifest(tmp_path)
    with pytest.raises(BundleError, match="no text graph declared"):  # unverified, it must still be whole
        read_manifest(tmp_path, verify=False)


def test_an_image_spec_without_a_decode_path_is_the_full_one() -> None:
    from ticor.errors import UsageError
    from ticor.preprocess import ImageSpec

    old = {k: v for k, v in ImageSpec().to_json().items() if k != "decode"}  # a manifest from before
    assert ImageSpec.from_json(old).decode == "full" and ImageSpec.from_json(old).floor is None
    assert ImageSpec().decode == "reduced" and ImageSpec(size=128).floor == 256 and ImageSpec().box_floor == 1024
    with pytest.raises(UsageError, match="unknown decode path"):
        ImageSpec(decode="fast")


def test_formats_are_told_apart_by_their_first_bytes() -> None:
    from ticor.inputs import accepted_formats, sniff

    assert sniff(b"\xff\xd8\xff\xe0") == "JPEG" and sniff(b"II*\x00rest") == "TIFF"
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00") == "HEIF" and sniff(b"\x00\x00\x00\x1cftypavif") == "AVIF"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None and sniff(b"a caption") is None
    assert set(accepted_formats()) >= {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
