"""Trim the text branch's vocabulary to the scripts a bundle serves (applied by ``ticor export``).

multilingual-e5-small carries XLM-R's 250,002-piece Unigram vocabulary: 96M of the text
graph's 118M parameters, for a product trained and tested on English and Chinese. A Unigram
segmentation only ever uses pieces that occur in the text, so dropping every piece that holds a
character outside the kept scripts cannot change the segmentation of text made only of kept
characters: the trim is exact for them, and text in other scripts is still scored, with the
characters no piece covers any more as ``<unk>`` (the runtime flags the share of them).

:func:`trim_unigram` rebuilds ``tokenizer.json`` with the kept pieces in their original order
and with their original scores; special tokens keep their ids below the first piece and
``<mask>`` moves to the end, the unknown id and the post-processor's ids follow. The export
slices the word-embedding rows to match (:func:`slice_embeddings`). Training is unchanged.

:func:`heldout_check` measures what the trim changes on a held-out corpus (the prose of
Debian's man pages, :mod:`ticor.dataset.corpus`): the share of texts that tokenize to the same
ids, and the embedding cosine to the untrimmed branch for the others.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ticor.errors import UsageError

#: The scripts a trim can keep (code point ranges, inclusive). ``punctuation-symbols`` is every
#: character of Unicode category P* or S* (emoji are symbols, So), plus spaces.
SCRIPT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "ascii": ((0x0000, 0x007F),),
    "latin-1": ((0x0080, 0x00FF),),
    "cjk": ((0x2E80, 0x2FDF), (0x3000, 0x303F), (0x3100, 0x312F), (0x3190, 0x31EF), (0x3200, 0x33FF),
            (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFE10, 0xFE1F), (0xFE30, 0xFE4F),
            (0xFF00, 0xFFEF), (0x20000, 0x3FFFF)),
    "emoji": ((0x1F000, 0x1FAFF), (0xFE00, 0xFE0F), (0x200D, 0x200D), (0xE0020, 0xE007F)),
    # the tone-marked vowels of Hanyu Pinyin outside Latin-1 (ā ē ě ī ō ū ǎ ǐ ǒ ǔ ǖ ǘ ǚ ǜ and capitals)
    "latin-extended": ((0x0100, 0x024F),),
    "pinyin": ((0x0100, 0x0101), (0x0112, 0x0113), (0x011A, 0x011B), (0x012A, 0x012B), (0x014C, 0x014D),
               (0x016A, 0x016B), (0x01CD, 0x01DC)),
    "punctuation-symbols": (),
}
METASPACE = "\u2581"


def char_keeper(scripts: Sequence[str]) -> Callable[[str], bool]:
    """``keep(ch)``: is ``ch`` in one of ``scripts``? (The Metaspace marker always is.)"""
    unknown = [s for s in scripts if s not in SCRIPT_RANGES]
    if unknown:
        raise UsageError(f"unknown script {unknown[0]!r}; known: {', '.join(SCRIPT_RANGES)}")
    ranges = [r for s in scripts for r in SCRIPT_RANGES[s]]
    symbols = "punctuation-symbols" in scripts

    def keep(ch: str) -> bool:
        o = ord(ch)
        if ch == METASPACE or any(lo <= o <= hi for lo, hi in ranges):
            return True
        return symbols and unicodedata.category(ch)[0] in "PSZ"

    return keep


@dataclass(frozen=True)
class Trim:
    """A trimmed tokenizer and the original ids of its pieces (new id ``i`` was ``kept[i]``)."""

    tokenizer: dict[str, Any]  # the rebuilt tokenizer.json
    kept: np.ndarray  # int64, ascending
    original_pieces: int
    scripts: tuple[str, ...]

    @property
    def pieces(self) -> int:
        return len(self.kept)

    def new_ids(self) -> np.ndarray:
        """Original id -> new id (-1: dropped)."""
        table = np.full(self.original_pieces, -1, np.int64)
        table[self.kept] = np.arange(len(self.kept))
        return table

    def dumps(self) -> str:
        """The rebuilt ``tokenizer.json`` (compact: the file is loaded at every start)."""
        return json.dumps(self.tokenizer, ensure_ascii=False, separators=(",", ":"))


def trim_unigram(tokenizer: dict[str, Any], scripts: Sequence[str]) -> Trim:
    """Keep the special tokens and every piece made only of characters of ``scripts``."""
    model = tokenizer.get("model") or {}
    if model.get("type") != "Unigram":
        raise UsageError(f"vocabulary trimming needs a Unigram tokenizer, not {model.get('type')!r}")
    keep = char_keeper(scripts)
    special = special_ids(tokenizer)
    kept = np.array([i for i, (piece, _) in enumerate(model["vocab"]) if i in special or all(map(keep, piece))],
                    np.int64)
    return rebuild(tokenizer, kept, scripts)


def special_ids(tokenizer: dict[str, Any]) -> set[int]:
    """The ids of the added (special) tokens and of the unknown token."""
    return {int(t["id"]) for t in tokenizer.get("added_tokens", [])} | {int(tokenizer["model"]["unk_id"])}


def rebuild(tokenizer: dict[str, Any], kept: np.ndarray, scripts: Sequence[str]) -> Trim:
    """The tokenizer with only the pieces ``kept`` (original ids, ascending; the special ones
    among them), their scores as they were, and every id that names a piece remapped."""
    model = tokenizer["model"]
    vocab = model["vocab"]
    if not special_ids(tokenizer) <= set(kept.tolist()):
        raise UsageError("a trimmed vocabulary must keep the special tokens")
    table = np.full(len(vocab), -1, np.int64)
    table[kept] = np.arange(len(kept))
    out = json.loads(json.dumps(tokenizer))  # a deep copy
    out["model"]["vocab"] = [vocab[i] for i in kept]
    out["model"]["unk_id"] = int(table[model["unk_id"]])
    for t in out.get("added_tokens", []):
        t["id"] = int(table[t["id"]])
    post = out.get("post_processor") or {}
    if post and post.get("type") not in ("TemplateProcessing", "RobertaProcessing"):
        raise UsageError(f"cannot remap the ids of a {post.get('type')} post-processor")
    for spec in (post.get("special_tokens") or {}).values():
        spec["ids"] = [int(table[i]) for i in spec["ids"]]
    for key in ("sep", "cls"):  # RobertaProcessing: [token, id]
        if key in post:
            post[key] = [post[key][0], int(table[post[key][1]])]
    return Trim(out, kept, len(vocab), tuple(scripts))


def slice_embeddings(bert: Any, kept: np.ndarray) -> None:
    """Replace a ``BertModel``'s word-embedding table by its ``kept`` rows (torch, in place)."""
    import torch

    old = bert.embeddings.word_embeddings
    if int(kept.max()) >= old.num_embeddings:
        raise UsageError(f"the tokenizer has ids up to {int(kept.max())}, the embedding table has "
                         f"{old.num_embeddings} rows")
    new = torch.nn.Embedding(len(kept), old.embedding_dim, padding_idx=None)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.from_numpy(kept)])
    new.weight.requires_grad_(False)
    bert.embeddings.word_embeddings = new
    bert.config.vocab_size = len(kept)


