"""Ingest and read speed against bare pyarrow on ~10 million minute bars (run by hand; prints figures, not a test).

    .venv/bin/python bench/bench_ingest.py [--symbols 20] [--sessions 1300] [--runs 3] [--keep DIR]

Writes the same random-walk minute bars as bench_store.py to a CSV (ISO timestamps with a Z) and a Parquet file,
then times each job in this process, best of `--runs`, quantlab and pyarrow alternating:

- `quantlab data ingest FILE` as the CLI runs it (load_file: read, parse, coerce; write_bars: validate, partition,
  write, manifest), against a bare `pyarrow` read of the same file and `pq.write_table` of it (no checks at all);
- `BarStore.read_bars()` of everything, against a bare `pq.read_table(the store's files).to_pandas()`.

Goal (#17 item 20): each ratio within 1.5x, validation included.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench_store import minute_bars
from quantlab import cli
from quantlab.data.store import BarStore


def best(jobs, runs: int) -> list[float]:
    "Best time of each job, the jobs run alternately (noise from the machine falls on all of them alike)."
    times = [[] for _ in jobs]
    for _ in range(runs):
        for t, f in zip(times, jobs):
            t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)
    return [min(t) for t in times]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=1300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", default=None, help="work in this directory and keep it (default: a temp dir, removed)")
    a = ap.parse_args(argv)
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        files = {"csv": work / "bars.csv", "parquet": work / "bars.parquet"}
        if not all(f.exists() for f in files.values()):
            table = pa.Table.from_pandas(minute_bars(a.symbols, a.sessions), preserve_index=False)
            pacsv.write_csv(table, files["csv"])
            pq.write_table(table, files["parquet"])
        n = pq.ParquetFile(files["parquet"]).metadata.num_rows
        print(f"{n:,} minute bars; CSV {files['csv'].stat().st_size / 2**20:.0f} MiB, Parquet {files['parquet'].stat().st_size / 2**20:.0f} MiB; best of {a.runs}")
        print(f"{'job':<28} {'pyarrow':>9} {'quantlab':>9} {'ratio':>6}")
        for kind, src in files.items():
            read = (lambda: pacsv.read_csv(src)) if kind == "csv" else (lambda: pq.read_table(src))
            def ingest():
                shutil.rmtree(work / "store", ignore_errors=True)
                assert cli.main(["--data-dir", str(work / "store"), "data", "ingest", str(src)]) == 0
            bare, ours = best([lambda: pq.write_table(read(), work / "bare.parquet"), ingest], a.runs)
            print(f"{'ingest ' + kind:<28} {bare:8.2f}s {ours:8.2f}s {ours / bare:5.2f}x", flush=True)
        store = BarStore(work / "store")
        paths = [str(store.root / e["file"]) for e in store.manifest()["datasets"]["bars"].values()]
        bare, ours = best([lambda: pq.read_table(paths, partitioning=None).to_pandas(), lambda: store.read_bars()], a.runs)
        print(f"{'read_bars() all':<28} {bare:8.2f}s {ours:8.2f}s {ours / bare:5.2f}x")
    finally:
        if not a.keep: shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
