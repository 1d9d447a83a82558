"""Loading OpenCLIP models through open_clip's own factory, once per process (a module-level
cache behind a lock), and running them on batches of pixels or tokens."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmstore.plugin import (
    ConfigError,
    EncoderChangedError,
    MMStoreError,
    UnknownNameError,
    WeightsUnavailableError,
)

from .weights import (
    HOW_TO_PROVIDE,
    HUB_WEIGHTS,
    Weights,
    cached_hub_file,
    config_hash,
    hub_file,
    tag_checkpoint,
)


@dataclass(frozen=True)
class Spec:
    """What to load; equal specs share one loaded model."""

    model: str
    config: str  # canonical JSON of the model config
    config_given: bool  # from a model_config file, to register under ``model``
    weights: Weights
    #: ``weights.describe()`` when the encoder was built: the content its identity names
    weights_id: str
    device: str
    precision: str

    @property
    def key(self) -> tuple[str, ...]:
        """Weights by the content the encoder's identity names, not by what the file holds
        now: a model is cached only after its file was checked to hold that content."""
        return (self.model, self.config, self.weights_id, self.device, self.precision)


@dataclass(frozen=True)
class Loaded:
    """A model in eval mode with its preprocessing and tokenizer."""

    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[list[str]], Any]
    device: str
    input_dtype: Any

    def encode_image(self, pixels: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = pixels.to(self.device, dtype=self.input_dtype or torch.float32)
            return self.model.encode_image(x, normalize=True).float().cpu().numpy()

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()


_MODELS: dict[tuple[str, ...], Loaded] = {}
_LOCK = threading.Lock()
#: where model_config files are registered with open_clip (its registry is keyed by file name)
_CONFIG_DIR: Path | None = None


def load(spec: Spec) -> Loaded:
    """The model for ``spec``, created on first use in this process; the weights are
    checked against ``spec.weights_id`` before and after they are read."""
    with _LOCK:
        loaded = _MODELS.get(spec.key)
        if loaded is None:
            check_weights(spec)
            loaded = _create(spec)
            check_weights(spec)  # not rewritten while open_clip read it
            _MODELS[spec.key] = loaded
        return loaded


def check_weights(spec: Spec) -> None:
    """Refuse weights that are no longer those the encoder's identity names (a checkpoint
    file overwritten, or gone, since the encoder was built)."""
    w = spec.weights
    try:
        current = w.describe()
    except OSError as e:
        raise WeightsUnavailableError(
            f"encoder 'open_clip': checkpoint {w.ref!r} cannot be read any more "
            f"({e.strerror or e}); restore it, or reopen the store with pretrained= set to "
            "the weights to use"
        ) from e
    if current != spec.weights_id:
        raise EncoderChangedError(
            f"encoder 'open_clip': checkpoint {w.ref!r} changed since the store opened "
            f"(it held {spec.weights_id}, it now holds {current}), so its vectors would not "
            "match the ones stored; reopen the store, which gives the encoder a new "
            "identity, and re-encode the field with col.reembed(field) (or restore the file)"
        )


def clear() -> None:
    """Forget every loaded model (frees memory; the next encode loads again)."""
    with _LOCK:
        _MODELS.clear()


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when a GPU is visible, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _create(spec: Spec) -> Loaded:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip
    import torch
    from open_clip.model import get_input_dtype

    name, kwargs = _source(open_clip, spec)
    kwargs |= {"device": spec.device, "precision": spec.precision}
    kwargs |= {"pretrained_image": False, "pretrained_text": False}  # nothing from the hub
    try:
        if spec.weights.kind == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.weights.seed)
                model, _, preprocess = open_clip.create_model_and_transforms(name, **kwargs)
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(name, **kwargs)
    except MMStoreError:
        raise
    except Exception as e:
        raise ConfigError(
            f"encoder 'open_clip': could not build model {spec.model!r} with weights "
            f"{spec.weights.ref or 'random'!r}: {type(e).__name__}: {e}"
        ) from e
    model.eval()
    tokenizer = _tokenizer(open_clip, spec, name)
    return Loaded(model, preprocess, tokenizer, spec.device, get_input_dtype(spec.precision))


def _source(open_clip: Any, spec: Spec) -> tuple[str, dict[str, Any]]:
    """The model name open_clip is given, and the weights argument."""
    w = spec.weights
    if w.kind == "hf-hub":
        folder = Path(hub_file(w.ref, "open_clip_config.json")).parent
        if not any(cached_hub_file(w.ref, f) for f in HUB_WEIGHTS):
            raise WeightsUnavailableError(
                f"the weights of hf-hub:{w.ref} are not in the Hugging Face cache; "
                + HOW_TO_PROVIDE
            )
        return f"local-dir:{folder}", {}
    if spec.config_given:
        _register(open_clip, spec.model, json.loads(spec.config))
    if w.kind == "file":
        return spec.model, {"pretrained": w.ref}
    if w.kind == "random":
        return spec.model, {"pretrained": None}
    cfg = open_clip.get_pretrained_cfg(spec.model, w.ref)
    if not cfg:
        raise UnknownNameError(
            f"open_clip pretrained tag for {spec.model!r}",
            w.ref,
            open_clip.list_pretrained_tags_by_model(spec.model),
            "or give pretrained= a checkpoint file",
        )
    preprocess = {
        "image_mean": cfg.get("mean"),
        "image_std": cfg.get("std"),
        "image_interpolation": cfg.get("interpolation"),
        "image_resize_mode": cfg.get("resize_mode"),
    }
    return spec.model, {"pretrained": tag_checkpoint(spec.model, w.ref, cfg), **preprocess}


def _register(open_clip: Any, model: str, config: dict[str, Any]) -> None:
    """Put a model_config file's architecture in open_clip's registry under ``model``."""
    name = model.replace("/", "-")
    known = open_clip.get_model_config(name)
    if known is not None:
        if config_hash(known) != config_hash(config):
            raise ConfigError(
                f"open_clip already knows a different model named {model!r}; give this "
                "architecture another model name"
            )
        return
    global _CONFIG_DIR
    _CONFIG_DIR = _CONFIG_DIR or Path(tempfile.mkdtemp(prefix="mmstore-openclip-"))
    path = _CONFIG_DIR / f"{name}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)


def _tokenizer(open_clip: Any, spec: Spec, name: str) -> Callable[[list[str]], Any]:
    """open_clip's tokenizer for the model; a Hugging Face tokenizer only from the cache."""
    text_cfg = json.loads(spec.config).get("text_cfg", {})
    hf_name = text_cfg.get("hf_tokenizer_name")
    if hf_name and not name.startswith("local-dir:"):
        from huggingface_hub import snapshot_download

        try:
            local = snapshot_download(hf_name, local_files_only=True)
        except Exception as e:
            raise WeightsUnavailableError(
                f"tokenizer {hf_name!r} of model {spec.model!r} is not in the Hugging Face "
                f"cache; {HOW_TO_PROVIDE}"
            ) from e
        from open_clip.tokenizer import HFTokenizer

        return HFTokenizer(
            local,
            context_length=text_cfg.get("context_length", 77),
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **text_cfg.get("tokenizer_kwargs", {}),
        )
    return open_clip.get_tokenizer(name)
