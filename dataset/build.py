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
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ticor.dataset import catalog
from ticor.dataset.catalog import Concept, Skipped, norm_text
from ticor.dataset.render import RENDER_VERSION, RenderJob, RenderResult, render_many
from ticor.dataset.sources import SOURCES, Source, sha256_file
from ticor.imaging import BACKGROUND

SCHEMA = "ticor.dataset/1"
BUILDER_VERSION = 1
SPLITS = ("train", "val", "test")
SPLIT_TARGETS = {"train": 0.8, "val": 0.1, "test": 0.1}
FIXTURE_CONCEPTS = {"emoji": 32, "tux": 24, "openclipart": 24}
FIXTURE_PER_CLUSTER = 6
CHUNK = 24

PAIRS_FORMAT = """\
One JSON object per line:
  id          unique pair id, e.g. "test-000123"
  text        the caption (str)
  image       path of the picture relative to the dataset directory
  label       1 if the text describes the picture, else 0
  lang        "en" or "zh"
  negative    null for positives, else "random" (another concept group) or
              "hard" (a look-alike: same emoji subgroup or sibling, same Tux or clip-art folder)
  text_kind   "name", "keywords", "sentence" or "title"
  family      "emoji", "tux" or "openclipart" (of the text's concept)
  image_source  which source drew the picture (noto, openmoji, fluent-flat, fluent-color, tux,
              openclipart)
Your own data needs only text, image and label (lang and negative are used in reports).
"""


class BuildError(RuntimeError):
    """The build produced data that breaks one of its guarantees."""


# ---------------------------------------------------------------- small helpers


