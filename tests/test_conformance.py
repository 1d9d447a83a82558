"""mmstore's conformance kit (:mod:`mmstore.testing`) over every built-in encoder and
modality, built through the plugin manager as a store builds them; encoders get the values
their modality's ``validate`` gives, as at ingest. A built-in without a case here fails
the completeness test, so a new one cannot skip the kit. The value types asserted here are
those docs/plugins.md states per modality."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from mmstore_audio.value import AudioValue
from mmstore_image.value import ImageValue
from mmstore_openclip.testing import random_encoder
from PIL import Image

from mmstore.plugin.encoder import Encoder
from mmstore.plugin.manager import PluginHost
from mmstore.plugin.modality import Modality
from mmstore.storage.media import MediaStore
from mmstore.testing import check_encoder, check_modality

SR = 16_000


def png(seed: int, size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def wav(freq: float, seconds: float = 0.5) -> bytes:
    t = np.arange(int(SR * seconds)) / SR
    out = io.BytesIO()
    sf.write(out, 0.5 * np.sin(2 * np.pi * freq * t), SR, format="WAV")
    return out.getvalue()


#: per modality: good raw values, bad raw values, and the type an encoder receives
MODALITY_CASES: dict[str, tuple[list[Any], list[Any], type]] = {
    "text": (["a red shoe", "blue hat", "é ünïcode"], [7, "  ", b"\xff\xfe"], str),
    "vector": ([[1.0, 0.0, 2.0], np.arange(3), (0.5, 0.5, 0.5)], ["abc", [np.nan], []], np.ndarray),
    "image": (
        [png(1), png(2), Image.open(io.BytesIO(png(3)))],
        [b"", b"not an image", 7],
        ImageValue,
    ),
    "audio": (
        [wav(440), wav(300), (np.random.default_rng(0).normal(0, 0.1, SR // 4), SR)],
        [b"", b"RIFF", 7],
        AudioValue,
    ),
    "tabular": ([{"price": 1, "brand": "acme"}, {"price": 2.5, "brand": None}], [7, "x"], dict),
}
#: per encoder: the modality (or modalities) checked and its parameters
ENCODER_CASES: dict[str, tuple[tuple[str, ...], Callable[[Path], dict[str, Any]]]] = {
    "precomputed": (("vector",), lambda _: {"dim": 3}),
    "sentence_transformers": (("text",), lambda _: {}),
    "open_clip": (("image", "text"), lambda folder: _clip(folder)),
    "logmel": (("audio",), lambda _: {"n_mels": 32}),
    "tabular": (("tabular",), lambda _: {"numeric": ["price"], "categorical": ["brand"]}),
}


def _clip(folder: Path) -> dict[str, Any]:
    params = random_encoder(folder, "conformance-tiny")
    del params["encoder"]
    return params | {"batch_size": 2}


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost(entrypoints=False)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaStore]:
    yield MediaStore(tmp_path_factory.mktemp("media"))


def _modality(host: PluginHost, name: str, media: MediaStore) -> Modality:
    return host.modality_class(name)(media=media)


def test_every_built_in_has_a_case(host: PluginHost) -> None:
    assert set(host.modalities) == set(MODALITY_CASES)
    assert set(host.encoders) == set(ENCODER_CASES)


@pytest.mark.parametrize("name", sorted(MODALITY_CASES))
def test_modality_conformance(host: PluginHost, media: MediaStore, name: str) -> None:
    good, bad, _ = MODALITY_CASES[name]
    check_modality(_modality(host, name, media), good, bad, field=name)


@pytest.mark.parametrize("name", sorted(MODALITY_CASES))
def test_an_encoder_receives_the_type_the_docs_state(
    host: PluginHost, media: MediaStore, name: str
) -> None:
    good, _, received = MODALITY_CASES[name]
    modality = _modality(host, name, media)
    assert {type(modality.validate(v, "r", name)) for v in good} == {received}
    docs = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    assert f"| `{name}` | `{received.__name__}`" in docs


@pytest.mark.parametrize("name", sorted(ENCODER_CASES))
def test_encoder_conformance(
    host: PluginHost, media: MediaStore, name: str, tmp_path: Path
) -> None:
    modalities, params = ENCODER_CASES[name]
    encoder: Encoder = host.encoder_class(name)(**params(tmp_path))
    for modality in modalities:
        kit = _modality(host, modality, media)
        samples = [
            kit.validate(v, f"s{i}", modality) for i, v in enumerate(MODALITY_CASES[modality][0])
        ]
        if encoder.fitted:
            encoder.load_state(encoder.fit(samples, modality))
        check_encoder(encoder, samples, modality)
