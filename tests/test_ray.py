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
    rows = [{"id": f"r{i}", "text": r["text"], "image": str(FIXTURE_DATA / r["image"])} for i, r in enumerate(rows[:90])]
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


def test_ray_engine_matches_the_local_engine_row_by_row(inputs, fp32_bundle: Path, tmp_path: Path) -> None:
    from ticor.ray_engine import read_output

    inp, local = inputs
    out = tmp_path / "out.parquet"
    r = ticor("score", str(inp), "-o", str(out), "--engine", "ray", "--bundle", str(fp32_bundle), "--actors", "1",
              "--cpus-per-actor", "1", check=False)
    assert r.returncode == 1 and "engine ray (local)" in r.stderr and "92 rows (90 ok, 2 failed)" in r.stderr
    _compare(read_output(out), _read_local(local))


def test_ray_engine_resumes_without_duplicates(inputs, fp32_bundle: Path, tmp_path: Path) -> None:
    from ticor.ray_engine import read_output

    inp, local = inputs
    out = tmp_path / "out.jsonl"
    args = ["score", str(inp), "-o", str(out), "--engine", "ray", "--bundle", str(fp32_bundle), "--actors", "1",
            "--cpus-per-actor", "1"]
    ticor(*args, check=False)
    parts = sorted(out.glob("*.json"))
    assert parts
    first = parts[0]
    lines = first.read_text().splitlines()
    first.unlink()  # as if the crash lost this part...
    (out / "zz-partial.json").write_text("\n".join(lines[:3]) + '\n{"id": "r', encoding="utf-8")  # ...and cut one
    r = ticor(*args, check=False)
    assert r.returncode == 1 and f"{92 - len(lines)} done before, {len(lines)} scored now" in r.stderr, r.stderr
    assert not (out / "zz-partial.json").exists()
    _compare(read_output(out), _read_local(local))
    other = inp.with_name("other.jsonl")
    shutil.copyfile(inp, other)
    with other.open("a") as fh:
        fh.write(json.dumps({"id": "extra", "text": "x", "image": "y.png"}) + "\n")
    r = ticor("score", str(other), "-o", str(out), "--engine", "ray", "--bundle", str(fp32_bundle), check=False)
    assert r.returncode == 2 and "refusing to resume" in r.stderr


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