def _h(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _rng(*parts: str) -> random.Random:
    return random.Random(int(_h(*parts)[:16], 16))


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


class Progress:
    """Rate-limited progress lines on stderr."""

    def __init__(self, label: str, total: int, quiet: bool) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self.done = 0
        self.start = self.last = time.monotonic()
        self.interval = 2.0 if sys.stderr.isatty() else 15.0

    def step(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.quiet or (now - self.last < self.interval and self.done < self.total):
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        print(
            f"[{self.label}] {self.done}/{self.total}  {rate:.0f}/s  ETA {eta:.0f}s  {extra}",
            file=sys.stderr,
            flush=True,
        )


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
        for key in sorted(clusters, key=lambda k: _h("fixture", k)):
            members = sorted(clusters[key], key=lambda c: _h("fixture", c.key))
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
    progress = Progress("render", len(todo), options.quiet)
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
    return done, len(todo)


# ---------------------------------------------------------------- groups and splits


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_concepts(concepts: list[Concept], images: dict[str, list[str]]) -> list[str]:
    """Group id per concept: concepts sharing a seed, a text, a picture or a noun are merged."""
    uf = _UnionFind(len(concepts))
    first: dict[str, int] = {}

    def link(token: str, i: int) -> None:
        if token in first:
            uf.union(first[token], i)
        else:
            first[token] = i

    for i, c in enumerate(concepts):
        link("seed:" + c.seed, i)
        for t in c.texts:
            link("text:" + norm_text(t.text), i)
        for digest in images[c.key]:
            link("image:" + digest, i)
        for noun in c.nouns:
            if noun:
                link("noun:" + noun, i)
    # A head noun joins the concept whose whole name it is ("bengal tiger" -> "tiger").
    for i, c in enumerate(concepts):
        if c.head and "noun:" + c.head in first:
            uf.union(first["noun:" + c.head], i)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(concepts)):
        members[uf.find(i)].append(i)
    group_of = [""] * len(concepts)
    for idx in members.values():
        gid = "g" + _h(*sorted(concepts[i].key for i in idx))[:12]
        for i in idx:
            group_of[i] = gid
    return group_of


def assign_splits(group_sizes: dict[str, int]) -> dict[str, str]:
    """Biggest groups first, each to the split furthest below its target share."""
    assigned = {s: 0 for s in SPLITS}
    total = 0
    split_of = {}
    for gid in sorted(group_sizes, key=lambda g: (-group_sizes[g], _h("split", g))):
        size = group_sizes[gid]
        total += size
        best = max(SPLITS, key=lambda s: (SPLIT_TARGETS[s] * total - assigned[s], -SPLITS.index(s)))
        split_of[gid] = best
        assigned[best] += size
    return split_of


# ---------------------------------------------------------------- pairs


@dataclass
class _Record:
    """A concept after rendering, with its group and split."""

    concept: Concept
    images: list[tuple[str, str]]  # (image source, sha256), sorted
    group: str
    split: str

    @property
    def texts(self) -> list[catalog.Text]:
        return self.concept.texts


def _image_path(digest: str) -> str:
    return f"images/{digest[:2]}/{digest}.png"


def make_pairs(records: list[_Record], split: str) -> tuple[list[dict], Counter]:
    """Positives for every text (and every picture), one negative per positive."""
    recs = sorted((r for r in records if r.split == split), key=lambda r: r.concept.key)
    positives_of: dict[str, set[str]] = defaultdict(set)  # normalised text -> picture hashes
    for r in recs:
        for t in r.texts:
            positives_of[norm_text(t.text)].update(d for _, d in r.images)
    by_hard: dict[str, list[_Record]] = defaultdict(list)
    by_seed: dict[str, list[_Record]] = defaultdict(list)
    for r in recs:
        for key in r.concept.hard_keys:
            by_hard[key].append(r)
        by_seed[r.concept.seed].append(r)
    notes: Counter = Counter()
    pairs: list[dict] = []
    seen_texts: set[str] = set()

    def add(text: catalog.Text, r: _Record, img: tuple[str, str], label: int, neg: str | None) -> None:
        """One pair of a text of ``r`` (the text's own concept) and a picture."""
        pairs.append(
            {
                "text": text.text,
                "lang": text.lang,
                "text_kind": text.kind,
                "family": r.concept.family,
                "image": _image_path(img[1]),
                "image_source": img[0],
                "label": label,
                "negative": neg,
            }
        )

    def fits(text_rec: _Record, other: _Record) -> bool:
        """Pictures the text may well describe, so never a negative: its toned pictures for a
        toneless emoji name, and concepts merged into its group by a shared noun, text or
        picture (the same thing from another source)."""
        c, o = text_rec.concept, other.concept
        if c.tone_base and not c.toned and c.tone_base == o.tone_base:
            return True
        return text_rec.group == other.group and c.seed != o.seed

    def negative(t: catalog.Text, r: _Record, want_hard: bool, rng: random.Random) -> None:
        forbidden = positives_of[norm_text(t.text)]
        if want_hard:
            pool: dict[str, _Record] = {}
            for key in r.concept.hard_keys:
                for o in by_hard[key]:
                    pool[o.concept.key] = o
            for o in by_seed[r.concept.seed]:  # tone and gender siblings
                pool[o.concept.key] = o
            candidates = [
                (o, img)
                for k, o in sorted(pool.items())
                if k != r.concept.key and not fits(r, o)
                for img in o.images
                if img[1] not in forbidden
            ]
            if candidates:
                _, img = rng.choice(candidates)
                add(t, r, img, 0, "hard")
                return
            notes["hard negative unavailable, used random"] += 1
        for _ in range(1000):
            o = recs[rng.randrange(len(recs))]
            if o.group == r.group:
                continue
            img = o.images[rng.randrange(len(o.images))]
            if img[1] not in forbidden:
                add(t, r, img, 0, "random")
                return
        notes["no negative found"] += 1

    for r in recs:
        rng = _rng("pairs", split, r.concept.key)
        texts = [t for t in r.texts if norm_text(t.text) not in seen_texts]
        seen_texts.update(norm_text(t.text) for t in texts)
        start = rng.randrange(len(r.images))
        plan: list[tuple[catalog.Text, tuple[str, str]]] = []
        for k, t in enumerate(texts):
            plan.append((t, r.images[(start + k) % len(r.images)]))
        planned = {img[1] for _, img in plan}
        for img in r.images:  # every picture appears in at least one positive
            if img[1] not in planned and r.texts:
                plan.append((r.texts[len(plan) % len(r.texts)], img))
                planned.add(img[1])
        hard_first = rng.random() < 0.5
        for k, (t, img) in enumerate(plan):
            add(t, r, img, 1, None)
            negative(t, r, (k % 2 == 0) == hard_first, rng)
    for i, p in enumerate(pairs):
        p["id"] = f"{split}-{i:06d}"
    return pairs, notes


# ---------------------------------------------------------------- verification


def verify(records: list[_Record], pairs: dict[str, list[dict]]) -> None:
    """Raise BuildError unless splits are disjoint and every label is right."""
    owner: dict[str, dict[str, str]] = {"group": {}, "image": {}, "text": {}}
    for r in records:
        tokens = {"group": [r.group], "image": [d for _, d in r.images],
                  "text": [norm_text(t.text) for t in r.texts]}
        for kind, values in tokens.items():
            for v in values:
                prev = owner[kind].setdefault(v, r.split)
                if prev != r.split:
                    raise BuildError(f"{kind} {v!r} is in both {prev} and {r.split}")
    positives: dict[str, set[str]] = defaultdict(set)
    for r in records:
        for t in r.texts:
            positives[norm_text(t.text)].update(_image_path(d) for _, d in r.images)
    for split, rows in pairs.items():
        for p in rows:
            truth = int(p["image"] in positives[norm_text(p["text"])])
            if truth != p["label"]:
                raise BuildError(f"pair {p['id']} is labelled {p['label']} but should be {truth}")
            if owner["image"].get(p["image"].split("/")[-1][:-4]) != split:
                raise BuildError(f"pair {p['id']} uses a picture from another split")


# ---------------------------------------------------------------- the build


def _licenses(out: Path, roots: dict[str, Path], used: set[str]) -> dict[str, str]:
    target = out / "licenses"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    shipped = {}
    for name in sorted(used):
        src: Source = SOURCES[name]
        for rel in src.license_files:
            dest = target / f"{name}-{Path(rel).name}"
            shutil.copyfile(roots[name] / rel, dest)
            shipped[dest.name] = sha256_file(dest)
    gpl = Path("/usr/share/common-licenses/GPL-2")
    if "tuxpaint-stamps" in used and gpl.exists():
        shutil.copyfile(gpl, target / "GPL-2")
        shipped["GPL-2"] = sha256_file(target / "GPL-2")
    return shipped


def _attribution(counts: Counter) -> str:
    lines = [
        "# Attribution",
        "",
        "The pictures and texts in this dataset come from the packages below, under their own",
        "licenses; the license files are in `licenses/`. Pictures are re-rendered (cropped,",
        "padded, resized, composited on white); texts are unchanged.",
        "",
        "| image source | package | license | pictures here |",
        "|---|---|---|---|",
    ]
    for source in sorted(counts):
        pkg = SOURCES[catalog.IMAGE_SOURCE_PACKAGE[source]]
        lines.append(
            f"| {source} | {pkg.registry} `{pkg.spec}` | {catalog.LICENSES[source]} | {counts[source]} |"
        )
    cldr = SOURCES["cldr"]
    lines += [
        f"| (texts) | {cldr.registry} `{cldr.spec}` | {cldr.license} | – |",
        "",
        "- **OpenMoji** – the open-source emoji and icon project, https://openmoji.org, "
        "License: CC BY-SA 4.0. The rendered OpenMoji pictures are adaptations under the same "
        "license.",
        "- **Tux Paint stamps** – © the Tux Paint developers and stamp authors (see "
        "`licenses/tuxpaint-stamps-copyright`), GPL-2.0-or-later; the full license text is "
        "`licenses/GPL-2`. Descriptions and their Chinese translations come from the same package.",
        "- **Noto Color Emoji** – © Google, SIL Open Font License 1.1.",
        "- **Fluent Emoji** – © Microsoft, MIT License (npm repackaging `fluentui-emoji`).",
        "- **Openclipart** – only drawings whose metadata dedicates them to the public domain.",
        "- **Unicode CLDR** – emoji names and keywords, Unicode License (DFS-2016).",
        "",
    ]
    return "\n".join(lines)


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
    if manifest.get("images_sha256") != _h(*sorted(Path(p).stem for p in pictures)):
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

    concepts, skipped = catalog.all_concepts(roots)
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
    group_sizes = Counter(group_of)
    split_of = assign_splits(dict(group_sizes))
    cid = {c.key: "c" + _h("concept", c.key)[:12] for c in kept}
    records = [
        _Record(c, with_images[c.key], group_of[i], split_of[group_of[i]])
        for i, c in enumerate(kept)
    ]

    pairs: dict[str, list[dict]] = {}
    pair_notes: Counter = Counter()
    for split in SPLITS:
        pairs[split], notes = make_pairs(records, split)
        pair_notes.update({f"{split}: {k}": v for k, v in notes.items()})
    verify(records, pairs)

    # ---- write
    items = [
        {"image": _image_path(d), "source": s, "concept": cid[r.concept.key], "family": r.concept.family,
         "group": r.group, "split": r.split, "license": catalog.LICENSES[s]}
        for r in records for s, d in r.images
    ]
    texts = [
        {"concept": cid[r.concept.key], "group": r.group, "split": r.split, "lang": t.lang,
         "kind": t.kind, "text": t.text}
        for r in records for t in r.texts
    ]
    provenance = [
        {"image": _image_path(str(done[job.key])), "source": s, "package": catalog.IMAGE_SOURCE_PACKAGE[s],
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
    license_hashes = _licenses(out, roots, used_packages)
    image_counts = Counter(s for r in records for s, _ in r.images)
    _dump_text(out / "ATTRIBUTION.md", _attribution(image_counts))

    manifest = _manifest(options, records, pairs, skipped, pair_notes, referenced)
    outputs = {
        rel: sha256_file(out / rel)
        for rel in ["items.jsonl", "texts.jsonl", "provenance.jsonl", "skipped.jsonl",
                    "ATTRIBUTION.md", "pairs/FORMAT.txt"]
        + [f"pairs/{s}.jsonl" for s in SPLITS]
    }
    outputs.update({f"licenses/{k}": v for k, v in license_hashes.items()})
    manifest["outputs"] = dict(sorted(outputs.items()))
    manifest["images_sha256"] = _h(*sorted(referenced))
    manifest["dataset_sha256"] = _h(json.dumps(manifest["outputs"], sort_keys=True),
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


def _manifest(options: BuildOptions, records: list[_Record], pairs: dict[str, list[dict]],
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
