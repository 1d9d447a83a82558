"""R2: a process killed while it rewrites an index file or a head's artifacts leaves every
file exactly the old or the new version; the naive in-place FAISS write, killed the same
way, is shown leaving torn files (so the check is known to bite).

Writers (:mod:`tests.reliability.writing`) loop over two known versions until SIGKILL at
a random moment: mmstore's ``write_atomic`` (index files; 4 MB versions), FAISS's
``write_index`` in place (about 5 MB), and ``write_head`` (a head folder: weights and
head.json). After each kill the parent compares the file (or the head, loaded through the
store's own reading path after the store's open-time sweep) with the two versions.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from multiprocessing.context import ForkServerContext
from pathlib import Path

import torch

import mmstore
from mmstore.heads.artifacts import load_weights, read_meta
from mmstore.storage.atomic import sweep_temporaries
from tests.reliability import writing
from tests.reliability.figures import record

KILLS = 30


def kill_while_writing(
    ctx: ForkServerContext, target: Callable[[str], None], arg: str, ready: Path, rng: random.Random
) -> None:
    """Start a writer, wait until its file exists, kill it at a random moment after."""
    child = ctx.Process(target=target, args=(arg,))
    child.start()
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert child.is_alive() and time.monotonic() < deadline, "writer did not start"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.25))
    child.kill()
    child.join(timeout=30)
    assert child.exitcode == -9


def test_atomic_index_writes_are_old_or_new(forkserver: ForkServerContext, tmp_path: Path) -> None:
    rng = random.Random(2)
    path = tmp_path / "indexes" / "f.mmi"
    versions = {writing.digest(writing.payload(v)) for v in writing.VERSIONS}
    leftovers = 0
    for _ in range(KILLS):
        kill_while_writing(forkserver, writing.atomic_writer, str(path), path, rng)
        assert writing.digest(path.read_bytes()) in versions, "a torn index file"
        leftovers += len(sweep_temporaries(path.parent))
        assert [p.name for p in path.parent.iterdir()] == ["f.mmi"]
    record(
        "R2",
        "test_atomic_index_writes_are_old_or_new",
        f"{KILLS} kills of write_atomic (4 MB): {KILLS} of {KILLS} files exactly old or new, "
        f"{leftovers} temporary files swept",
    )


def test_naive_in_place_faiss_write_tears(forkserver: ForkServerContext, tmp_path: Path) -> None:
    """The same kills against ``faiss.write_index``: some files are neither version."""
    import faiss

    rng = random.Random(3)
    path = tmp_path / "f.faiss"
    versions = {writing.digest(writing.faiss_bytes(v)) for v in writing.VERSIONS}
    torn = unreadable = 0
    for _ in range(KILLS):
        kill_while_writing(forkserver, writing.naive_faiss_writer, str(path), path, rng)
        if writing.digest(path.read_bytes()) not in versions:
            torn += 1
            try:
                faiss.read_index(str(path))
            except RuntimeError:
                unreadable += 1
    assert torn >= 1, "the naive write never tore: the kill timing does not bite"
    record(
        "R2",
        "test_naive_in_place_faiss_write_tears",
        f"{KILLS} kills of faiss.write_index in place: {torn} torn files "
        f"({unreadable} unreadable by faiss.read_index)",
    )


def test_head_artifacts_are_old_or_new(forkserver: ForkServerContext, tmp_path: Path) -> None:
    rng = random.Random(4)
    store_path = tmp_path / "s"
    with mmstore.open(store_path) as store:
        store.create_collection(
            "c", encoders={"emb": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
        )
    weights = store_path / "heads" / "c" / "h" / "weights.safetensors"
    states = {v: writing.head_state(v) for v in writing.VERSIONS}
    for _ in range(KILLS):
        kill_while_writing(forkserver, writing.head_writer, str(store_path), weights, rng)
        with mmstore.open(store_path) as store:
            col = store.collection("c")
            assert [h["name"] for h in col.heads()] == ["h"], "the head is gone"
            version = read_meta(col, "h")["config"]["version"]
            loaded = load_weights(col, "h")
            assert all(torch.equal(loaded[k], states[version][k]) for k in loaded)
            hidden = [p.name for p in weights.parent.parent.iterdir() if p.name.startswith(".")]
            assert hidden == [], f"leftovers after open: {hidden}"
    record(
        "R2",
        "test_head_artifacts_are_old_or_new",
        f"{KILLS} kills of write_head: {KILLS} of {KILLS} heads whole (old or new weights with "
        "their head.json), 0 leftovers after open",
    )


def test_a_swap_cut_between_its_renames_is_recovered_on_open(tmp_path: Path) -> None:
    """The window a random kill rarely hits: the old head renamed aside, the new one not
    yet renamed in. Opening the store renames the old one back and removes the new one's
    temporary folder."""
    from mmstore.heads.artifacts import write_head

    store_path = tmp_path / "s"
    with mmstore.open(store_path) as store:
        col = store.create_collection(
            "c", encoders={"emb": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
        )
        write_head(col, "h", writing.head_state("a"), writing.head_meta("a"), lambda d: {})
        write_head(col, "tmpl", writing.head_state("b"), writing.head_meta("b"), lambda d: {})
    root = store_path / "heads" / "c"
    (root / "h").rename(root / ".h.0123abcd.old")  # the first rename of a swap
    (root / "tmpl").rename(root / ".h.4567ef01.tmp")  # the new version, not yet renamed in
    with mmstore.open(store_path) as store:
        col = store.collection("c")
        assert read_meta(col, "h")["config"]["version"] == "a"
        assert torch.equal(load_weights(col, "h")["w"], writing.head_state("a")["w"])
    assert sorted(p.name for p in root.iterdir()) == ["h"]
