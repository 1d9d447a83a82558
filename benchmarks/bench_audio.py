"""Audio ingest throughput against a raw loop over the same files (not part of the tests).

N clips of 5 s at 44.1 kHz (a few tones over noise, each clip different) are written as
FLAC files. Then, interleaved, ``--repeats`` times each:

* **raw**: decode each file with soundfile, resample it to 16 kHz (the encoder's
  ``resample``) and compute the encoder's features (``pooled_logmel``) directly, a batch
  of ``--batch`` clips at a time, in one thread;
* **ingest**: ``col.ingest`` of records ``{"id", "audio": path}`` into a fresh store with the
  ``logmel`` encoder at the same batch size (validation, media copies, catalog, index).

Prints the median clips/s of each and the ratio ingest/raw (goal >= 0.85). Ingest does
more work per clip (reading and hashing the file, checking every sample, copying it into
the media folder, the catalog) but decodes, resamples and computes features in the
plugin's thread pool (one thread per core, at most 8), and keeps each clip's decoded
samples from validation to encoding (``cache_mb``), so it decodes once. The machines are
shared, so only ratios measured in one run mean much.

Run: ``python benchmarks/bench_audio.py [--n 512] [--repeats 3] [--keep copy|reference]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from mmstore_audio import LogMelParams
from mmstore_audio._pool import workers
from mmstore_audio.features import pooled_logmel, resample

import mmstore

RATE = 44_100


def write_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    """``n`` distinct FLAC files: three random tones and a little noise each."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    paths = []
    for i in range(n):
        freqs = rng.uniform(100, 4000, 3)
        x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in freqs)
        x = x + 0.01 * rng.standard_normal(len(t))
        path = folder / f"clip{i:05d}.flac"
        sf.write(path, x.astype(np.float32), RATE)
        paths.append(path)
    return paths


def raw(paths: list[Path], batch: int, p: LogMelParams) -> float:
    """Seconds for decode + resample + features, batch by batch, in one thread."""
    fmax = p.fmax or p.sample_rate / 2
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch):
        clips = []
        for path in paths[start : start + batch]:
            samples, rate = sf.read(path, dtype="float32")
            clips.append(resample(samples, rate, p.sample_rate))
        pooled_logmel(clips, p.sample_rate, p.n_mels, p.n_fft, p.hop, p.fmin, fmax)
    return time.perf_counter() - t0


def ingest(paths: list[Path], batch: int, workdir: Path, keep: str) -> float:
    """Seconds for ``col.ingest`` of the paths into a fresh store."""
    store_path = workdir / "bench.mms"
    shutil.rmtree(store_path, ignore_errors=True)
    records = [{"id": p.stem, "audio": str(p)} for p in paths]
    with mmstore.open(store_path) as store:
        col = store.create_collection(
            "a",
            encoders={"audio": {"encoder": "logmel", "batch_size": batch}},
            options={"audio": {"roots": [str(paths[0].parent)], "keep": keep}},
        )
        t0 = time.perf_counter()
        report = col.ingest(records)
        seconds = time.perf_counter() - t0
    assert report.written == len(paths), report
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--keep", choices=["copy", "reference"], default="copy")
    args = ap.parse_args()
    params = LogMelParams(batch_size=args.batch)
    with tempfile.TemporaryDirectory(prefix="bench_audio_") as tmp:
        clips_dir, workdir = Path(tmp) / "clips", Path(tmp) / "work"
        clips_dir.mkdir()
        workdir.mkdir()
        t0 = time.perf_counter()
        paths = write_clips(clips_dir, args.n, args.seconds)
        size = sum(p.stat().st_size for p in paths) / 2**20
        print(
            f"{args.n} FLAC clips of {args.seconds:g} s at {RATE} Hz ({size:.0f} MiB) written "
            f"in {time.perf_counter() - t0:.1f}s; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, audio threads {workers()}, keep={args.keep}"
        )
        raw(paths[: args.batch], args.batch, params)  # warm up caches and imports
        raws, ingests = [], []
        for rep in range(args.repeats):
            raws.append(args.n / raw(paths, args.batch, params))
            ingests.append(args.n / ingest(paths, args.batch, workdir, args.keep))
            print(f"  repeat {rep + 1}: raw {raws[-1]:.1f} clips/s, ingest {ingests[-1]:.1f}")
        r, i = statistics.median(raws), statistics.median(ingests)
        print(f"raw decode+resample+features: {r:.1f} clips/s (median of {args.repeats})")
        print(f"col.ingest:                   {i:.1f} clips/s (median of {args.repeats})")
        print(f"ratio ingest/raw: {i / r:.2f} (goal >= 0.85)")


if __name__ == "__main__":
    main()
