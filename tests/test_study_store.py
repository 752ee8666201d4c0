"""Study store: content ids, shard assignment, crash-safe shard files (a real SIGKILL), exactly-once reading,
deterministic parquet merge, status. No torch."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hfsoup.errors import HfSoupError
from hfsoup.study import store
from hfsoup.study.store import (ShardWriter, completed_ids, merge, parse_shard, read_rows, row_id, shard_of, status,
                                write_table)

REPO = Path(__file__).resolve().parents[1]


def shard_path(out: Path, name: str) -> Path:
    return out / "shards" / f"{name}.jsonl"


def rows_for(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"row_id": row_id(f"a{i}", f"b{i}", 0.5, ["fp"]), "status": "ok", "model_a": f"a{i}",
             "alpha": 0.5, "soup_acc": rng.random(), "shared_epochs": rng.randrange(300), "finished_at": 1000.0 + i}
            for i in range(n)]


# ------------------------------------------------------------------------------------------------------------ ids
def test_row_id_fixed_value_and_determinism():
    canonical = '{"alpha":"0.5","fingerprints":["f1","f2"],"models":["sha_a","sha_b"]}'
    expected = hashlib.sha256(canonical.encode()).hexdigest()[:20]
    assert row_id("sha_a", "sha_b", 0.5, ["f1", "f2"]) == expected
    assert row_id("sha_a", "sha_b", 0.5, ("f2", "f1")) == expected  # fingerprint order does not matter
    assert row_id("sha_a", "sha_b", 0.5000000001, ["f1", "f2"]) == expected  # rounded to 6 decimals
    assert len(expected) == store.ROW_ID_HEX == 20
    # Same value in a fresh interpreter (no hash randomisation involved).
    code = "from hfsoup.study.store import row_id; print(row_id('sha_a', 'sha_b', 0.5, ['f1', 'f2']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}, cwd=REPO)
    assert out.stdout.strip() == expected


def test_row_id_sensitive_to_every_input():
    base = row_id("a", "b", 0.5, ["f"])
    variants = [row_id("b", "a", 0.5, ["f"]),  # ordered pair: the caller canonicalises
                row_id("a", "c", 0.5, ["f"]), row_id("c", "b", 0.5, ["f"]), row_id("a", "b", 0.25, ["f"]),
                row_id("a", "b", 0.500001, ["f"]), row_id("a", "b", 0.5, ["g"]), row_id("a", "b", 0.5, ["f", "g"]),
                row_id("a", "b", 0.5, [])]
    assert len({base, *variants}) == len(variants) + 1
    assert row_id("a", "b", -0.0, []) == row_id("a", "b", 0, [])
    assert row_id("a", "b", 0.1 + 0.2, []) == row_id("a", "b", 0.3, [])
    with pytest.raises(HfSoupError):
        row_id("a", "b", float("nan"), [])
    with pytest.raises(TypeError):
        row_id("a", "b", 0.5, "fingerprint")


def test_shard_of_partitions_and_is_stable():
    ids = [row_id(f"m{i}", f"m{j}", 0.5, ["fp"]) for i in range(30) for j in range(i + 1, 30)]
    for n in (1, 2, 3, 7, 16):
        parts = [{r for r in ids if shard_of(r, n) == k} for k in range(n)]
        assert sum(len(p) for p in parts) == len(ids) and set().union(*parts) == set(ids)  # disjoint, covering
        if n <= 7:
            assert all(parts), "every shard gets work with 435 ids"
    assert shard_of("00000000000000ff" + "0000", 16) == 0xFF % 16
    assert [shard_of(r, 5) for r in ids] == [int(r[:16], 16) % 5 for r in ids]
    with pytest.raises(ValueError):
        shard_of(ids[0], 0)


def test_parse_shard():
    assert parse_shard("3/16") == (3, 16)
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard(" 2 / 4 ") == (2, 4)
    for bad in ("16/16", "-1/4", "1/0", "3", "a/b", "1/2/3", ""):
        with pytest.raises(HfSoupError, match="--shard takes i/n with 0 <= i < n") as info:
            parse_shard(bad)
        assert repr(bad) in str(info.value) and "\n" not in str(info.value)


# -------------------------------------------------------------------------------------------------------- writing
def test_append_read_round_trip(tmp_path):
    rows = rows_for(5)
    rows.append({"row_id": "f" * 20, "status": "failed", "error": "non-finite soup", "soup_acc": None})
    with ShardWriter(tmp_path, "rank0") as w:
        for row in rows:
            w.append(row)
    assert w.rows_written == 6
    assert read_rows(tmp_path) == sorted(rows, key=lambda r: r["row_id"])
    text = shard_path(tmp_path, "rank0").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 6
    assert completed_ids(tmp_path) == {r["row_id"] for r in rows}
    assert completed_ids(tmp_path, include_failed=False) == {r["row_id"] for r in rows[:5]}
    assert read_rows(tmp_path / "nothing-here") == []


def test_append_validates_and_nonfinite_become_null(tmp_path):
    np = pytest.importorskip("numpy")
    with ShardWriter(tmp_path, "w") as w:
        w.append({"row_id": "a" * 20, "status": "ok", "nan": float("nan"), "inf": float("inf"),
                  "ninf": -math.inf, "np": np.float32(0.25), "npnan": np.float64("nan"), "flag": np.bool_(True)})
        for bad in ({"status": "ok"}, {"row_id": "x", "status": "done"}, {"row_id": "x", "status": "failed"},
                    {"row_id": "x", "status": "ok", "v": [1, 2]}):
            with pytest.raises((ValueError, TypeError)):
                w.append(bad)
    line = shard_path(tmp_path, "w").read_text()
    assert "NaN" not in line and "Infinity" not in line
    (row,) = read_rows(tmp_path)
    assert row == {"row_id": "a" * 20, "status": "ok", "nan": None, "inf": None, "ninf": None, "np": 0.25,
                   "npnan": None, "flag": True}
    table = pq.read_table(merge(tmp_path))
    assert table.column("nan").null_count == 1 and table.column("np").to_pylist() == [0.25]


def test_torn_tail_ignored_then_repaired(tmp_path):
    rows = rows_for(3)
    with ShardWriter(tmp_path, "w") as w:
        for row in rows[:2]:
            w.append(row)
    path = shard_path(tmp_path, "w")
    full = json.dumps(rows[2], sort_keys=True)
    with open(path, "ab") as f:
        f.write(full[: len(full) // 2].encode())  # what a write interrupted by SIGKILL leaves
    assert [r["row_id"] for r in read_rows(tmp_path)] == sorted(r["row_id"] for r in rows[:2])
    assert status(tmp_path).ignored_lines == 1
    with ShardWriter(tmp_path, "w") as w:  # truncates the torn tail, then appends on a fresh line
        w.append(rows[2])
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert read_rows(tmp_path) == sorted(rows, key=lambda r: r["row_id"])
    assert status(tmp_path).ignored_lines == 0


def test_same_shard_twice_is_refused(tmp_path):
    pytest.importorskip("fcntl")
    with ShardWriter(tmp_path, "w"):
        with pytest.raises(HfSoupError, match="another process is writing"):
            ShardWriter(tmp_path, "w")
    with ShardWriter(tmp_path, "w") as w:  # released on close
        w.append(rows_for(1)[0])


def test_sigkill_mid_run_leaves_only_complete_rows(tmp_path):
    child = textwrap.dedent(f"""
        import sys
        from hfsoup.study.store import ShardWriter
        w = ShardWriter({str(tmp_path)!r}, "victim")
        i = 0
        while True:
            w.append({{"row_id": "%020x" % i, "status": "ok", "i": i, "pad": "x" * (1000 + 37 * (i % 200))}})
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=REPO, stderr=subprocess.PIPE)
    path = shard_path(tmp_path, "victim")
    try:
        deadline = time.monotonic() + 120
        while not (path.exists() and path.stat().st_size > 200_000):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "child wrote nothing"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    rows = read_rows(tmp_path)
    n = len(rows)
    assert n > 50
    assert [r["i"] for r in sorted(rows, key=lambda r: r["i"])] == list(range(n))  # no gap, no duplicate
    assert all(r["pad"] == "x" * (1000 + 37 * (r["i"] % 200)) for r in rows)  # every row complete
    with ShardWriter(tmp_path, "victim") as w:  # lock released by the kernel; torn tail (if any) repaired
        w.append({"row_id": "%020x" % n, "status": "ok", "i": n, "pad": ""})
    lines = path.read_bytes().split(b"\n")
    assert lines.pop() == b"" and all(json.loads(line) for line in lines)
    assert len(read_rows(tmp_path)) == n + 1 == len(lines)


