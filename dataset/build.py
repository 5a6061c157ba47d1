"""Build the text-image dataset: render, group, split, pair, write, verify.

Output layout (all paths relative to the dataset directory)::

    images/ab/<sha256>.png      every picture, named by the hash of its own bytes
    items.jsonl                 one row per (picture, concept): image, source, concept, group,
                                split, license
    texts.jsonl                 one row per (concept, text): concept, group, split, lang, kind, text
    pairs/{train,val,test}.jsonl  labelled (text, image) pairs, see PAIRS_FORMAT
    skipped.jsonl               every source file or concept left out, with the reason
    provenance.jsonl            image hash -> package and path inside it (never a model input)
    ATTRIBUTION.md, licenses/   what the licenses of the sources ask for
    manifest.json               counts, inputs, output hashes (deterministic, no timestamps)
    build-log.json              timings and tool versions of the last build (not hashed)

Deterministic: same sources and options give byte-identical files and the same
``dataset_sha256``. Resumable: rendered pictures are recorded in ``.work/render-index.jsonl``
as they finish, and a rerun renders only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ticor._console import Progress
from ticor.dataset import catalog
from ticor.dataset.catalog import Concept, Skipped
from ticor.dataset.licences import attribution, write_licenses
from ticor.dataset.pairs import PAIRS_FORMAT, Record, image_path, make_pairs, verify
from ticor.dataset.render import RENDER_VERSION, RenderJob, RenderResult, render_many
from ticor.dataset.sources import SOURCES, sha256_file
from ticor.dataset.splits import assign_splits, group_concepts, group_weights, stable_hash
from ticor.evaluation import SPLITS
from ticor.imaging import BACKGROUND

SCHEMA = "ticor.dataset/1"
BUILDER_VERSION = 2
FIXTURE_CONCEPTS = {"emoji": 32, "tux": 24, "openclipart": 24, "photo": 16}
FIXTURE_PER_CLUSTER = 6
CHUNK = 24



# ---------------------------------------------------------------- small helpers


def _dump_jsonl(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _dump_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)


def _dump_json(path: Path, obj: object) -> None:
    _dump_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- options and result


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    subset: str = "full"  # "full" or "fixture"
    size: int = 128
    jobs: int = 0
    quiet: bool = False

    def identity(self) -> dict:
        return {
            "subset": self.subset,
            "image_size": self.size,
            "background": list(BACKGROUND),
            "render_version": RENDER_VERSION,
            "builder_version": BUILDER_VERSION,
        }


@dataclass
class BuildResult:
    manifest: dict
    seconds: float
    rendered: int  # pictures rendered in this run (0 when everything was reused)
    reused: bool  # the whole dataset was already up to date


# ---------------------------------------------------------------- subset


def select_fixture(concepts: list[Concept]) -> list[Concept]:
    """A few dozen concepts per family, taken as whole look-alike clusters so that hard
    negatives exist; chosen by hash, so the choice is stable."""
    chosen = []
    for family, wanted in FIXTURE_CONCEPTS.items():
        clusters: dict[str, list[Concept]] = defaultdict(list)
        for c in concepts:
            if c.family == family:
                clusters[c.hard_keys[0]].append(c)
        taken: list[Concept] = []
        for key in sorted(clusters, key=lambda k: stable_hash("fixture", k)):
            members = sorted(clusters[key], key=lambda c: stable_hash("fixture", c.key))
            taken.extend(members[:FIXTURE_PER_CLUSTER])
            if len(taken) >= wanted:
                break
        chosen.extend(taken[:wanted])
    return chosen


# ---------------------------------------------------------------- rendering


def _render_all(
    jobs: list[RenderJob], options: BuildOptions, work: Path, images: Path
) -> tuple[dict[str, RenderResult | str], int]:
    """Render every job not already in the index. Returns key -> image sha256 or skip result."""
    index_path = work / "render-index.jsonl"
    done: dict[str, RenderResult | str] = {}
    if index_path.exists():
        with index_path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from an interrupted run
                if row.get("sha256"):
                    if (images / row["sha256"][:2] / f"{row['sha256']}.png").exists():
                        done[row["key"]] = row["sha256"]
                else:
                    done[row["key"]] = RenderResult(row["key"], None, row["reason"])
    todo = [j for j in jobs if j.key not in done]
    progress = Progress("ticor data build: render", len(todo), options.quiet)
    workers = options.jobs or os.cpu_count() or 1
    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
    skipped_so_far = 0
    with index_path.open("a", encoding="utf-8") as index:

        def record(results: list[RenderResult]) -> None:
            nonlocal skipped_so_far
            for res in results:
                if res.png is None:
                    skipped_so_far += 1
                    done[res.key] = res
                    index.write(json.dumps({"key": res.key, "reason": res.reason}) + "\n")
                    continue
                digest = hashlib.sha256(res.png).hexdigest()
                target = images / digest[:2] / f"{digest}.png"
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
                    tmp.write_bytes(res.png)
                    os.replace(tmp, target)
                done[res.key] = digest
                index.write(json.dumps({"key": res.key, "sha256": digest}) + "\n")
            index.flush()
            progress.step(len(results), f"skipped {skipped_so_far}")

        if workers == 1 or len(chunks) <= 1:
            for chunk in chunks:
                record(render_many(chunk, options.size))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(render_many, chunk, options.size) for chunk in chunks]
                for future in as_completed(futures):
                    record(future.result())
    if todo:
        progress.close(f"skipped {skipped_so_far}")
    return done, len(todo)


def _inputs_identity(options: BuildOptions, used: Iterable[str]) -> dict:
    return {
        "options": options.identity(),
        "sources": {
            n: {"package": SOURCES[n].package, "version": SOURCES[n].version,
                "registry": SOURCES[n].registry, "sha256": SOURCES[n].sha256,
                "license": SOURCES[n].license}
            for n in sorted(used)
        },
    }


def up_to_date(out: Path, options: BuildOptions) -> dict | None:
    """The existing manifest, if the dataset in ``out`` was built from these inputs and is intact."""
    manifest_path = out / "manifest.json"
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError):
        return None
    if manifest.get("inputs") != _inputs_identity(options, SOURCES):
        return None
    for rel, digest in manifest.get("outputs", {}).items():
        path = out / rel
        if not path.exists() or sha256_file(path) != digest:
            return None
    with (out / "items.jsonl").open(encoding="utf-8") as fh:
        pictures = {json.loads(line)["image"] for line in fh}
    if manifest.get("images_sha256") != stable_hash(*sorted(Path(p).stem for p in pictures)):
        return None
    if not all((out / rel).is_file() for rel in pictures):
        return None  # a picture was deleted: rebuild (rendering resumes from the index)
    return manifest


def build(
    roots: dict[str, Path], options: BuildOptions, log: Callable[[str], None] = print
) -> BuildResult:
    started = time.monotonic()
    out = options.out
    existing = up_to_date(out, options)
    if existing is not None:
        return BuildResult(existing, time.monotonic() - started, 0, True)
    out.mkdir(parents=True, exist_ok=True)
    work, images_dir = out / ".work", out / "images"
    work.mkdir(exist_ok=True)
    images_dir.mkdir(exist_ok=True)
    # Any earlier manifest no longer describes what is on disk while we write.
    (out / "manifest.json").unlink(missing_ok=True)

    concepts, skipped, credits = catalog.all_concepts(roots)
    if options.subset == "fixture":
        concepts = select_fixture(concepts)
        skipped = []  # catalog-level skips concern concepts the fixture does not hold
    concepts.sort(key=lambda c: c.key)
    log(f"catalog: {len(concepts)} concepts, {sum(len(c.jobs) for c in concepts)} pictures to render")

    jobs = sorted({job.key: job for c in concepts for _, job in c.jobs}.values(), key=lambda j: j.key)
    done, rendered = _render_all(jobs, options, work, images_dir)

    images: dict[str, list[str]] = {}
    kept: list[Concept] = []
    with_images: dict[str, list[tuple[str, str]]] = {}
    for c in concepts:
        got = []
        for source, job in c.jobs:
            res = done[job.key]
            if isinstance(res, str):
                got.append((source, res))
            else:
                skipped.append(Skipped(source, job.key.split(":", 1)[1], res.reason))
        got = sorted(set(got))
        if not got:
            skipped.append(Skipped(c.family, c.key.split(":", 1)[1], "no picture rendered"))
            continue
        kept.append(c)
        images[c.key] = [d for _, d in got]
        with_images[c.key] = got

    group_of = group_concepts(kept, images)
    split_of = assign_splits(group_weights(kept, group_of, images))
    cid = {c.key: "c" + stable_hash("concept", c.key)[:12] for c in kept}
    records = [
        Record(c, with_images[c.key], group_of[i], split_of[group_of[i]])
        for i, c in enumerate(kept)
    ]

    pairs: dict[str, list[dict]] = {}
    pair_notes: Counter = Counter()
    for split in SPLITS:
        pairs[split], notes = make_pairs(records, split)
        pair_notes.update({f"{split}: {k}": v for k, v in notes.items()})
    verify(records, pairs)

    # ---- write
    licence_of = {str(done[job.key]): credits[job.key].license for c in kept for _, job in c.jobs
                  if job.key in credits and isinstance(done[job.key], str)}
    items = [
        {"image": image_path(d), "source": s, "concept": cid[r.concept.key], "family": r.concept.family,
         "group": r.group, "split": r.split, "license": licence_of.get(d, catalog.LICENSES[s])}
        for r in records for s, d in r.images
    ]
    texts = [
        {"concept": cid[r.concept.key], "group": r.group, "split": r.split, "lang": t.lang,
         "kind": t.kind, "text": t.text}
        for r in records for t in r.texts
    ]
    provenance = [
        {"image": image_path(str(done[job.key])), "source": s, "package": catalog.IMAGE_SOURCE_PACKAGE[s],
         "ref": job.key.split(":", 1)[1]}
        for r in records for s, job in r.concept.jobs if isinstance(done[job.key], str)
    ]
    items.sort(key=lambda x: (x["image"], x["concept"]))
    texts.sort(key=lambda x: (x["concept"], x["lang"], x["kind"], x["text"]))
    provenance.sort(key=lambda x: (x["image"], x["source"], x["ref"]))
    skipped_rows = sorted(
        ({"source": s.source, "ref": s.ref, "reason": s.reason} for s in skipped),
        key=lambda x: (x["source"], x["ref"], x["reason"]),
    )
    (out / "pairs").mkdir(exist_ok=True)
    _dump_jsonl(out / "items.jsonl", items)
    _dump_jsonl(out / "texts.jsonl", texts)
    _dump_jsonl(out / "provenance.jsonl", provenance)
    _dump_jsonl(out / "skipped.jsonl", skipped_rows)
    for split in SPLITS:
        _dump_jsonl(out / "pairs" / f"{split}.jsonl", pairs[split])
    _dump_text(out / "pairs" / "FORMAT.txt", PAIRS_FORMAT)

    referenced = {d for r in records for _, d in r.images}
    for path in sorted(images_dir.glob("*/*")):
        if path.name.endswith(".png") and path.stem in referenced:
            continue
        path.unlink()  # stale pictures of an earlier, different build, or temp files
    used_packages = {"cldr"} | {catalog.IMAGE_SOURCE_PACKAGE[s] for r in records for s, _ in r.images}
    license_hashes = write_licenses(out, roots, used_packages)
    image_counts = Counter(s for r in records for s, _ in r.images)
    photo_credits = sorted(
        (job.key.split(":", 1)[1], str(done[job.key]), credits[job.key])
        for r in records for _, job in r.concept.jobs if job.key in credits and isinstance(done[job.key], str))
    _dump_text(out / "ATTRIBUTION.md", attribution(image_counts, photo_credits))

    manifest = _manifest(options, records, pairs, skipped, pair_notes, referenced)
    outputs = {
        rel: sha256_file(out / rel)
        for rel in ["items.jsonl", "texts.jsonl", "provenance.jsonl", "skipped.jsonl",
                    "ATTRIBUTION.md", "pairs/FORMAT.txt"]
        + [f"pairs/{s}.jsonl" for s in SPLITS]
    }
    outputs.update({f"licenses/{k}": v for k, v in license_hashes.items()})
    manifest["outputs"] = dict(sorted(outputs.items()))
    manifest["images_sha256"] = stable_hash(*sorted(referenced))
    manifest["dataset_sha256"] = stable_hash(json.dumps(manifest["outputs"], sort_keys=True),
                                    manifest["images_sha256"])
    seconds = time.monotonic() - started
    _dump_json(out / "manifest.json", manifest)
    _dump_json(
        out / "build-log.json",
        {"seconds": round(seconds, 1), "rendered_this_run": rendered, "jobs": options.jobs or os.cpu_count(),
         "python": platform.python_version(), "pillow": _version("pillow"),
         "cairosvg": _version("cairosvg"), "numpy": _version("numpy")},
    )
    return BuildResult(manifest, seconds, rendered, False)


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _manifest(options: BuildOptions, records: list[Record], pairs: dict[str, list[dict]],
              skipped: list[Skipped], pair_notes: Counter, referenced: set[str]) -> dict:
    def nested(rows: Iterable[tuple[str, ...]]) -> dict:
        result: dict = {}
        for row in rows:
            node = result
            for key in row[:-1]:
                node = node.setdefault(key, {})
            node[row[-1]] = node.get(row[-1], 0) + 1
        return result

    images_by_split = {s: len({d for r in records if r.split == s for _, d in r.images}) for s in SPLITS}
    return {
        "schema": SCHEMA,
        "inputs": _inputs_identity(options, SOURCES),
        "image": {"size": options.size, "format": "PNG", "mode": "RGB", "background": list(BACKGROUND),
                  "exif_orientation": "applied before rendering",
                  "render": "crop to visible content, centre on a square with 6% margin, Lanczos resize"},
        "counts": {
            "images": len(referenced),
            "images_by_split": images_by_split,
            "images_by_source_split": nested((s, r.split) for r in records for s, _ in r.images),
            "concepts_by_family_split": nested((r.concept.family, r.split) for r in records),
            "groups_by_split": {s: len({r.group for r in records if r.split == s}) for s in SPLITS},
            "texts_by_split_lang": nested((r.split, t.lang) for r in records for t in r.texts),
            "pairs_by_split_lang_kind": nested(
                (s, p["lang"], p["negative"] or "positive") for s in SPLITS for p in pairs[s]
            ),
            "pairs_by_split": {s: len(pairs[s]) for s in SPLITS},
        },
        "skipped": nested((s.source, s.reason) for s in skipped),
        "pair_notes": dict(sorted(pair_notes.items())),
        "licenses": {s: catalog.LICENSES[s] for s in sorted({s for r in records for s, _ in r.images})},
        "pairs_format": PAIRS_FORMAT,
    }
