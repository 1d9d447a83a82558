"""The index file format: a magic string, a JSON header, then raw arrays (vids, tombstones,
tail vectors, the float32 vectors an IVF index rescores from) and the FAISS index, each at
an offset the header gives. No pickle, no zip: loading is one read, one checksum, array
views and one FAISS parse. Format 3 names the index kind and the decision that chose it;
format 2 files (an HNSW graph or none) still load. Format 4 says where an IVF index's
float32 vectors are: in the file, or (``"floats": "rows"``) only in the store's segment
files, which the store binds before the first search. The header also notes
the GPU layout (:mod:`mmstore.index.multigpu`) the writing host used or would use; loading does
not read it back, since another host chooses by its own GPUs."""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from mmstore.config import IndexOptions
from mmstore.index.choose import Decision
from mmstore.index.coarse import KINDS as IVF_KINDS
from mmstore.index.coarse import Coarse, read_faiss
from mmstore.index.graph import Graph
from mmstore.index.vectors import VectorIndex

MAGIC = b"MMSIDX02"  # the magic stays; the header's format says which layout follows
FORMAT = 4
READS = (2, 3, 4)
ALIGN = 64


def dump(index: VectorIndex) -> Iterator[bytes | memoryview]:
    """The file's bytes, in pieces (the arrays are not copied)."""

    ann = index.ann.serialize() if index.ann is not None else np.empty(0, np.uint8)
    in_rows = isinstance(index.ann, Coarse) and index.ann.source is not None
    base = np.empty((0, index.dim), np.float32)
    if isinstance(index.ann, Coarse) and not in_rows:
        base = index.ann.floats()
    tail = np.ascontiguousarray(index.tail())
    arrays: dict[str, Any] = {
        "vids": np.ascontiguousarray(index.vids, "<i8"),
        "dead": np.ascontiguousarray(index.dead, np.uint8),
        "tail": tail,
        "ann": ann,
        "base": np.ascontiguousarray(base, np.float32),
    }
    layout, offset = {}, 0
    for name, arr in arrays.items():
        layout[name] = [offset, arr.nbytes]
        offset += _padded(arr.nbytes)
    header = json.dumps(
        {
            "format": FORMAT,
            "dim": index.dim,
            "size": index.size,
            "tail": len(tail),
            "kind": index.kind,
            "decision": None if index.decision is None else index.decision.as_dict(),
            "ef_search": index.ef_search,
            "refine": index.ann.refine if isinstance(index.ann, Coarse) else None,
            "tuned_recall": index.tuned_recall,
            "floats": "rows" if in_rows else "file",
            "layout": layout,
            # informational: the host that loads the file chooses its own GPU layout
            "gpu_layout": index.params()["gpu_layout"],
        }
    ).encode()
    start = _padded(len(MAGIC) + 8 + len(header))
    yield MAGIC + struct.pack("<Q", len(header)) + header
    yield bytes(start - len(MAGIC) - 8 - len(header))
    for arr in arrays.values():
        yield memoryview(arr.reshape(-1).view(np.uint8))
        yield bytes(_padded(arr.nbytes) - arr.nbytes)


def load(data: bytes | mmap.mmap, options: IndexOptions | None = None) -> VectorIndex:
    """Rebuild an index from :func:`dump`'s bytes; ValueError if they are malformed. The
    float32 vectors are read in place, not copied: over a memory-mapped file they stay in
    the page cache (the index copies them when it grows)."""

    head = header(data)
    base = _padded(len(MAGIC) + 8 + head["header_bytes"])
    view = memoryview(data)

    def part(name: str) -> memoryview:
        offset, nbytes = head["layout"][name]
        if base + offset + nbytes > len(data):
            raise ValueError(f"index file is truncated in {name}")
        return view[base + offset : base + offset + nbytes]

    dim, size, tail_len = int(head["dim"]), int(head["size"]), int(head["tail"])
    index = VectorIndex(dim, options)
    index.vids = np.frombuffer(part("vids"), "<i8").astype(np.int64)
    index.dead = np.frombuffer(part("dead"), np.uint8).astype(bool)
    index._tail = np.frombuffer(part("tail"), np.float32).reshape(tail_len, dim)
    index._tail_len = tail_len
    kind = head.get("kind", "hnsw")
    ann = part("hnsw" if head["format"] == 2 else "ann")
    if len(ann):
        floats = part("base") if kind in IVF_KINDS else None
        index.ann = _ann(head, dim, index.options, ann, floats)
        index.ann.width, index.ann.tuned_recall = int(head["ef_search"]), head["tuned_recall"]
    if head.get("decision") is not None:
        index.decision = Decision(**head["decision"])
    index._sorter = np.argsort(index.vids, kind="stable")
    index.n_dead = int(index.dead.sum())
    if len(index.vids) != size or index.n_base + tail_len != size:
        raise ValueError("index file is inconsistent: vector and id counts differ")
    return index


def _ann(
    head: dict[str, Any], dim: int, options: IndexOptions, data: memoryview, base: memoryview | None
) -> Graph | Coarse:
    """The approximate index of a file: its FAISS index, and the floats an IVF one keeps."""
    kind = head.get("kind", "hnsw")
    if kind == "hnsw":
        return Graph(dim, options, read_faiss(data))
    if kind not in IVF_KINDS or base is None:
        raise ValueError(f"index kind {kind!r} is not one this mmstore reads")
    read = read_faiss(data, in_place=True)  # the codes stay in the (mapped) file
    coarse = Coarse(kind, dim, options, read)
    coarse.viewed = data
    coarse.refine = int(head["refine"])
    if head.get("floats") == "rows":
        coarse.await_rows(int(read.ntotal))
        return coarse
    floats = np.frombuffer(base, np.float32).reshape(-1, dim)
    if len(floats) != int(read.ntotal):
        raise ValueError("index file is inconsistent: codes and vectors differ in number")
    coarse.adopt(floats)
    return coarse


def header(data: bytes | mmap.mmap) -> dict[str, Any]:
    """The file's JSON header (with ``header_bytes``, its length); ValueError if the bytes
    are not an index file of this format."""
    if data[: len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + 8:
        raise ValueError("not an mmstore index file")
    (length,) = struct.unpack_from("<Q", data, len(MAGIC))
    head = json.loads(data[len(MAGIC) + 8 : len(MAGIC) + 8 + length])
    if head.get("format") not in READS:
        raise ValueError(f"index format {head.get('format')!r} is not one of {list(READS)}")
    return dict(head) | {"header_bytes": length}


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN
