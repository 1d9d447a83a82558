"""A head on disk: ``<store>/heads/<collection>/<name>/`` holds ``weights.safetensors``,
``head.json`` (kind, config, classes, metrics, lineage) and PNG plots. Never pickle.

A head folder is written whole in a hidden temporary folder beside it and swapped into
place (:func:`mmstore.storage.atomic.swap_folder`), so a failed or killed training leaves the old
head or the new one, whole, never a mix and never none."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmstore.config import check_name
from mmstore.errors import DamagedHeadError, UnknownNameError
from mmstore.storage import failures as storage
from mmstore.storage.atomic import recover_folders, swap_folder

if TYPE_CHECKING:
    from mmstore.state import CollectionState

META = "head.json"
WEIGHTS = "weights.safetensors"
FORMAT = 1


def heads_root(col: CollectionState) -> Path:
    return Path(col.store.path) / "heads" / col.name


def head_dir(col: CollectionState, name: str) -> Path:
    return heads_root(col) / name


def head_names(col: CollectionState) -> list[str]:
    root = heads_root(col)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if not p.name.startswith(".") and (p / META).is_file()
    )


def read_meta(col: CollectionState, name: str) -> dict[str, Any]:
    """A head's ``head.json``; an unknown name raises UnknownNameError listing the heads."""
    check_name("head", name)
    path = head_dir(col, name) / META
    if not path.is_file():
        raise UnknownNameError("head", name, head_names(col), hint=f"collection {col.name!r}")
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:  # not UTF-8, not JSON, too deep
        raise DamagedHeadError(col.name, name, f"{META} is not readable JSON ({e})") from e
    problem = meta_problem(meta, name)
    if problem:
        raise DamagedHeadError(col.name, name, f"{META} {problem}")
    return dict(meta)


def meta_problem(meta: Any, name: str) -> str | None:
    """What is wrong with the shape of a head's metadata (what listing, staleness and
    loading read), or None."""
    if not isinstance(meta, dict):
        return f"is a JSON {type(meta).__name__}, not an object"
    if meta.get("name") != name:
        return f"names the head {meta.get('name')!r}, not its folder's name {name!r}"
    for key, kind in (("kind", str), ("config", dict), ("lineage", dict), ("metrics", dict)):
        if not isinstance(meta.get(key), kind):
            return f"has no {key!r} {kind.__name__}"
    fields = meta["lineage"].get("fields")
    if not isinstance(fields, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("encoder_key"), str) for v in fields.values()
    ):
        return "has no lineage of its input fields"
    return None


def load_weights(col: CollectionState, name: str) -> dict[str, torch.Tensor]:
    """The head's tensors; a file that is not valid safetensors raises DamagedHeadError."""
    try:
        return load_file(head_dir(col, name) / WEIGHTS)
    except (OSError, SafetensorError) as e:
        raise DamagedHeadError(col.name, name, f"{WEIGHTS} cannot be read ({e})") from e


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of the sorted ids, one per line."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def lineage(
    col: CollectionState,
    inputs: Sequence[str],
    keys: dict[str, str],
    watermark: int,
    ids: Sequence[str],
) -> dict[str, Any]:
    """Per input field the encoder identity its vectors came from; the catalog watermark;
    the record count and a digest of the ids the head was trained and evaluated on."""
    fields = {}
    for f in inputs:
        ident = col.active[f].identity
        key = keys.get(f, ident.key)
        fields[f] = {
            "encoder_key": key,
            "encoder": ident.name,
            "version": ident.version,
            "space": ident.space,
            "dim": ident.dim,
            "metric": ident.metric,
            "current_when_trained": key == ident.key,
        }
    return {
        "fields": fields,
        "watermark": int(watermark),
        "records": len(ids),
        "ids_sha256": ids_digest(ids),
    }


def staleness(col: CollectionState, meta: dict[str, Any]) -> str | None:
    """Why the head is stale (a field removed or re-embedded since), or None when current."""
    reasons = []
    for f, lin in meta["lineage"]["fields"].items():
        if f not in col.active:
            reasons.append(f"field {f!r} no longer exists")
        elif col.active[f].key != lin["encoder_key"]:
            reasons.append(
                f"field {f!r} was re-embedded (trained on encoder key {lin['encoder_key']}, "
                f"now {col.active[f].key})"
            )
    return "; ".join(reasons) or None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_head(
    col: CollectionState,
    name: str,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    extras: Callable[[Path], dict[str, str]],
) -> Path:
    """Write weights, plots (``extras(folder)`` returns their file names) and head.json in
    a temporary folder, then move it into place; return the head's folder."""
    with storage.guard(str(col.store.path), f"writing head {name!r}"):
        return _write_folder(heads_root(col), name, state, meta, extras)


def _write_folder(
    root: Path,
    name: str,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    extras: Callable[[Path], dict[str, str]],
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".{name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp / WEIGHTS)
        meta = meta | {"files": {"weights": WEIGHTS, **extras(tmp)}, "format": FORMAT}
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        for p in tmp.iterdir():
            _fsync(p)
        swap_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def sweep(col: CollectionState) -> None:
    """Put back a head that a killed training was swapping, and remove the temporary
    folders it left (also done for every collection when the store opens)."""
    recover_folders(heads_root(col))


def iter_metas(col: CollectionState) -> Iterator[dict[str, Any]]:
    for name in head_names(col):
        yield read_meta(col, name)
