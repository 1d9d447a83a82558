"""Check mmstore's GPU paths in one short run on a machine with a CUDA GPU, and print
figures: search on the GPU (exact scan of the index's device mirror) against a raw
PyTorch scan of the same matrix and against the CPU index; OpenCLIP ingest on CUDA in fp16
against raw ``encode_image`` on the same images and batch size; and agreement of CUDA fp16
vectors with CPU fp32 ones; on a host where FAISS sees two or more GPUs, the index
replicated and sharded over them (:mod:`mmstore.index.multigpu`) against the CPU's exact answer,
with single-query and batch timings beside the one-GPU mirror (skipped, with the reason, on
fewer GPUs; ``--dry-run`` runs it with CPU sub-indexes on two pretend GPUs).

    python benchmarks/check_gpu.py [--vectors 200000] [--images 1024] [--out FILE.json]

Exits non-zero if a check fails (wrong results), not for slow figures.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import mmstore
from mmstore.config import IndexOptions
from mmstore.index import gpu, multigpu
from mmstore.index.vectors import VectorIndex

DEVICE, PRECISION = "cuda", "fp16"


def main() -> int:
    global DEVICE, PRECISION
    args = parse_args()
    import torch

    if args.dry_run:  # the same code on the CPU: mirror tensors in host memory, fp32
        DEVICE, PRECISION = "cpu", "fp32"
        gpu.MIRROR_DEVICE = "cpu"
        gpu.cuda_available = lambda: True  # type: ignore[assignment]
    elif not torch.cuda.is_available():
        print("no CUDA device visible: nothing to check (multi-GPU checks skipped too)")
        return 2
    out: dict[str, Any] = {
        "torch": torch.__version__,
        "gpu": "dry run on the CPU" if args.dry_run else torch.cuda.get_device_name(0),
        "mmstore_sees_gpu": gpu.cuda_available(),
    }
    print(json.dumps(out))
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out["search"] = check_search(Path(tmp), args.vectors, failures)
        print(json.dumps(out["search"]), flush=True)
        out["multi_gpu"] = check_multi_gpu(args.vectors, args.dry_run, failures)
        print(json.dumps(out["multi_gpu"]), flush=True)
        out["open_clip"] = check_open_clip(Path(tmp), args.images, args.batch, failures)
        print(json.dumps(out["open_clip"]), flush=True)
    out["failures"] = failures
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    print("FAILED: " + "; ".join(failures) if failures else "all GPU checks passed")
    return 1 if failures else 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vectors", type=int, default=200_000)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--out", default=None)
    p.add_argument("--dry-run", action="store_true", help="run the same code on the CPU")
    return p.parse_args()


def timed(fn: Any, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


# -- search ---------------------------------------------------------------------------------
def check_search(tmp: Path, n: int, failures: list[str]) -> dict[str, Any]:
    import torch

    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, 384)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = data[rng.choice(n, 200, replace=False)] + 0.1 * rng.standard_normal(
        (200, 384)
    ).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :10] + 1  # vids start at 1

    spec = {"e": {"encoder": "precomputed", "modality": "vector", "dim": 384}}
    with mmstore.open(tmp / "search") as store:
        col = store.create_collection("v", encoders=spec)  # index device: auto
        t0 = time.perf_counter()
        col.ingest(pa_table(data), chunk_size=65_536)
        ingest_s = time.perf_counter() - t0
        index = col.indexes.get(col.fields["e"])
        col.search(vector=queries[0], k=10)  # uploads the mirror
        mirror = index._gpu  # FAISS's over several GPUs, else PyTorch's
        on_gpu = isinstance(mirror, multigpu.FaissMirror) or (
            mirror is not None and mirror.matrix.device.type == DEVICE
        )
        if not on_gpu:
            failures.append("the index did not search on the GPU")
        hits = [col.search(vector=q, k=10).ids for q in queries]
        got = [{int(i) for i in h} for h in hits]
        recall = float(np.mean([len(g & set(t)) / 10 for g, t in zip(got, truth, strict=True)]))
        if recall < 0.999:
            failures.append(f"GPU search recall@10 {recall:.4f} < 1")
        mms = timed(lambda: [col.search(vector=q, k=10) for q in queries[:100]], 5)
        raw_index = index.search
        ids_only = timed(lambda: [raw_index(q[None, :], 10) for q in queries[:100]], 5)
        matrix = torch.from_numpy(data).to(DEVICE)

        def raw_scan() -> None:
            for q in queries[:100]:
                s = torch.from_numpy(q[None, :]).to(DEVICE) @ matrix.T
                torch.topk(s, 10).indices.cpu()

        raw = timed(raw_scan, 5)
        cpu_index = type(index)(384, index.options.model_copy(update={"device": "cpu"}))
        cpu_index.add(index.vids, index.all_vectors())
        cpu = timed(lambda: [cpu_index.search(q[None, :], 10) for q in queries[:20]], 3)
    per = 1000 / 100
    return {
        "vectors": n,
        "ingest_vectors_per_s": round(n / ingest_s),
        "on_gpu": on_gpu,
        "gpu_layout": index.params()["gpu_layout"],
        "recall_at_10": recall,
        "p50_ms_col_search_hydrated": round(statistics.median(mms) * per, 4),
        "p50_ms_index_search_ids": round(statistics.median(ids_only) * per, 4),
        "p50_ms_raw_torch_scan": round(statistics.median(raw) * per, 4),
        "ratio_index_to_raw": round(statistics.median(ids_only) / statistics.median(raw), 3),
        "p50_ms_cpu_exact_same_machine": round(statistics.median(cpu) * 1000 / 20, 4),
    }


def pa_table(data: np.ndarray) -> Any:
    import pyarrow as pa

    flat = pa.array(data.reshape(-1), pa.float32())
    return pa.table(
        {
            "id": pa.array([str(i) for i in range(1, len(data) + 1)]),
            "e": pa.FixedSizeListArray.from_arrays(flat, data.shape[1]),
        }
    )


# -- several GPUs ---------------------------------------------------------------------------
def check_multi_gpu(n: int, dry_run: bool, failures: list[str]) -> dict[str, Any]:
    """Replicas and shards over every GPU FAISS sees, each against the CPU's exact answer
    (recall@10 of the vids, scores within float tolerance), with p50 of single-query
    searches and the time of one 200-query batch; the one-GPU mirror beside them."""
    gpus = 2 if dry_run else multigpu.gpu_count()
    if gpus < 2:
        return {"skipped": f"FAISS sees {gpus} GPU(s); replicas and shards need 2 or more"}
    if dry_run:
        multigpu.SUB_INDEX = multigpu.cpu_flat
        multigpu.gpu_count = lambda: 2  # type: ignore[assignment]
    data, queries = multi_gpu_data(n)
    cpu_index = VectorIndex(384, IndexOptions(device="cpu"))
    cpu_index.add(np.arange(1, n + 1), data)
    cpu_index.remove(np.arange(1, n + 1, 97))  # tombstones, searched past on the GPUs
    truth = cpu_index._exact(queries, 10, None)
    out: dict[str, Any] = {"gpus": gpus, "vectors": n}
    for mode in ("single", "replicate", "shard"):
        out[mode] = check_layout(mode, gpus, cpu_index, queries, truth, failures)
    return out


def multi_gpu_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((n, 384)).astype(np.float32)
    data[n // 2 : n // 2 + n // 20] = data[: n // 20]  # exact duplicates: ties
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = data[rng.choice(n, 200, replace=False)] + 0.1 * rng.standard_normal(
        (200, 384)
    ).astype(np.float32)
    return data, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def check_layout(
    mode: str, gpus: int, cpu_index: VectorIndex, queries: np.ndarray, truth: Any, failures: list
) -> dict[str, Any]:
    """One layout: forced through ``multigpu.plan`` (the one-GPU case is PyTorch's mirror)."""
    count, plan = multigpu.gpu_count, multigpu.plan
    if mode == "single":
        multigpu.gpu_count = lambda: 1  # type: ignore[assignment]
    share = gpus if mode == "shard" else 1

    def forced(size: int, dim: int) -> multigpu.Layout:
        return multigpu.Layout(mode, gpus, -(-size * dim * 4 // share), True)  # type: ignore

    multigpu.plan = forced
    try:
        index = VectorIndex(384, IndexOptions(device="cuda"))
        index.add(cpu_index.vids, cpu_index.all_vectors())
        index.remove(cpu_index.vids[cpu_index.dead])
        t0 = time.perf_counter()
        got = index.search(queries, 10)  # uploads
        upload_s = time.perf_counter() - t0
        single = timed(lambda: [index.search(q[None, :], 10) for q in queries[:100]], 3)
        batch = timed(lambda: index.search(queries, 10), 3)
        layout = index.params()["gpu_layout"]
    finally:
        multigpu.gpu_count, multigpu.plan = count, plan
    # a hit is a vid of the CPU's answer or one tied with its 10th (ties may cut either way)
    tied = got.scores >= truth.scores[:, -1:] - 1e-5
    found = [np.isin(g, t) | d for g, t, d in zip(got.vids, truth.vids, tied, strict=True)]
    recall = float(np.mean(found))
    score_err = float(np.max(np.abs(got.scores - truth.scores)))
    if recall < 0.999 or score_err > 1e-4:
        failures.append(f"{mode} on {gpus} GPUs: recall@10 {recall:.4f}, score error {score_err}")
    return {
        "layout": layout,
        "recall_at_10_vs_cpu": recall,
        "max_score_error": score_err,
        "upload_s": round(upload_s, 3),
        "p50_ms_single_query": round(statistics.median(single) * 10, 4),
        "batch_200_ms": round(statistics.median(batch) * 1000, 3),
    }


# -- OpenCLIP on CUDA -----------------------------------------------------------------------
def check_open_clip(tmp: Path, n: int, batch: int, failures: list[str]) -> dict[str, Any]:
    import open_clip
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    weights = tmp / "vit-b-32-random.safetensors"
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    folder = tmp / "images"
    folder.mkdir()
    paths = write_images(folder, n)
    params = {"encoder": "open_clip", "model": "ViT-B-32", "pretrained": str(weights)}
    gpu_params = params | {"device": DEVICE, "precision": PRECISION, "batch_size": batch}
    options = {"image": {"roots": [str(folder)]}}

    model, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained=str(weights), device=DEVICE, precision=PRECISION
    )
    dtype = torch.float16 if PRECISION == "fp16" else torch.float32
    model.eval()

    def raw() -> None:
        for start in range(0, n, batch):
            chunk = paths[start : start + batch]
            pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in chunk])
            with torch.inference_mode():
                model.encode_image(pixels.to(DEVICE, dtype)).float().cpu()

    def ingest(repeat: int) -> None:
        with mmstore.open(tmp / f"clip{repeat}") as store:
            col = store.create_collection("c", encoders={"image": gpu_params}, options=options)
            col.ingest([{"id": p.stem, "image": str(p)} for p in paths])

    raw()  # warm up: CUDA context, kernels, page cache
    ingest(0)
    raw_times = timed(raw, 3)
    ingest_times = [timed(lambda r=r: ingest(r), 1)[0] for r in range(1, 4)]

    with mmstore.open(tmp / "agree") as store:
        on_gpu = store.create_collection("g", encoders={"image": gpu_params}, options=options)
        on_cpu = store.create_collection(
            "c", encoders={"image": params | {"device": "cpu"}}, options=options
        )
        same_space = on_gpu.fields["image"].key == on_cpu.fields["image"].key
        recs = [{"id": p.stem, "image": str(p)} for p in paths[:16]]
        on_gpu.ingest(recs)
        on_cpu.ingest(recs)
        a = on_gpu.indexes.get(on_gpu.fields["image"]).all_vectors()
        b = on_cpu.indexes.get(on_cpu.fields["image"]).all_vectors()
        cosine = float(np.min(np.sum(a * b, axis=1)))
    if not same_space:
        failures.append("device/precision changed the encoder identity")
    if cosine < 0.99:
        failures.append(f"CUDA fp16 and CPU fp32 image vectors disagree (min cosine {cosine:.4f})")
    raw_rate = n / statistics.median(raw_times)
    ingest_rate = n / statistics.median(ingest_times)
    return {
        "images": n,
        "batch": batch,
        "raw_images_per_s": round(raw_rate, 1),
        "ingest_images_per_s": round(ingest_rate, 1),
        "ratio_ingest_to_raw": round(ingest_rate / raw_rate, 3),
        "min_cosine_cuda_fp16_vs_cpu_fp32": round(cosine, 5),
    }


def write_images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, 3)
        grad = np.linspace(0, 1, 256, dtype=np.float32)[:, None, None]
        pixels = (base * (0.4 + 0.6 * grad) + rng.normal(0, 12, (256, 256, 3))).clip(0, 255)
        buf = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buf, "JPEG", quality=90)
        path = folder / f"img{i:05d}.jpg"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


if __name__ == "__main__":
    from mmstore.cli.exit import exit_quietly

    exit_quietly(main())
