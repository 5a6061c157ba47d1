"""``ticor score`` and ``ticor rank`` as a user runs them: real subprocesses on a real bundle.

Every input format, bad rows of each kind, SIGKILL mid-run then resume (exactly one row per
id, identical to an uninterrupted run), a full disk (the file-size limit of the process),
stdin to stdout, resume refusing another input or bundle, exit codes.
"""

from __future__ import annotations

import csv
import json
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_DATA, ticor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rows(tmp_path_factory, fp32_bundle: Path) -> tuple[list[dict], Path]:
    """Fixture test+val pairs with relative image paths, plus one bad row of each kind."""
    d = tmp_path_factory.mktemp("in")
    pairs = []
    for split in ("test", "val", "train"):
        pairs += [json.loads(x) for x in (FIXTURE_DATA / "pairs" / f"{split}.jsonl").read_text().splitlines()]
    (d / "images").symlink_to(FIXTURE_DATA / "images")
    out = [{"id": f"r{i}", "text": p["text"], "image": p["image"]} for i, p in enumerate(pairs[:150])]
    (d / "broken.jpg").write_bytes((FIXTURE_DATA / out[0]["image"]).read_bytes()[:200])
    (d / "empty.png").write_bytes(b"")
    shutil.copyfile(FIXTURE_DATA / out[0]["image"], d / "fine.png")
    out += [
        {"id": "bad-missing", "text": "a cat", "image": "no/such.png"},
        {"id": "bad-decode", "text": "a cat", "image": "broken.jpg"},
        {"id": "bad-empty", "text": "a cat", "image": "empty.png"},
        {"id": "bad-notext", "text": None, "image": "fine.png"},
        {"id": "empty-text", "text": "", "image": "fine.png"},
    ]
    return out, d


def _write(rows: list[dict], path: Path) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix in (".csv", ".tsv"):
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["id", "text", "image"], delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), str(path))
    return path