# -------------------------------------------------------------------------------------------------------- reading
def test_duplicates_collapse_ok_preferred(tmp_path):
    rid, other = "1" * 20, "2" * 20
    with ShardWriter(tmp_path, "a") as w:
        w.append({"row_id": rid, "status": "failed", "error": "boom"})
        w.append({"row_id": other, "status": "ok", "v": 1})
    with ShardWriter(tmp_path, "b") as w:
        w.append({"row_id": rid, "status": "ok", "v": 2})
        w.append({"row_id": other, "status": "ok", "v": 3})  # equal status: the first (shard "a") wins
        w.append({"row_id": "3" * 20, "status": "failed", "error": "first"})
        w.append({"row_id": "3" * 20, "status": "failed", "error": "second"})
    rows = {r["row_id"]: r for r in read_rows(tmp_path)}
    assert len(rows) == 3
    assert rows[rid] == {"row_id": rid, "status": "ok", "v": 2}
    assert rows[other]["v"] == 1 and rows["3" * 20]["error"] == "first"
    assert completed_ids(tmp_path, include_failed=False) == {rid, other}
    st = status(tmp_path)
    assert (st.done, st.failed, st.per_shard) == (2, 1, {"a": 2, "b": 4})


# -------------------------------------------------------------------------------------------------------- parquet
def test_merge_bytes_independent_of_order_and_split(tmp_path):
    rows = rows_for(40)
    rows[3]["status"], rows[3]["error"], rows[3]["soup_acc"] = "failed", "non-finite", None
    rows[7]["extra"] = "only here"
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    one, two = tmp_path / "one", tmp_path / "two"
    with ShardWriter(one, "rank0") as w:
        for row in rows:
            w.append(row)
    writers = [ShardWriter(two, f"s{k}") for k in range(3)]
    for row in shuffled:
        writers[shard_of(row["row_id"], 3)].append(row)
    for w in writers:
        w.close()
    a, b = merge(one).read_bytes(), merge(two).read_bytes()
    assert a == b
    assert merge(one).read_bytes() == a  # rewrite: same bytes
    assert [p.name for p in one.iterdir() if p.name.endswith(".tmp")] == []

    table = pq.read_table(one / "pairs.parquet")
    assert table.column_names[:2] == ["row_id", "status"] and set(table.column_names) == set(rows[0]) | {"error",
                                                                                                          "extra"}
    assert table.column("row_id").to_pylist() == sorted(r["row_id"] for r in rows)
    assert table.schema.field("shared_epochs").type == pa.int64()
    assert table.schema.field("soup_acc").type == pa.float64()
    assert table.column("extra").null_count == 39 and table.column("error").null_count == 39

    by_acc = pq.read_table(merge(one, table_name="by_acc", order_by=("shared_epochs", "soup_acc")))
    keys = list(zip(by_acc.column("shared_epochs").to_pylist(), by_acc.column("row_id").to_pylist()))
    assert keys[0][0] == min(r["shared_epochs"] for r in rows)
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)


def test_write_table_types(tmp_path):
    rows = [{"i": 1, "mix": 1, "b": True, "s": "x", "none": None, "f": float("nan")},
            {"i": 2, "mix": 2.5, "b": None, "s": None, "none": None, "f": 1.0}]
    table = pq.read_table(write_table(tmp_path / "models.parquet", rows, leading=("s",)))
    assert table.column_names == ["s", "i", "mix", "b", "none", "f"]
    assert [table.schema.field(c).type for c in table.column_names] == [
        pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.null(), pa.float64()]
    assert table.column("mix").to_pylist() == [1.0, 2.5] and table.column("f").to_pylist() == [None, 1.0]
    with pytest.raises(HfSoupError, match="'bad' mixes"):
        write_table(tmp_path / "x.parquet", [{"bad": 1}, {"bad": "one"}])
    assert not (tmp_path / "x.parquet").exists()
    empty = pq.read_table(merge(tmp_path / "empty"))
    assert empty.num_rows == 0 and empty.column_names == ["row_id", "status"]


def test_merged_table_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    with ShardWriter(tmp_path, "w") as w:
        for row in rows_for(4):
            w.append(row)
    ds = datasets.load_dataset("parquet", data_files=str(merge(tmp_path)), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 4 and ds.column_names[:2] == ["row_id", "status"]


# --------------------------------------------------------------------------------------------------------- status
def test_status_counts_and_throughput(tmp_path):
    rows = rows_for(5)  # finished_at 1000..1004 → 4 intervals in 4 s
    rows.append({"row_id": "e" * 20, "status": "failed", "error": "incompatible", "finished_at": 5000.0})
    with ShardWriter(tmp_path, "r0") as w:
        for row in rows[:3]:
            w.append(row)
    with ShardWriter(tmp_path, "r1") as w:
        for row in rows[3:]:
            w.append(row)
    st = status(tmp_path, total=10)
    assert (st.done, st.failed, st.remaining, st.total) == (5, 1, 4, 10)
    assert st.per_shard == {"r0": 3, "r1": 3}
    assert st.throughput == pytest.approx(1.0)  # failed row's time is not counted
    assert st.failures == [("e" * 20, "incompatible")]
    assert "5 done" in st.summary() and "4 remaining of 10" in st.summary()
    assert status(tmp_path).remaining is None

    one = tmp_path / "one"
    with ShardWriter(one, "r0") as w:
        w.append(rows[0])
    assert status(one).throughput is None
    with pytest.raises(HfSoupError, match="no study folder"):
        status(tmp_path / "missing")
