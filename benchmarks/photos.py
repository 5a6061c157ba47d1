"""Camera photos through the picture path: before and after, side by side in one run.

    python -m ticor.benchmarks.photos [--bundle DIR] [--data DIR] [--rows 500] [--json FILE]

- **Preparing one picture** (file bytes to the image graph's input), median over the camera set
  (12 MP JPEG, ~4K PNG, 12 MP HEIC with the ``heif`` extra): the code as it was before the
  reduced path (every pixel decoded, an RGBA round trip, a full-size padded canvas, one
  Lanczos), the full path as it is now (``decode: full``, what older bundles get), and the
  reduced path (``decode: reduced``).
- **Fidelity** of the reduced path against the full path on the bundle: image-embedding cosine
  (median, minimum) and the share of (text, picture) decisions that stay the same, with texts of
  the dataset's test split.
- **Fresh pair at batch 1**: ``Matcher.score`` with a 12 MP JPEG, a ~4K PNG and a 128 px dataset
  picture, interleaved.
- **``ticor score`` throughput** over ``--rows`` distinct camera JPEGs (the 12 photographs, each
  copy given its own bytes so nothing is decoded once for several rows), no embedding cache: the
  bundle as it is and the same graphs with ``decode: full``, and the reduced path with 1, 2 and
  4 decode threads; rows/s and peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ticor.benchmarks._common import test_pairs
from ticor.benchmarks.scorer import ticor_rate
from ticor.paths import bundle_dir, dataset_dir


def before(path: Path, spec: Any) -> np.ndarray:
    """The picture path before the reduced path, as it was written."""
    from ticor.imaging import flatten, to_rgba

    with Image.open(path) as im:
        im.load()
        rgb = flatten(to_rgba(im), spec.background)
    w, h = rgb.size
    if w != h:
        side = max(w, h)
        square = Image.new("RGB", (side, side), spec.background)
        square.paste(rgb, ((side - w) // 2, (side - h) // 2))
        rgb = square
    rgb = rgb.resize((spec.size, spec.size), Image.Resampling.LANCZOS)
    arr = (np.asarray(rgb, np.float32) / np.float32(255.0) - np.asarray(spec.mean, np.float32)) / np.asarray(
        spec.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _distinct_copies(sources: list[Path], n: int, folder: Path) -> list[Path]:
    """``n`` JPEGs of camera size, each with bytes of its own (a comment segment after SOI)."""
    out = []
    blobs = [p.read_bytes() for p in sources]
    for i in range(n):
        raw = blobs[i % len(blobs)]
        note = f"ticor benchmark copy {i}".encode()
        seg = b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note
        p = folder / f"photo-{i:05d}.jpg"
        p.write_bytes(raw[:2] + seg + raw[2:])
        out.append(p)
    return out


def _copy_with(bundle: Path, folder: Path, decode: str) -> Path:
    """The same graphs with ``decode`` set in the manifest (``full``: what a bundle from before gets)."""
    copy = folder / f"bundle-decode-{decode}"
    copy.mkdir()
    for f in bundle.iterdir():
        if f.name != "manifest.json":
            (copy / f.name).symlink_to(f.resolve())
    d = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    d["image"]["spec"]["decode"] = decode
    (copy / "manifest.json").write_text(json.dumps(d), encoding="utf-8")
    return copy


def run(bundle: Path, data: Path, rows: int) -> dict[str, Any]:
    from ticor import Matcher
    from ticor.dataset.photos import camera_set
    from ticor.preprocess import load_image

    cam = camera_set()
    work = Path(tempfile.mkdtemp(prefix="ticor-photos-"))
    old, new = _copy_with(bundle, work, "full"), _copy_with(bundle, work, "reduced")
    m = Matcher.load(new, providers="cpu", decode_threads=1)
    fast = dataclasses.replace(m.manifest.image_spec, decode="reduced")
    full = dataclasses.replace(fast, decode="full")
    res: dict[str, Any] = {"bundle": str(bundle), "prepare_ms": {}, "fidelity": {}}
    texts = sorted({r["text"] for r in test_pairs(data, 100000)})[:400]
    tv = m.embed_texts(texts)
    for kind in ("jpeg", "png", "heic"):
        paths = cam[kind]
        if not paths:
            res["prepare_ms"][kind] = "not run: pillow-heif (the heif extra) is not installed"
            continue
        t: dict[str, list[float]] = {"before": [], "full": [], "reduced": []}
        arrays: dict[str, list[np.ndarray]] = {"full": [], "reduced": []}
        for p in paths:  # interleaved, each picture through every path
            for name, fn in (("before", lambda p=p: before(p, full)), ("full", lambda p=p: load_image(p, full)),
                             ("reduced", lambda p=p: load_image(p, fast))):
                t0 = time.perf_counter()
                a = fn()
                t[name].append((time.perf_counter() - t0) * 1e3)
                if name in arrays:
                    arrays[name].append(a)
        res["prepare_ms"][kind] = {k: statistics.median(v) for k, v in t.items()}
        res["prepare_ms"][kind]["speedup_vs_before"] = res["prepare_ms"][kind]["before"] / res["prepare_ms"][kind][
            "reduced"]
        ef, ex = m.embed_pixels(np.stack(arrays["reduced"])), m.embed_pixels(np.stack(arrays["full"]))
        cos = (ef * ex).sum(1)
        a = np.repeat(tv, len(paths), 0)
        same = (m.head(a, np.tile(ef, (len(texts), 1))) >= m.threshold) == (
            m.head(a, np.tile(ex, (len(texts), 1))) >= m.threshold)
        res["fidelity"][kind] = {"cosine_median": float(np.median(cos)), "cosine_min": float(cos.min()),
                                 "decisions_equal": float(same.mean()), "pairs": int(same.size)}
    small = [r["image"] for r in test_pairs(data, 50)]
    lat: dict[str, list[float]] = {"12mp_jpeg": [], "4k_png": [], "128px_png": []}
    for i in range(36):
        for name, p in (("12mp_jpeg", cam["jpeg"][i % len(cam["jpeg"])]), ("4k_png", cam["png"][i % len(cam["png"])]),
                        ("128px_png", small[i % len(small)])):
            t0 = time.perf_counter()
            m.score(texts[i], p)
            lat[name].append((time.perf_counter() - t0) * 1e3)
    res["fresh_pair_ms"] = {k: statistics.median(v[4:]) for k, v in lat.items()}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        photos = _distinct_copies(cam["jpeg"], rows, tmp)
        inp = tmp / "pairs.csv"
        inp.write_text("id,text,image\n" + "".join(f"p{i},\"{texts[i % len(texts)].replace(chr(34), '')}\",{p}\n"
                                                   for i, p in enumerate(photos)), encoding="utf-8")
        res["score"] = {}
        for label, b, threads in (("decode full (as before)", old, 2), ("reduced, 1 decode thread", new, 1),
                                  ("reduced, 2 decode threads", new, 2), ("reduced, 4 decode threads", new, 4)):
            rate, rss = ticor_rate([str(inp), "-o", str(tmp / "out.jsonl"), "--bundle", str(b), "--no-cache",
                                    "--overwrite", "--threads", "2", "--decode-threads", str(threads)], tmp / "cache")
            res["score"][label] = {"rows_per_s": rate, "peak_rss_mb": rss, "rows": rows}
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ticor.benchmarks.photos", description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(bundle_dir()))
    ap.add_argument("--data", default=str(dataset_dir()), help="dataset whose test texts are paired with the photos")
    ap.add_argument("--rows", type=int, default=500, help="camera JPEGs scored by ticor score (default 500)")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    res = run(Path(a.bundle), Path(a.data), a.rows)
    print("preparing one picture, median ms: before the reduced path / full path now / reduced path (speed-up)")
    for kind, v in res["prepare_ms"].items():
        print(f"  {kind:<5} {v}" if isinstance(v, str) else
              f"  {kind:<5} {v['before']:7.1f} / {v['full']:7.1f} / {v['reduced']:6.1f}  "
              f"({v['speedup_vs_before']:.1f}x)")
    print("fidelity, reduced vs full path (image-embedding cosine median / min, decisions equal):")
    for kind, f in res["fidelity"].items():
        print(f"  {kind:<5} {f['cosine_median']:.5f} / {f['cosine_min']:.5f}, {f['decisions_equal']:.2%} "
              f"of {f['pairs']} pairs")
    fp = res["fresh_pair_ms"]
    print(f"fresh pair, batch 1, median ms: 12 MP JPEG {fp['12mp_jpeg']:.1f}, ~4K PNG {fp['4k_png']:.1f}, "
          f"128 px PNG {fp['128px_png']:.1f} (12 MP / 128 px: {fp['12mp_jpeg'] / fp['128px_png']:.2f}x)")
    for label, s in res["score"].items():
        print(f"ticor score, {s['rows']} camera JPEGs, {label}: {s['rows_per_s']:.1f} rows/s, "
              f"peak RSS {s['peak_rss_mb']:.0f} MB")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
