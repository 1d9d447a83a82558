"""Where an OpenCLIP model's architecture and weights come from, without a network: the
model config (read as data, never by a forward pass), a stable description of the weights
for the encoder's identity, and lookups that only ever touch local files and caches."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmstore.plugin import ConfigError, UnknownNameError, WeightsUnavailableError, canonical_json

HF_HUB_PREFIX = "hf-hub:"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npz")
#: weight files an open_clip Hugging Face repository holds, preferred first
HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HOW_TO_PROVIDE = (
    "mmstore downloads nothing at run time: pass pretrained= a local checkpoint file "
    "(.safetensors, .pt or .bin), or warm the Hugging Face cache on a machine with a network "
    "(open_clip.create_model_and_transforms(model, pretrained=...)) and copy it here"
)

_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


@dataclass(frozen=True)
class Weights:
    """Parsed ``pretrained``: a local file, an open_clip tag, a hub repo, or random."""

    kind: Literal["file", "tag", "hf-hub", "random"]
    #: resolved path, tag or repository; empty for random weights
    ref: str
    seed: int = 0

    def describe(self) -> str:
        """Stable text for the identity: a file by its content, so moving it changes nothing."""
        if self.kind == "file":
            return "sha256:" + file_sha256(Path(self.ref))
        if self.kind == "tag":
            return f"open_clip:{self.ref}"
        if self.kind == "hf-hub":
            return HF_HUB_PREFIX + self.ref
        return f"random:seed={self.seed}"


def parse_weights(pretrained: str | None, seed: int) -> Weights:
    """Classify ``pretrained``; a local path must exist now."""
    if pretrained is None:
        return Weights("random", "", seed)
    if pretrained.startswith(HF_HUB_PREFIX):
        repo = pretrained[len(HF_HUB_PREFIX) :].strip("/")
        if repo.count("/") != 1:
            raise ConfigError(
                f"pretrained={pretrained!r}: write a hub repository as hf-hub:org/name"
            )
        return Weights("hf-hub", repo)
    path = Path(pretrained).expanduser()
    looks_like_path = (
        path.suffix in CHECKPOINT_SUFFIXES or "/" in pretrained or os.sep in pretrained
    )
    if looks_like_path or path.exists():
        if not path.is_file():
            raise WeightsUnavailableError(
                f"pretrained={pretrained!r}: no checkpoint file there; give the path of an "
                "existing .safetensors, .pt or .bin file"
            )
        return Weights("file", str(path.resolve()))
    return Weights("tag", pretrained)


def file_sha256(path: Path) -> str:
    """A file's sha256, cached per path, size and modification time."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    with _HASH_LOCK:
        _HASHES[key] = h.hexdigest()
    return h.hexdigest()


# -- model configs ----------------------------------------------------------------------
def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def resolve_config(model: str, config_path: str | None, weights: Weights) -> dict[str, Any]:
    """The model config: a given JSON file, the hub repository's, or open_clip's registry."""
    if config_path is not None:
        config = read_config(Path(config_path).expanduser())
        registered = registry_config(model)
        if registered is not None and config_hash(registered) != config_hash(config):
            raise ConfigError(
                f"model_config {config_path!r}: open_clip already knows a different model "
                f"named {model!r}; give this architecture another model name"
            )
        return config
    if weights.kind == "hf-hub":
        return read_config(Path(hub_file(weights.ref, "open_clip_config.json")))
    known = registry_config(model)
    if known is None:
        raise UnknownNameError(
            "open_clip model",
            model,
            registry_names(),
            "give model_config= the path of a model-config JSON for other architectures",
        )
    return known


def read_config(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"model_config: no file at {str(path)!r}") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"model_config {str(path)!r} is not readable JSON: {e}") from e
    config = raw.get("model_cfg", raw) if isinstance(raw, dict) else None
    if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= config.keys():
        raise ConfigError(
            f"model_config {str(path)!r} is not an open_clip model config "
            "(it needs embed_dim, vision_cfg and text_cfg)"
        )
    return config


def registry_config(model: str) -> dict[str, Any] | None:
    """open_clip's config for ``model``, read from its package data unless open_clip is
    already imported (importing it takes seconds, and configs added at run time live there)."""
    name = model.replace("/", "-")
    if "open_clip" in sys.modules:
        config = sys.modules["open_clip"].get_model_config(name)
        return config if isinstance(config, dict) else None
    path = _config_folder() / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def registry_names() -> list[str]:
    if "open_clip" in sys.modules:
        return list(sys.modules["open_clip"].list_models())
    return sorted(p.stem for p in _config_folder().glob("*.json"))


def _config_folder() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("encoder 'open_clip' needs open-clip-torch: pip install open-clip-torch")
    return Path(next(iter(spec.submodule_search_locations))) / "model_configs"


# -- local caches -----------------------------------------------------------------------
def hub_file(repo: str, filename: str) -> str:
    """A file of a Hugging Face repository from the local cache only (no request is made)."""
    found = cached_hub_file(repo, filename)
    if found is None:
        raise WeightsUnavailableError(
            f"{filename} of hf-hub:{repo} is not in the Hugging Face cache; {HOW_TO_PROVIDE}"
        )
    return found


def cached_hub_file(repo: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return found if isinstance(found, str) else None


def tag_checkpoint(model: str, tag: str, pretrained_cfg: dict[str, Any]) -> str:
    """The local file holding the weights of open_clip tag ``tag``: in the Hugging Face
    cache, or in open_clip's download folder for weights published by URL."""
    hub = pretrained_cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)  # "org/name/" names the repository's default file
        names = [filename] if filename else list(HUB_WEIGHTS)
        if filename.endswith(".bin"):
            names.insert(0, filename.removesuffix(".bin") + ".safetensors")
        for name in names:
            found = cached_hub_file(repo, name)
            if found:
                return found
    url = pretrained_cfg.get("url", "")
    if url:
        local = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if local.is_file():
            return str(local)
    raise WeightsUnavailableError(
        f"the weights of open_clip tag {tag!r} for model {model!r} are not on this machine; "
        + HOW_TO_PROVIDE
    )
