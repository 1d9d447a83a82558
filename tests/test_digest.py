"""The index file checksum: a tree of sha256s, the same whether taken while the file is
written (in pieces of any size) or checked in parallel over the mapped file; manifests of
older stores, which hold the plain sha256, still verify; any changed byte fails."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mmstore.storage import digest
from mmstore.storage.atomic import write_atomic


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 2000, 2500])
def test_the_tree_is_the_same_written_in_pieces_and_checked_in_parallel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(digest, "BLOCK", 1000)
    data = os.urandom(size)
    pieces = [data[i : i + 333] for i in range(0, size, 333)]
    written = write_atomic(tmp_path / "f", pieces)
    mapped = digest.mapped(tmp_path / "f")
    assert written.startswith(digest.PREFIX)
    assert digest.tree_digest(mapped) == written == digest.tree_digest(data)
    assert digest.matches(mapped, written)


def test_a_changed_byte_or_length_fails_and_a_plain_sha256_still_verifies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(digest, "BLOCK", 1000)
    data = os.urandom(3000)
    tree = digest.tree_digest(data)
    flipped = bytearray(data)
    flipped[2500] ^= 1
    assert not digest.matches(bytes(flipped), tree)
    assert not digest.matches(data[:-1], tree) and not digest.matches(data + b"\0", tree)
    assert digest.matches(data, hashlib.sha256(data).hexdigest())  # an older manifest
    assert not digest.matches(bytes(flipped), hashlib.sha256(data).hexdigest())
