"""``ticor score --engine ray`` on the fixture with a local Ray (2 CPUs), row by row against the
local engine, and its resume: a partial part file is dropped and only missing ids are scored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_DATA, ticor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, fp32_bundle: Path) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ray-in")
    rows = []
    for split in ("test", "val", "train"):
        rows += [json.loads(x) for x in (FIXTURE_DATA / "pairs" / f"{split}.jsonl").read_text().splitlines()]
    rows = [{"id": f"r{i}", "text": r["text"], "image": str(FIXTURE_DATA / r["image"])}
            for i, r in enumerate(rows[:90])]
    rows += [{"id": "bad-missing", "text": "a cat", "image": "nope.png"},
             {"id": "bad-notext", "image": rows[0]["image"]}]
    inp = d / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    local = d / "local.jsonl"
    ticor("score", str(inp), "-o", str(local), "--bundle", str(fp32_bundle), "--no-cache", check=False)
    return inp, local


def _read_local(p: Path) -> dict[str, dict]:
    return {r["id"]: r for r in (json.loads(x) for x in p.read_text().splitlines())}


def _compare(ray_rows: list[dict], local: dict[str, dict]) -> None:
    assert sorted(r["id"] for r in ray_rows) == sorted(local)  # every id exactly once
    for r in ray_rows:
        want = local[r["id"]]
        assert r["status"] == want["status"], r["id"]
        if want["status"] == "ok":
            assert abs(r["score"] - want["score"]) <= 1e-6 and bool(r["match"]) == want["match"]


def test_ray_engine_writes_what_the_local_engine_writes(inputs, fp32_bundle: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    inp, local = inputs
    want = [json.loads(x) for x in local.read_text().splitlines()]
    for name in ("out.jsonl", "out.parquet"):
        out = tmp_path / name
        r = ticor("score", str(inp), "-o", str(out), "--engine", "ray", "--bundle", str(fp32_bundle), "--actors", "1",
                  "--cpus-per-actor", "1", check=False)
        assert r.returncode == 1 and "engine ray (local)" in r.stderr and "92 rows (90 ok, 2 failed)" in r.stderr
        assert out.is_file() and not out.with_name(out.name + ".ticor-ray-parts").exists()
        got = ([json.loads(x) for x in out.read_text().splitlines()] if out.suffix == ".jsonl"
               else pq.read_table(str(out)).to_pylist())
        assert [g["id"] for g in got] == [w["id"] for w in want]  # one file, in input order, the same columns
        assert list(got[0]) == list(want[0])
        _compare(got, _read_local(local))


def _crashed_run(inp: Path, out: Path, bundle: Path, rows: list[dict], keep: int) -> Path:
    """The parts folder a run leaves when it dies after Ray wrote parts for the first ``keep`` rows:
    one whole part, one cut off mid-write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ticor.bundle import read_manifest
    from ticor.resume import run_identity, write_state
    from ticor.tables import Columns

    parts = out.with_name(out.name + ".ticor-ray-parts")
    parts.mkdir()
    write_state(parts, run_identity(str(inp), Columns(), None, read_manifest(bundle)))
    whole = [dict(r, index=i) for i, r in enumerate(rows[:keep])]
    pq.write_table(pa.Table.from_pylist(whole), str(parts / "a-part.parquet"))
    pq.write_table(pa.Table.from_pylist([dict(r, index=keep + i) for i, r in enumerate(rows[keep:keep + 5])]),
                   str(parts / "b-part.parquet"))
    raw = (parts / "b-part.parquet").read_bytes()
    (parts / "b-part.parquet").write_bytes(raw[: len(raw) // 2])
    return parts


def test_ray_engine_resumes_without_duplicates(inputs, fp32_bundle: Path, tmp_path: Path) -> None:
    inp, local = inputs
    local_rows = [json.loads(x) for x in local.read_text().splitlines()]
    out = tmp_path / "out.jsonl"
    parts = _crashed_run(inp, out, fp32_bundle, local_rows, keep=40)
    args = ["score", str(inp), "-o", str(out), "--engine", "ray", "--bundle", str(fp32_bundle), "--actors", "1",
            "--cpus-per-actor", "1"]
    r = ticor(*args, check=False)
    assert r.returncode == 1 and "40 done before, 52 scored now" in r.stderr, r.stderr
    assert not parts.exists()
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["id"] for g in got] == [w["id"] for w in local_rows]
    _compare(got, _read_local(local))
    other = inp.with_name("other.jsonl")
    shutil.copyfile(inp, other)
    with other.open("a") as fh:
        fh.write(json.dumps({"id": "extra", "text": "x", "image": "y.png"}) + "\n")
    out2 = tmp_path / "out2.jsonl"
    _crashed_run(inp, out2, fp32_bundle, local_rows, keep=10)
    r = ticor("score", str(other), "-o", str(out2), "--engine", "ray", "--bundle", str(fp32_bundle), check=False)
    assert r.returncode == 2 and "refusing to resume" in r.stderr and "input_sha256" in r.stderr
    r = ticor("score", str(inp), "-o", str(out), "--engine", "ray", "--bundle", str(fp32_bundle), check=False)
    assert r.returncode == 2 and "exists; pass --overwrite" in r.stderr


def test_score_dataset_on_an_existing_ray_dataset(inputs, fp32_bundle: Path) -> None:
    import ray

    from ticor.ray_engine import score_dataset

    inp, local = inputs
    rows = [json.loads(x) for x in inp.read_text().splitlines()][:20]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        got = score_dataset(ray.data.from_items([{"id": r["id"], "text": r["text"], "image": r["image"]}
                                                 for r in rows]), fp32_bundle).take_all()
    finally:
        ray.shutdown()
    want = _read_local(local)
    _compare(got, {r["id"]: want[r["id"]] for r in rows})
