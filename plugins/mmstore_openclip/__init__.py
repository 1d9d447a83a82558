"""Built-in plugin: the ``open_clip`` encoder, images and text in one embedding space.

``pretrained`` must be given: a local checkpoint file, an open_clip tag (``"openai"``), or
``"hf-hub:org/name"``; tags and hub names are read only from the local caches, as nothing
is downloaded at run time. ``None`` asks for random weights (seeded, so the same in every
process)::

    encoders={
        "image": {"encoder": "open_clip", "model": "ViT-B-32", "pretrained": "/m/vit.safetensors"},
        "caption": {"encoder": "open_clip", "modality": "text", "model": "ViT-B-32",
                    "pretrained": "/m/vit.safetensors"},
    }
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field

from mmstore.plugin import (
    ConfigError,
    Encoder,
    EncoderParams,
    canonical_json,
    hookimpl,
    shared_pool,
)

from .models import Loaded, Spec, clear, load, resolve_device
from .weights import config_hash, parse_weights, resolve_config

__all__ = ["OpenClipEncoder", "OpenClipParams", "clear_models"]

#: model batches per encode() call, so that decoding the next one overlaps the model
CALL_BATCHES = 8
clear_models = clear


class OpenClipParams(EncoderParams):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        protected_namespaces=(),
    )

    #: an open_clip architecture name (``open_clip.list_models()``) or the name a
    #: ``model_config`` file is registered under
    model: str = Field(min_length=1)
    #: a checkpoint file, an open_clip tag, ``hf-hub:org/name``, or None for random weights
    pretrained: str | None
    #: seed of random weights (``pretrained=None``)
    seed: int = 0
    #: path of an open_clip model-config JSON for an architecture open_clip does not ship
    config_path: str | None = Field(None, alias="model_config")
    device: str = "auto"
    #: fp16 and bf16 need CUDA
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    #: images or texts per model call
    batch_size: int = Field(32, ge=1, le=4096)


class OpenClipEncoder(Encoder):
    """Images and text to one space with an OpenCLIP model, loaded once per process."""

    name = "open_clip"
    version = "1"
    modalities = ("image", "text")
    Params = OpenClipParams
    params: OpenClipParams

    def __init__(self, **params: Any) -> None:
        if "pretrained" not in params:
            raise ConfigError(
                "encoder 'open_clip': give pretrained= a local checkpoint file, an open_clip "
                "tag such as 'openai', 'hf-hub:org/name', or None for random weights"
            )
        super().__init__(**params)
        p = self.params
        self.batch_size = p.batch_size * CALL_BATCHES
        self.weights = parse_weights(p.pretrained, p.seed)
        self.config = resolve_config(p.model, p.config_path, self.weights)
        self.device = None if p.precision == "fp32" else resolve_device(p.device)
        if self.device is not None and not self.device.startswith("cuda"):
            raise ConfigError(
                f"encoder 'open_clip': precision {p.precision!r} needs a CUDA device, and this "
                f"encoder runs on {self.device!r}; use precision='fp32' or device='cuda'"
            )
        self.weights_id = self.weights.describe()

    @property
    def dim(self) -> int:
        return int(self.config["embed_dim"])

    def identity_params(self) -> dict[str, Any]:
        """The architecture by content and the weights by content (files) or name."""
        return {
            "model": self.params.model,
            "config_sha256": config_hash(self.config),
            "weights": self.weights_id,
        }

    def runtime_params(self) -> tuple[str, ...]:
        return ("device", "precision", "batch_size")

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        if not len(items):
            return np.zeros((0, self.dim), np.float32)
        loaded = self.loaded()
        if modality == "text":
            return self._batched(items, loaded.encode_text)
        if modality == "image":
            return self._images(loaded, items)
        raise ConfigError(f"encoder 'open_clip' encodes image and text, not {modality!r}")

    def loaded(self) -> Loaded:
        """The model, shared by encoders of the same identity; a checkpoint file that no
        longer holds the content ``weights_id`` names raises EncoderChangedError."""
        p = self.params
        device = self.device or resolve_device(p.device)
        config = canonical_json(self.config)
        given = p.config_path is not None
        spec = Spec(p.model, config, given, self.weights, self.weights_id, device, p.precision)
        return load(spec)

    def _batched(self, items: Sequence[Any], run: Any) -> np.ndarray:
        size = self.params.batch_size
        parts = [run([str(t) for t in items[i : i + size]]) for i in range(0, len(items), size)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _images(self, loaded: Loaded, items: Sequence[Any]) -> np.ndarray:
        """Decode and preprocess the next batch in threads while the model runs this one."""
        import torch

        size = self.params.batch_size
        batches = [items[i : i + size] for i in range(0, len(items), size)]
        parts = []
        ahead = _submit(loaded, batches[0])
        try:
            for i in range(len(batches)):
                pixels = torch.stack([f.result() for f in ahead])
                ahead = _submit(loaded, batches[i + 1]) if i + 1 < len(batches) else []
                parts.append(loaded.encode_image(pixels))
        finally:
            for f in ahead:
                f.cancel()
        return np.concatenate(parts).astype(np.float32, copy=False)


def _submit(loaded: Loaded, batch: Sequence[Any]) -> list[Future[Any]]:
    return [_pool().submit(_pixels, loaded, item) for item in batch]


def _pixels(loaded: Loaded, item: Any) -> Any:
    """One image value (anything with ``load()`` giving a PIL image, or a PIL image)."""
    from PIL import Image

    image = item if isinstance(item, Image.Image) else item.load()
    return loaded.preprocess(image.convert("RGB") if image.mode != "RGB" else image)


def _pool() -> ThreadPoolExecutor:
    return shared_pool("openclip", most=4)


@hookimpl
def mmstore_register_encoders() -> list[type[Encoder]]:
    return [OpenClipEncoder]