def _read(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()


def _fix(d: Path, bundle: Path) -> list[str]:
    return ["--bundle", str(bundle), "--no-cache", "--image-root", str(d)]


def test_every_format_in_and_out_gives_the_same_rows(rows, fp32_bundle: Path, tmp_path: Path) -> None:
    data, d = rows
    base = None
    for suffix_in, suffix_out in ((".jsonl", ".jsonl"), (".csv", ".csv"), (".tsv", ".parquet"),
                                  (".parquet", ".jsonl")):
        src = data if suffix_in != ".csv" else [dict(r, text=r["text"] if r["text"] is not None else "") for r in data]
        inp = _write(src, tmp_path / f"in{suffix_in}")
        out = tmp_path / f"out-{suffix_in[1:]}{suffix_out}"
        r = ticor("score", str(inp), "-o", str(out), *_fix(d, fp32_bundle), check=False)
        assert r.returncode == 1 and "rows failed" in r.stderr, r.stderr
        assert f"{len(data)} rows" in r.stderr and "providers CPUExecutionProvider" in r.stderr
        got = {x["id"]: x for x in _read(out)}
        assert len(got) == len(data)
        statuses = {k: v["status"] for k, v in got.items() if k.startswith(("bad", "empty"))}
        want = {"bad-missing": "missing", "bad-decode": "decode_error", "bad-empty": "decode_error",
                "empty-text": "ok"}
        # CSV/TSV have no null: the missing text is written as "", an empty text (scored, flagged)
        want["bad-notext"] = "ok" if suffix_in in (".csv", ".tsv") else "bad_input"
        assert statuses == want, (suffix_in, statuses)
        assert got["empty-text"]["flags"] == "empty"
        scores = {k: float(v["score"]) for k, v in got.items() if v["status"] == "ok" and k.startswith("r")}
        assert len(scores) == 150
        if base is None:
            base = scores
        else:
            assert max(abs(scores[k] - base[k]) for k in base) < 1e-6


def test_sigkill_then_resume_gives_each_row_once_identical_to_a_clean_run(rows, fp32_bundle: Path,
                                                                          tmp_path: Path) -> None:
    data, d = rows
    big = [dict(r, id=f"{r['id']}-{k}") for k in range(8) for r in data]  # 1240 rows
    inp = _write(big, tmp_path / "big.jsonl")
    clean = tmp_path / "clean.jsonl"
    ticor("score", str(inp), "-o", str(clean), *_fix(d, fp32_bundle), "--shard-rows", "64", check=False)
    out = tmp_path / "resumed.jsonl"
    cmd = [sys.executable, "-m", "ticor", "score", str(inp), "-o", str(out), *_fix(d, fp32_bundle),
           "--shard-rows", "64", "--batch-size", "16"]
    parts = out.with_name(out.name + ".ticor-parts")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(parts.glob("shard-*"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = sorted(parts.glob("shard-*"))
    assert len(committed) >= 3 and not out.exists()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "resumed after" in r.stderr, r.stderr
    assert not parts.exists()
    a, b = _read(clean), _read(out)
    assert [x["id"] for x in b] == [x["id"] for x in big]  # each id once, in input order
    assert [(x["id"], x["status"], x["match"]) for x in a] == [(x["id"], x["status"], x["match"]) for x in b]
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b) if x["status"] == "ok") < 1e-6


def test_ctrl_c_keeps_committed_shards_and_exits_130(rows, fp32_bundle: Path, tmp_path: Path) -> None:
    data, d = rows
    # enough rows that the run is still going when its second shard lands (on a loaded machine a
    # short run could finish, and remove its parts, between two looks)
    inp = _write([dict(r, id=f"{r['id']}-{k}") for k in range(60) for r in data], tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    parts = out.with_name(out.name + ".ticor-parts")
    # the child gets the default Ctrl-C action even where this test process ignores SIGINT (an
    # earlier in-process Ray session leaves it ignored, and children inherit an ignored signal)
    proc = subprocess.Popen([sys.executable, "-m", "ticor", "score", str(inp), "-o", str(out),
                             *_fix(d, fp32_bundle), "--shard-rows", "32", "--batch-size", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(parts.glob("shard-*"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "run the same command to resume" in err, err[-2000:]
    assert list(parts.glob("shard-*"))


def test_a_different_input_or_bundle_refuses_to_resume(rows, fp32_bundle: Path, tmp_path: Path) -> None:
    data, d = rows
    inp = _write(data, tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    parts = out.with_name(out.name + ".ticor-parts")
    parts.mkdir()
    (parts / "state.json").write_text(json.dumps({"version": 1, "input_sha256": "0" * 64}))
    r = ticor("score", str(inp), "-o", str(out), *_fix(d, fp32_bundle), check=False)
    assert r.returncode == 2 and "refusing to resume" in r.stderr and "input_sha256" in r.stderr
    r = ticor("score", str(inp), "-o", str(out), *_fix(d, fp32_bundle), "--overwrite", check=False)
    assert r.returncode == 1 and len(_read(out)) == len(data)
    r = ticor("score", str(inp), "-o", str(out), *_fix(d, fp32_bundle), check=False)
    assert r.returncode == 2 and "exists; pass --overwrite" in r.stderr


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (6000, resource.RLIM_INFINITY))


def test_full_disk_discards_the_partial_shard_and_keeps_committed_work(rows, fp32_bundle: Path,
                                                                       tmp_path: Path) -> None:
    data, d = rows
    long_row = {"id": "L" * 7000, "text": "a cat", "image": data[0]["image"]}  # its shard outgrows the limit
    data = data[:64] + [long_row] + data[64:100]
    inp = _write(data, tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    parts = out.with_name(out.name + ".ticor-parts")
    cmd = [sys.executable, "-m", "ticor", "score", str(inp), "-o", str(out), *_fix(d, fp32_bundle),
           "--shard-rows", "16", "--batch-size", "16"]
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_limit_file_size, check=False)
    assert r.returncode == 1 and "could not write" in r.stderr and "partial shard was discarded" in r.stderr, r.stderr
    shards = sorted(parts.glob("shard-*"))
    assert len(shards) == 4 and not list(parts.glob(".tmp-*")) and not out.exists()
    for s in shards:  # every committed shard is whole
        assert all(json.loads(x)["id"] for x in s.read_text().splitlines())
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)  # space back: resume
    assert r.returncode == 0 and "resumed after 64" in r.stderr and "0 failed" in r.stderr
    assert [x["id"] for x in _read(out)] == [x["id"] for x in data]


def test_stdin_to_stdout_streams_jsonl(rows, fp32_bundle: Path) -> None:
    data, d = rows
    text = "".join(json.dumps(r) + "\n" for r in data[:20]) + "this is not json\n"
    r = subprocess.run([sys.executable, "-m", "ticor", "score", "-", *_fix(d, fp32_bundle)], input=text,
                       capture_output=True, text=True, check=False)
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 1 and len(out) == 21
    assert [x["id"] for x in out[:20]] == [x["id"] for x in data[:20]]
    assert out[20]["status"] == "bad_input" and "bad JSON" in out[20]["error"]
    assert set(out[0]) == {"id", "score", "match", "status", "error", "flags"}


def test_bad_arguments_write_nothing_and_exit_2(rows, fp32_bundle: Path, tmp_path: Path) -> None:
    data, _d = rows
    inp = _write(data, tmp_path / "in.csv")
    out = tmp_path / "o.jsonl"
    for args, msg in ((["--text-col", "caption"], "no column 'caption'"),
                      (["--bundle", str(tmp_path)], "not a ticor bundle"),
                      (["--provider", "cuda"], "not available")):
        full = ["score", str(inp), "-o", str(out), "--no-cache", *args]
        if "--bundle" not in args:
            full += ["--bundle", str(fp32_bundle)]
        r = ticor(*full, check=False)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)
        assert not out.exists() and not out.with_name(out.name + ".ticor-parts").exists()
    r = ticor("score", str(tmp_path / "in.xlsx"), "--bundle", str(fp32_bundle), check=False)
    assert r.returncode == 2


def test_max_failures_stops_early(rows, fp32_bundle: Path, tmp_path: Path) -> None:
    _data, d = rows
    bad = [{"id": f"b{i}", "text": "x", "image": "no/such.png"} for i in range(200)]
    inp = _write(bad, tmp_path / "bad.jsonl")
    r = ticor("score", str(inp), "-o", str(tmp_path / "o.jsonl"), *_fix(d, fp32_bundle), "--max-failures", "10",
              "--batch-size", "16", check=False)
    assert r.returncode == 1 and "over --max-failures 10" in r.stderr


def test_a_caption_over_the_csv_field_limit_is_one_row_and_the_rest_is_scored(rows, fp32_bundle: Path,
                                                                              tmp_path: Path) -> None:
    data, d = rows
    long_caption = "a red apple on a wooden table, " * 6000  # about 190 KB, over csv's default 128 KiB
    src = [dict(r, text=r["text"] or "") for r in data[:10]] + [{"id": "long", "text": long_caption,
                                                                  "image": data[0]["image"]}]
    inp = _write(src + [dict(r, text=r["text"] or "") for r in data[10:20]], tmp_path / "in.csv")
    out = tmp_path / "out.jsonl"
    r = ticor("score", str(inp), "-o", str(out), *_fix(d, fp32_bundle), check=False)
    assert r.returncode == 0, r.stderr
    got = {x["id"]: x for x in _read(out)}
    assert len(got) == 21 and got["long"]["status"] == "ok" and got["long"]["flags"] == "cut"


def test_duplicate_ids_are_refused_before_anything_is_written(rows, fp32_bundle: Path, tmp_path: Path) -> None:
    data, d = rows
    dup = data[:5] + [dict(data[7], id=data[2]["id"])] + data[8:12]
    for suffix in (".jsonl", ".csv"):
        inp = _write([dict(r, text=r["text"] or "") for r in dup], tmp_path / f"in{suffix}")
        out = tmp_path / f"out{suffix}.jsonl"
        r = ticor("score", str(inp), "-o", str(out), *_fix(d, fp32_bundle), check=False)
        assert r.returncode == 2 and f"rows 3 and 6 have the same id {data[2]['id']!r}" in r.stderr, r.stderr
        assert not out.exists() and not out.with_name(out.name + ".ticor-parts").exists()
    # a stream cannot be checked first: the repeated id is that row's status, the rest is scored
    text = "".join(json.dumps(r) + "\n" for r in dup)
    r = subprocess.run([sys.executable, "-m", "ticor", "score", "-", *_fix(d, fp32_bundle)], input=text,
                       capture_output=True, text=True, check=False)
    got = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 1 and len(got) == len(dup)
    assert got[5]["status"] == "bad_input" and "already used by row 3" in got[5]["error"]
    assert [g["status"] for g in got if g is not got[5]] == ["ok"] * (len(dup) - 1)


def test_invalid_utf8_in_a_csv_is_flagged_replaced(rows, fp32_bundle: Path, tmp_path: Path) -> None:
    data, d = rows
    inp = tmp_path / "in.csv"
    lines = [b"id,text,image", b"good,a cat," + data[0]["image"].encode(),
             b"broken,a c\xffat \xe4\xb8," + data[0]["image"].encode(), b"id-\xfe,a cat," + data[0]["image"].encode()]
    inp.write_bytes(b"\n".join(lines) + b"\n")
    r = ticor("score", str(inp), *_fix(d, fp32_bundle), check=False)
    assert r.returncode == 0, r.stderr
    got = [json.loads(x) for x in r.stdout.splitlines()]
    assert [g["id"] for g in got] == ["good", "broken", "id-\ufffd"]
    assert [g["flags"] for g in got] == ["", "replaced", ""]
    assert got[1]["score"] != got[0]["score"]  # scored as the text it is (with U+FFFD), not dropped


def test_rank_over_a_folder_reads_the_embedding_cache(fp32_bundle: Path, tmp_path: Path) -> None:
    import hashlib
    import sqlite3

    import numpy as np

    env = {"TICOR_CACHE": str(tmp_path / "cache")}
    args = ["rank", "--text", "a red apple", "--images", str(FIXTURE_DATA / "images"), "-k", "5",
            "--bundle", str(fp32_bundle)]
    first = ticor(*args, env=env)
    hits = [json.loads(x) for x in first.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits == sorted(hits, key=lambda h: -h["score"])
    pictures = list((FIXTURE_DATA / "images").glob("*/*.png"))
    db = sqlite3.connect(tmp_path / "cache" / "embeddings.sqlite")
    assert db.execute("SELECT COUNT(*) FROM emb").fetchone()[0] == len(pictures) + 1  # every picture, one text
    # give every stored picture the vector of the last-ranked hit: a second run that reads the cache
    # must then score all pictures alike; one that recomputed them would print the first run again
    key = hashlib.sha256(Path(hits[-1]["image"]).read_bytes()).hexdigest()
    scope, vec = db.execute("SELECT scope, vec FROM emb WHERE key = ?", (key,)).fetchone()
    assert db.execute("UPDATE emb SET vec = ? WHERE scope = ?", (vec, scope)).rowcount == len(pictures)
    db.commit()
    db.close()
    second = [json.loads(x) for x in ticor(*args, env=env).stdout.splitlines()]
    assert len({round(h["score"], 6) for h in second}) == 1
    assert np.isclose(second[0]["score"], hits[-1]["score"], atol=1e-6)
    texts = tmp_path / "texts.txt"
    texts.write_text("a red apple\na cat\n一只猫\n", encoding="utf-8")
    pic = min(pictures)
    r = ticor("rank", "--image", str(pic), "--texts", str(texts), "-k", "2", "--bundle", str(fp32_bundle),
              env=env)
    assert len(r.stdout.splitlines()) == 2
    r = ticor("rank", "--text", "x", "--bundle", str(fp32_bundle), check=False)
    assert r.returncode == 2 and "--images DIR" in r.stderr
