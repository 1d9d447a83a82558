"""Image ingest through mmstore vs the raw OpenCLIP loop, at the same batch size.

1. Writes N synthetic photo-like 256x256 JPEGs (gradients, noise, shapes) to a folder.
2. Creates ViT-B-32 from open_clip's registry with random weights (seeded) and saves them to
   a .safetensors file: no pretrained weights are reachable offline, and throughput does
   not depend on the weights' values.
3. Measures, interleaved, ``--repeats`` times:
   (a) raw: for each batch, open each file with PIL, the model's preprocess, and
       ``model.encode_image`` under ``torch.inference_mode``;
   (b) mmstore: ``col.ingest`` of records with the image paths (roots configured,
       ``keep="copy"``) into a fresh store, with the same model file and batch size;
   and the model alone on preprocessed tensors, for reference.
4. Prints medians in images/s and the ratio ingest/raw (goal >= 0.85).

Run: ``python benchmarks/bench_image.py [--n 256] [--batch-size 32] [--repeats 3]``.
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
from typing import Any

import numpy as np
import open_clip
import torch
from mmstore_openclip.testing import save_weights
from PIL import Image, ImageDraw, ImageFilter

import mmstore

MODEL = "ViT-B-32"


def write_photos(folder: Path, n: int, size: int = 256) -> list[Path]:
    """Photo-like JPEGs: a smooth colour field, blurred shapes, sensor-like noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(n):
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * xs + np.sin(angle) * ys)[..., None]
        field = a * (1 - t) + b * t
        im = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))
        pen = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(3, 8))):
            x, y = (int(v) for v in rng.integers(0, size, 2))
            r = int(rng.integers(10, 60))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw = pen.ellipse if rng.random() < 0.5 else pen.rectangle
            draw((x, y, x + r, y + r), fill=colour)
        im = im.filter(ImageFilter.GaussianBlur(1.5))
        noisy = np.asarray(im, np.int16) + rng.normal(0, 6, (size, size, 3)).astype(np.int16)
        path = folder / f"photo_{i:05d}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def random_weights(path: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, _, _ = open_clip.create_model_and_transforms(MODEL, pretrained=None)
    return save_weights(model, path)


def raw_pass(model: Any, preprocess: Any, paths: list[Path], batch: int, dev: Any) -> float:
    """The loop a user would write: decode, preprocess, encode; images per second."""
    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        pixels = torch.stack(
            [preprocess(Image.open(p).convert("RGB")) for p in paths[i : i + batch]]
        )
        with torch.inference_mode():
            model.encode_image(pixels.to(*dev)).float().cpu()
    return len(paths) / (time.perf_counter() - start)


def model_only(model: Any, preprocess: Any, paths: list[Path], batch: int, dev: Any) -> float:
    tensors = [preprocess(Image.open(p).convert("RGB")) for p in paths]
    start = time.perf_counter()
    for i in range(0, len(tensors), batch):
        with torch.inference_mode():
            model.encode_image(torch.stack(tensors[i : i + batch]).to(*dev)).float().cpu()
    return len(paths) / (time.perf_counter() - start)


def ingest_pass(paths: list[Path], params: dict[str, Any], root: Path, workdir: Path) -> float:
    """``col.ingest`` of the paths into a fresh store; images per second."""
    folder = Path(tempfile.mkdtemp(dir=workdir))
    try:
        with mmstore.open(folder / "s") as store:
            col = store.create_collection(
                "photos", encoders={"image": params}, options={"image": {"roots": [str(root)]}}
            )
            records = [{"id": p.stem, "image": str(p)} for p in paths]
            start = time.perf_counter()
            report = col.ingest(records)
            seconds = time.perf_counter() - start
            assert report.written == len(paths), report
        return len(paths) / seconds
    finally:
        shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256, help="images (default 256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-image-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"open_clip {open_clip.__version__}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"
    )
    print("machine shared with other users: figures are noisy, compare the ratio")

    t0 = time.perf_counter()
    root = workdir / "photos"
    paths = write_photos(root, args.n)
    print(f"{args.n} JPEGs of 256x256 written in {time.perf_counter() - t0:.1f}s to {root}")
    weights = random_weights(workdir / "vit-b-32-random.safetensors")
    print(
        f"{MODEL} with RANDOM weights (no pretrained weights are available offline) saved "
        f"to {weights} ({weights.stat().st_size / 2**20:.0f} MiB)"
    )

    model, _, preprocess = open_clip.create_model_and_transforms(
        MODEL, pretrained=str(weights), device=args.device, precision=args.precision
    )
    model.eval()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    dev = (args.device, dtype[args.precision])
    params = {
        "encoder": "open_clip",
        "model": MODEL,
        "pretrained": str(weights),
        "device": args.device,
        "precision": args.precision,
        "batch_size": args.batch_size,
    }
    print(f"device {args.device}, precision {args.precision}, batch size {args.batch_size}")
    ingest_pass(paths[: args.batch_size], params, root, workdir)  # loads the model once
    raw_pass(model, preprocess, paths[: args.batch_size], args.batch_size, dev)  # warm up

    raw, ingest = [], []
    for r in range(args.repeats):
        raw.append(raw_pass(model, preprocess, paths, args.batch_size, dev))
        ingest.append(ingest_pass(paths, params, root, workdir))
        print(f"repeat {r + 1}: raw {raw[-1]:.1f} images/s, ingest {ingest[-1]:.1f} images/s")
    only = model_only(model, preprocess, paths, args.batch_size, dev)
    raw_m, ingest_m = statistics.median(raw), statistics.median(ingest)
    print(f"\nbatch size {args.batch_size}, {args.n} images, {args.repeats} repeats (medians)")
    print(f"  raw decode+preprocess+encode_image : {raw_m:8.1f} images/s")
    print(f"  mmstore col.ingest (paths, copy)   : {ingest_m:8.1f} images/s")
    print(f"  ratio ingest/raw                   : {ingest_m / raw_m:8.2f}   (goal >= 0.85)")
    print(f"  model only (encode_image)          : {only:8.1f} images/s (reference)")
    print(f"  load average now {os.getloadavg()[0]:.2f}")
    if args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    from mmstore.cli.exit import exit_quietly

    main()
    exit_quietly(0)
