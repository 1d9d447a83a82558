"""Small OpenCLIP architectures for tests and examples: a model config written as JSON and
weights saved as safetensors, loadable through ``pretrained=<file>`` with no network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def tiny_config(embed_dim: int = 32, image_size: int = 32, width: int = 64) -> dict[str, Any]:
    """A CLIP small enough to train for seconds on a CPU."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "patch_size": 8, "layers": 2, "width": width},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": width,
            "heads": 2,
            "layers": 2,
        },
    }


def write_config(folder: Path, name: str, config: dict[str, Any] | None = None) -> Path:
    """Write ``config`` (default :func:`tiny_config`) as ``folder/<name>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config or tiny_config(), indent=1))
    return path


def build(name: str, config_path: Path, seed: int = 0) -> Any:
    """A randomly initialized model of the architecture in ``config_path`` (seeded)."""
    import open_clip
    import torch

    from .models import _register
    from .weights import read_config

    _register(open_clip, name, read_config(config_path))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    return model, preprocess, open_clip.get_tokenizer(name)


def save_weights(model: Any, path: Path) -> Path:
    """Save a model's state dict as safetensors (what ``pretrained=<file>`` loads)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, path)
    return path


def random_encoder(folder: Path, name: str, seed: int = 0) -> dict[str, Any]:
    """Encoder parameters of a tiny CLIP with random weights (``seed``) saved under
    ``folder`` and loaded through the real ``pretrained=<file>`` path."""
    config = write_config(folder, name)
    model, _, _ = build(name, config, seed=seed)
    return {
        "encoder": "open_clip",
        "model": name,
        "model_config": str(config),
        "pretrained": str(save_weights(model, folder / f"{name}-{seed}.safetensors")),
    }
