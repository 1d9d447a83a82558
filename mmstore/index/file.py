"""The index file format: a magic string, a JSON header, then raw arrays (vids, tombstones,
tail vectors) and the FAISS graph, each at an offset the header gives. No pickle, no zip:
loading is one read, one checksum, array views and one FAISS parse. The header also notes
the GPU layout (:mod:`mmstore.index.multigpu`) the writing host used or would use; loading does
not read it back, since another host chooses by its own GPUs."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from mmstore.config import IndexOptions
from mmstore.index.backend import faiss
from mmstore.index.vectors import VectorIndex

MAGIC = b"MMSIDX02"
FORMAT = 2
ALIGN = 64


def dump(index: VectorIndex) -> Iterator[bytes | memoryview]:
    """The file's bytes, in pieces (the arrays are not copied)."""

    graph = faiss.serialize_index(index.hnsw) if index.hnsw is not None else np.empty(0, np.uint8)
    tail = np.ascontiguousarray(index.tail())
    arrays: dict[str, Any] = {
        "vids": np.ascontiguousarray(index.vids, "<i8"),
        "dead": np.ascontiguousarray(index.dead, np.uint8),
        "tail": tail,
        "hnsw": graph,
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
            "ef_search": index.ef_search,
            "tuned_recall": index.tuned_recall,
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


def load(data: bytes, options: IndexOptions | None = None) -> VectorIndex:
    """Rebuild an index from :func:`dump`'s bytes; ValueError if they are malformed."""

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
    index._tail = np.frombuffer(part("tail"), np.float32).reshape(tail_len, dim).copy()
    index._tail_len = tail_len
    graph = part("hnsw")
    if len(graph):
        index.hnsw = faiss.read_index(faiss.PyCallbackIOReader(_reader(graph), 1 << 22))
    index._sorter = np.argsort(index.vids, kind="stable")
    index.n_dead = int(index.dead.sum())
    index.ef_search, index.tuned_recall = int(head["ef_search"]), head["tuned_recall"]
    if len(index.vids) != size or index.n_base + tail_len != size:
        raise ValueError("index file is inconsistent: vector and id counts differ")
    return index


def header(data: bytes) -> dict[str, Any]:
    """The file's JSON header (with ``header_bytes``, its length); ValueError if the bytes
    are not an index file of this format."""
    if data[: len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + 8:
        raise ValueError("not an mmstore index file")
    (length,) = struct.unpack_from("<Q", data, len(MAGIC))
    head = json.loads(data[len(MAGIC) + 8 : len(MAGIC) + 8 + length])
    if head.get("format") != FORMAT:
        raise ValueError(f"index format {head.get('format')!r} is not {FORMAT}")
    return dict(head) | {"header_bytes": length}


def _reader(view: memoryview) -> Any:
    """A FAISS read callback over a memory view (no copy of the whole graph first)."""
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        chunk = view[position : position + n]
        position += len(chunk)
        return bytes(chunk)

    return read


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN
