"""What ``ticor bench`` times and scores: a labelled pair file, the dataset's test split, or
built-in captions with generated pictures (timing only).

Every variant gets the same texts, pictures and pairs. Quality rows come from
:mod:`ticor.pair_eval` (the code of ``ticor eval``) on the labelled pairs when there are any;
with generated inputs the report carries the bundle's stored test metrics instead, labelled so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ticor.pair_eval import LabelledPair, PairFile, read_labelled

TruthFn = Callable[[list[str], list[str]], list[set[int]]]

#: Captions for generated inputs: English and Chinese, short to long (timing only).
BUILTIN_CAPTIONS = (
    "cat", "a red apple", "two dogs playing in the snow", "a bowl of noodles with chopsticks",
    "an old steam train crossing a stone bridge over a river in autumn",
    "a child in a yellow raincoat jumping into a puddle on a grey city street, with a red umbrella behind her",
    "sunflower", "a blue bicycle leaning against a wall", "a plate of dumplings", "the moon over the sea",
    "a small wooden boat on a calm lake at dawn, mountains in the distance and mist over the water",
    "keyboard and mouse", "猫", "一个红苹果", "两只狗在雪地里玩耍", "一碗面条和一双筷子",
    "一列旧蒸汽火车在秋天穿过河上的石桥", "一个穿黄色雨衣的孩子在灰色的城市街道上跳进水坑，身后有一把红伞",
    "向日葵", "靠在墙上的蓝色自行车", "一盘饺子", "海上的月亮", "黎明时平静湖面上的一条小木船，远处是群山，水面上有雾",
    "键盘和鼠标",
)


@dataclass
class BenchInputs:
    source: str  # what the inputs are, for the report
    texts: list[str]  # distinct captions, for the branch timings
    images: list[str]  # distinct picture files, for the branch timings and fresh pairs
    fresh: list[tuple[str, str]]  # (caption, picture file) pairs for the end-to-end rows
    labelled: PairFile | None  # pairs for the quality rows (None: generated inputs)
    truth: TruthFn | None = None  # recall@k truth when it does not come from the pair rows (the dataset)


def from_pair_file(path: Path, image_root: Path | None, limit: int | None) -> BenchInputs:
    pf = read_labelled(str(path), image_root=image_root)
    if limit:
        pf.pairs = pf.pairs[:limit]
    if not pf.pairs:
        from ticor.errors import UsageError

        raise UsageError(f"{path}: no usable labelled pair ({len(pf.excluded)} rows excluded)")
    return BenchInputs(f"labelled pair file {path} ({len(pf.pairs)} pairs)", sorted({p.text for p in pf.pairs}),
                       sorted({p.image for p in pf.pairs}), [(p.text, p.image) for p in pf.pairs], pf)


def from_dataset(root: Path, limit: int | None) -> BenchInputs:
    from ticor.evaluation import load_dataset

    ds = load_dataset(root)
    rows = ds.pairs["test"][:limit] if limit else ds.pairs["test"]
    pairs = [LabelledPair(row=i + 1, id=str(r.get("id", i + 1)), text=r["text"], image=str(ds.root / r["image"]),
                          label=int(r["label"]), lang=r.get("lang"), negative=r.get("negative"))
             for i, r in enumerate(rows)]
    pf = PairFile(str(ds.root / "pairs" / "test.jsonl"), ds.sha256, pairs, [], (), len(pairs))
    prefix = len(str(ds.root)) + 1

    def truth(texts: list[str], images: list[str]) -> list[set[int]]:
        ii = {p[prefix:]: i for i, p in enumerate(images)}
        return [{ii[p] for p in ds.positives_of(t) if p in ii} for t in texts]

    return BenchInputs(f"the dataset's test split ({root}, {len(pairs)} pairs)", sorted({p.text for p in pairs}),
                       sorted({p.image for p in pairs}), [(p.text, p.image) for p in pairs], pf, truth)


def generated(work: Path, n_pictures: int = 16, size: int = 128) -> BenchInputs:
    """Built-in captions and pictures drawn here (gradients, discs, noise) as PNG files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = work / "generated"
    out.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    files = []
    for i in range(n_pictures):
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = (xx * np.cos(i) + yy * np.sin(i))[..., None]
        img = c0 * (1 - t) + c1 * t
        cx, cy, r = rng.random(3) * [1, 1, 0.4] + [0, 0, 0.1]
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2)[..., None]
        img = np.where(disc, rng.integers(0, 256, 3), img) + rng.normal(0, 6, (size, size, 3))
        path = out / f"picture-{i:02d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        files.append(str(path))
    texts = list(BUILTIN_CAPTIONS)
    fresh = [(texts[i % len(texts)], files[i % len(files)]) for i in range(max(len(texts), len(files)))]
    return BenchInputs(f"built-in captions ({len(texts)}, en and zh) and {len(files)} generated {size} px PNG "
                       "pictures: timing only (give --eval FILE for quality on your pairs)", sorted(texts), files,
                       fresh, None)


def stored_quality(manifest: Any) -> dict[str, Any] | None:
    """The bundle's own test metrics (computed at export or quantization), labelled as stored."""
    test = manifest.metrics.get("test") if manifest.metrics else None
    if not test:
        return None
    return dict(json.loads(json.dumps(test)), note="stored in the bundle (its test split at export/quantization), "
                                                   "not measured in this run")