def covered_chars(tokenizer: dict[str, Any]) -> str:
    """The characters that are pieces on their own (so never unknown, in any context), sorted."""
    model = tokenizer["model"]
    if model["type"] == "Unigram":
        pieces = [p for p, _ in model["vocab"]]
    elif model["type"] == "WordPiece":
        pieces = [p[2:] if p.startswith("##") else p for p in model["vocab"]]
    else:
        return ""
    special = {t["content"] for t in tokenizer.get("added_tokens", [])}
    return "".join(sorted({p for p in pieces if len(p) == 1 and p not in special and p != METASPACE}))


def differing(original: Any, trimmed: Any, table: np.ndarray, texts: list[str]) -> list[str]:
    """The texts whose pieces differ: original ids mapped through ``table`` (original id -> new
    id, -1 for a dropped piece) against the trimmed tokenizer's ids."""
    a, b = original.encode_batch(texts), trimmed.encode_batch(texts)
    return [t for t, x, y in zip(texts, a, b) if table[np.asarray(x.ids, np.int64)].tolist() != y.ids]


def heldout_check(original: Any, trimmed: Any, trim: Trim, texts: dict[str, list[str]],
                  embed: Callable[[list[str]], tuple[np.ndarray, np.ndarray]], examples: int = 8) -> dict[str, Any]:
    """Tokenize every held-out text with both tokenizers (``tokenizers.Tokenizer``, without
    truncation or padding) and compare the ids through the remapping; ``embed(texts)`` gives
    the untrimmed and the trimmed branch's embeddings of the texts that differ."""
    table = trim.new_ids()
    out: dict[str, Any] = {"texts": {}, "identical": {}, "differ": {}}
    changed: list[str] = []
    for lang, items in texts.items():
        bad = differing(original, trimmed, table, items)
        out["texts"][lang] = len(items)
        out["identical"][lang] = 1.0 - len(bad) / max(1, len(items))
        out["differ"][lang] = len(bad)
        changed += bad
    cos = np.ones(0)
    if changed:
        u, t = embed(changed)
        cos = np.sum(u * t, axis=1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(t, axis=1))
    out["cosine_of_differing"] = {"min": float(cos.min()) if cos.size else None,
                                  "median": float(np.median(cos)) if cos.size else None,
                                  "below_0.999": int((cos < 0.999).sum())}
    order = np.argsort(cos)[:examples] if cos.size else []
    out["examples"] = [{"text": changed[i], "cosine": round(float(cos[i]), 5)} for i in order]
    return out
