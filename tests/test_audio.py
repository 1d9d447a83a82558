"""The built-in audio plugin: the ``audio`` modality and the ``logmel`` encoder, on real
WAV/FLAC/OGG files written with soundfile from generated tones, chirps and noise.

Accepted: WAV, FLAC and OGG bytes; a path (``str`` or ``Path``) under the roots; arrays as
``(array, rate)`` or ``{"array", "sample_rate"}`` at 8, 16, 44.1 and 48 kHz, float, int16
or uint8 (kept exactly), mono or stereo (downmixed by mean).

Bad inputs tried (each must raise a RecordError naming the record and the field, and the
call must write no record or vector): a WAV cut short, a FLAC cut short, random bytes,
empty bytes, an AIFF file (another format), a clip longer than ``max_seconds`` (also one
cut short, refused on its header before decoding), a file over ``max_bytes``, a file with
more than ``MAX_CHANNELS`` channels or decoding to more than ``max_decoded_mb`` (both seen
in the header), a one-sample clip and a click on the window's zero edge (no spectrum to
embed), an array whose conversion raises an unexpected error, silence (an
all-zero array, a -100 dBFS WAV), NaN samples (in an array, in a float WAV), a path
outside the roots, a symlink under the roots escaping them, a missing file, a directory,
any path when no roots are configured, a float / str / out-of-range sample rate, a 3-d
array, a (channels, frames) array, complex and int64 samples, an empty array, a ragged list, a dict with
other keys, a 3-tuple, an int and a list.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from mmstore_audio import Audio, AudioSourceError, AudioValue, LogMel
from mmstore_audio.decode import MAX_CHANNELS

import mmstore
from mmstore.testing import check_encoder, check_modality

SR = 16_000


def tone(freq: float, rate: int = SR, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(rate: int = SR, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (200 * t + 1500 * t**2))).astype(np.float32)


def noise(rate: int = SR, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def encoded(
    samples: np.ndarray, rate: int = SR, fmt: str = "WAV", subtype: str | None = None
) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture
def audio_store(tmp_path: Path) -> Iterator[mmstore.Store]:
    with mmstore.open(tmp_path / "s") as s:
        yield s


def make_col(store: mmstore.Store, roots: list[str], **options: Any) -> mmstore.Collection:
    return store.create_collection(
        "c",
        encoders={"audio": {"encoder": "logmel"}},
        options={"audio": {"roots": roots, "max_seconds": 5.0, "max_bytes": 400_000, **options}},
    )


@pytest.fixture
def acol(audio_store: mmstore.Store, tmp_path: Path) -> mmstore.Collection:
    return make_col(audio_store, [str(tmp_path)])


def modality_of(col: mmstore.Collection) -> Audio:
    m = col.fields["audio"].modality
    assert isinstance(m, Audio)
    return m


def media_blobs(store: mmstore.Store) -> list[Path]:
    return [p for p in (store.path / "media").rglob("*") if p.is_file()]


# -- accepted inputs --------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", None), ("OGG", None)])
def test_accepts_encoded_bytes(acol: mmstore.Collection, fmt: str, subtype: str | None) -> None:
    acol.ingest({"id": "a", "audio": encoded(tone(440), SR, fmt, subtype)})
    source = acol.get("a")[0]["audio"]
    assert source["format"] == fmt and source["sample_rate"] == SR
    assert source["seconds"] == pytest.approx(1.0)


def test_accepts_paths_under_the_roots(acol: mmstore.Collection, tmp_path: Path) -> None:
    sf.write(tmp_path / "a.flac", tone(440, 44_100), 44_100)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "b.wav", chirp(), SR)
    report = acol.ingest(
        [
            {"id": "a", "audio": str(tmp_path / "a.flac")},
            {"id": "b", "audio": tmp_path / "sub/b.wav"},
        ]
    )
    assert report.written == 2 and acol.count() == 2
    assert acol.get("a")[0]["audio"]["sample_rate"] == 44_100


@pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
def test_accepts_arrays_at_any_rate(acol: mmstore.Collection, rate: int) -> None:
    acol.ingest(
        [
            {"id": "tuple", "audio": (tone(440, rate), rate)},
            {"id": "dict", "audio": {"array": tone(660, rate), "sample_rate": np.int64(rate)}},
            {"id": "int16", "audio": ((tone(880, rate) * 32767).astype(np.int16), rate)},
        ]
    )
    assert acol.count() == 3
    assert {s["audio"]["sample_rate"] for s in acol.get(["tuple", "dict", "int16"])} == {rate}


def test_uint8_arrays_are_kept_exactly(acol: mmstore.Collection) -> None:
    """8-bit unsigned samples (offset binary, 128 is zero) are stored as 8-bit WAV."""
    u8 = np.round(tone(440) * 127 + 128).astype(np.uint8)
    value = modality_of(acol).validate((u8, SR), "u8", "audio")
    mono, _ = value.load()
    np.testing.assert_array_equal(mono, (u8.astype(np.float32) - 128) / 128)
    acol.ingest({"id": "u8", "audio": (u8, SR)})
    assert acol.search(audio=(tone(440), SR), k=1).ids == ["u8"]


def test_stereo_is_downmixed_by_mean(acol: mmstore.Collection) -> None:
    left, right = tone(440), chirp()
    value = modality_of(acol).validate((np.stack([left, right], axis=1), SR), "s", "audio")
    mono, rate = value.load()
    assert value.channels == 2 and rate == SR
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-6)
    acol.ingest({"id": "s", "audio": (np.stack([left, right], axis=1), SR)})
    assert acol.get("s")[0]["audio"]["channels"] == 2


# -- refused inputs ---------------------------------------------------------------------
def _symlink_escape(tmp_path: Path) -> str:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir(exist_ok=True)
    sf.write(outside / "x.wav", tone(440), SR)
    (tmp_path / "link.wav").symlink_to(outside / "x.wav")
    return str(tmp_path / "link.wav")


def _outside(tmp_path: Path) -> str:
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir(exist_ok=True)
    sf.write(outside / "x.wav", tone(440), SR)
    return str(outside / "x.wav")


def _nan_wav(tmp_path: Path) -> bytes:
    x = tone(440)
    x[100] = np.nan
    return encoded(x, SR, "WAV", "FLOAT")


def _nan_array(tmp_path: Path) -> tuple[np.ndarray, int]:
    x = tone(440)
    x[5] = np.nan
    return x, SR


class _BrokenArray:
    """An array-like whose conversion fails with an error no check expects."""

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise RuntimeError("sensor disconnected")


BAD: dict[str, tuple[Callable[[Path], Any], str]] = {
    "truncated-wav": (lambda p: encoded(tone(440))[:-1000], "truncated"),
    "truncated-flac": (
        lambda p: (b := encoded(tone(440) + noise(), SR, "FLAC"))[: len(b) // 2],
        "truncated",
    ),
    "random-bytes": (lambda p: np.random.default_rng(1).bytes(4000), "not readable"),
    "empty-bytes": (lambda p: b"", "empty"),
    "aiff": (lambda p: encoded(tone(440), SR, "AIFF"), "AIFF files are not accepted"),
    "too-long": (lambda p: encoded(tone(440, 8_000, seconds=6.0), 8_000), "max_seconds"),
    "too-long-header-first": (
        lambda p: (b := encoded(noise(8_000, 6.0), 8_000, "FLAC"))[: len(b) // 3],
        "lasts 6.0 s",
    ),
    "too-many-bytes": (
        lambda p: encoded(np.stack([tone(440)] * 8, axis=1), SR, "WAV", "FLOAT"),
        "max_bytes",
    ),
    "silent-array": (lambda p: (np.zeros(SR, np.float32), SR), "silent"),
    "silent-wav": (lambda p: encoded(tone(440, amp=1e-5), SR, "WAV", "FLOAT"), "silent"),
    "too-many-channels": (
        lambda p: encoded(np.stack([tone(440, seconds=0.1)] * (MAX_CHANNELS + 1), axis=1)),
        f"{MAX_CHANNELS + 1} channels, more than {MAX_CHANNELS}",
    ),
    "one-sample": (lambda p: (np.array([0.5], np.float32), SR), "too short to give a spectrum"),
    "click-on-window-edge": (
        lambda p: (np.r_[0.5, np.zeros(199)].astype(np.float32), SR),
        "no power above",
    ),
    "broken-array": (lambda p: (_BrokenArray(), SR), "RuntimeError: sensor disconnected"),
    "nan-array": (_nan_array, "NaN"),
    "nan-wav": (_nan_wav, "NaN"),
    "outside-roots": (_outside, "outside the allowed roots"),
    "symlink-escape": (_symlink_escape, "outside the allowed roots"),
    "missing-file": (lambda p: str(p / "nope.wav"), "no such file"),
    "directory": (lambda p: str(p), "not a regular file"),
    "float-rate": (lambda p: (tone(440), 16_000.0), "sample rate must be an int"),
    "str-rate": (lambda p: (tone(440), "16k"), "sample rate must be an int"),
    "tiny-rate": (lambda p: (tone(440), 10), "outside 1000..384000"),
    "3d-array": (lambda p: (np.ones((10, 2, 2), np.float32), SR), "shape"),
    "channels-first": (lambda p: (np.stack([tone(440)] * 2), SR), "transpose"),
    "complex": (lambda p: (tone(440).astype(np.complex64), SR), "dtype complex64"),
    "int64": (lambda p: ((tone(440) * 1000).astype(np.int64), SR), "dtype int64"),
    "empty-array": (lambda p: (np.zeros(0, np.float32), SR), "no samples"),
    "ragged-list": (lambda p: ([0.1, [0.2, 0.3]], SR), "not a numeric array"),
    "dict-keys": (lambda p: {"samples": tone(440), "rate": SR}, "keys 'array' and 'sample_rate'"),
    "3-tuple": (lambda p: (tone(440), SR, 1), "(array, sample_rate)"),
    "int": (lambda p: 42, "got int"),
    "list": (lambda p: [0.1, 0.2], "got list"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_naming_record_and_field(
    acol: mmstore.Collection, tmp_path: Path, case: str
) -> None:
    make, says = BAD[case]
    good = {"id": "good", "audio": encoded(tone(440))}
    with pytest.raises(mmstore.RecordError) as err:
        acol.ingest([good, {"id": "bad", "audio": make(tmp_path)}])
    assert (err.value.record_id, err.value.field) == ("bad", "audio")
    assert says in str(err.value)
    assert acol.count() == 0
    assert acol.search(audio=encoded(tone(440)), k=3).ids == []


def test_decoded_size_is_refused_on_the_header(audio_store: mmstore.Store, tmp_path: Path) -> None:
    """48 kHz stereo for 3 s decodes to 1.1 MiB of float32: over max_decoded_mb=1, seen in
    the header of a file cut short (decoding first would report the truncation)."""
    col = make_col(audio_store, [str(tmp_path)], max_decoded_mb=1)
    flac = encoded(np.stack([tone(440, 48_000, 3.0)] * 2, axis=1), 48_000, "FLAC")
    assert len(flac) < 400_000
    for value in (flac, flac[: len(flac) // 3]):
        with pytest.raises(mmstore.RecordError, match=r"'bad', field 'audio'.*max_decoded_mb=1"):
            col.ingest([{"id": "good", "audio": encoded(tone(440))}, {"id": "bad", "audio": value}])
    assert col.count() == 0
    col.ingest(
        {"id": "a", "audio": encoded(np.stack([tone(440, 48_000, 2.0)] * 2, axis=1), 48_000)}
    )
    assert col.count() == 1


def test_paths_are_refused_without_roots(audio_store: mmstore.Store, tmp_path: Path) -> None:
    col = make_col(audio_store, [])
    sf.write(tmp_path / "a.wav", tone(440), SR)
    with pytest.raises(mmstore.RecordError, match=r"'a', field 'audio'.*no roots.*'roots'"):
        col.ingest({"id": "a", "audio": str(tmp_path / "a.wav")})
    assert col.count() == 0


def test_skip_drops_only_the_bad_record(acol: mmstore.Collection) -> None:
    report = acol.ingest(
        [
            {"id": "a", "audio": encoded(tone(440))},
            {"id": "bad", "audio": encoded(tone(440))[:-500]},
            {"id": "b", "audio": (noise(), SR)},
        ],
        on_error="skip",
    )
    assert report.written == 2 and [(r.id, r.field) for r in report.rejected] == [("bad", "audio")]
    assert "truncated" in report.rejected[0].reason
    assert sorted(r["id"] for r in acol.get(["a", "b"])) == ["a", "b"]


@pytest.mark.parametrize(
    "case", ["too-many-channels", "one-sample", "click-on-window-edge", "broken-array"]
)
def test_skip_drops_only_a_record_refused_by_header_encoder_or_surprise(
    acol: mmstore.Collection, tmp_path: Path, case: str
) -> None:
    make, says = BAD[case]
    report = acol.ingest(
        [
            {"id": "a", "audio": encoded(tone(440))},
            {"id": "bad", "audio": make(tmp_path)},
            {"id": "b", "audio": (noise(), SR)},
        ],
        on_error="skip",
    )
    assert report.written == 2 and [(r.id, r.field) for r in report.rejected] == [("bad", "audio")]
    assert says in report.rejected[0].reason


def test_bad_query_value_is_an_invalid_input(acol: mmstore.Collection) -> None:
    acol.ingest({"id": "a", "audio": encoded(tone(440))})
    with pytest.raises(mmstore.InvalidInputError, match="silent"):
        acol.search(audio=(np.zeros(SR, np.float32), SR))
    with pytest.raises(mmstore.InvalidInputError, match="too short to give a spectrum"):
        acol.search(audio=(np.array([0.5], np.float32), SR))


# -- what the vectors mean --------------------------------------------------------------
@pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
def test_same_tone_at_another_rate_gives_nearly_the_same_vector(rate: int) -> None:
    audio, enc = Audio(), LogMel()
    ref = audio.validate((tone(440), SR), "ref", "audio")
    other = audio.validate((tone(440, rate), rate), "other", "audio")
    a, b = enc.encode([ref, other], "audio")
    assert cosine(a, b) > 0.99


def test_vectors_ignore_the_level_but_not_the_pitch() -> None:
    audio, enc = Audio(), LogMel()
    loud, quiet, higher = enc.encode(
        [
            audio.validate((tone(440), SR), "loud", "audio"),
            audio.validate((tone(440, amp=0.003), SR), "quiet", "audio"),
            audio.validate((tone(1000), SR), "higher", "audio"),
        ],
        "audio",
    )
    assert cosine(loud, quiet) > 0.999
    assert cosine(loud, higher) < 0.5


def test_search_with_a_tone_finds_the_same_tone_first(acol: mmstore.Collection) -> None:
    acol.ingest(
        [
            {"id": "440", "audio": encoded(tone(440), SR, "FLAC")},
            {"id": "2k", "audio": encoded(tone(2000))},
            {"id": "noise", "audio": encoded(noise(), SR, "OGG")},
            {"id": "chirp", "audio": (chirp(), SR)},
        ]
    )
    hits = acol.search(audio=(tone(440, 44_100, seconds=0.7), 44_100), k=4)
    assert hits.ids[0] == "440"
    scores = {h.id: h.score for h in hits}
    assert scores["440"] > 0.99 > max(scores["2k"], scores["noise"]) + 0.5


def test_clip_shorter_than_a_window_is_padded() -> None:
    value = Audio().validate((tone(440, seconds=0.01), SR), "short", "audio")
    (vec,) = LogMel().encode([value], "audio")
    assert np.isfinite(vec).all() and np.linalg.norm(vec) > 0


def test_encoder_conformance() -> None:
    audio = Audio()
    samples = [
        audio.validate(v, f"s{i}", "audio")
        for i, v in enumerate(
            [(tone(440), SR), (noise(), SR), (chirp(22_050), 22_050), (tone(300, seconds=0.02), SR)]
        )
    ]
    check_encoder(LogMel(n_mels=32), samples, "audio")


def test_dim_comes_from_the_parameters() -> None:
    assert LogMel().dim == 256 and LogMel(n_mels=40).dim == 160


@pytest.mark.parametrize(
    "params", [{"fmax": 9000}, {"fmin": 500, "fmax": 400}, {"hop": 500}, {"n_mel": 3}]
)
def test_bad_encoder_parameters_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(mmstore.ConfigError):
        LogMel(**params)


# -- storage ----------------------------------------------------------------------------
def test_modality_conformance(acol: mmstore.Collection, tmp_path: Path) -> None:
    sf.write(tmp_path / "a.ogg", tone(440), SR)
    good = [encoded(chirp()), str(tmp_path / "a.ogg"), (noise(48_000), 48_000)]
    bad = [b"", b"RIFF", (tone(440), 1.5), 7]
    check_modality(modality_of(acol), good, bad, field="audio")


def test_media_is_stored_once_per_content(acol: mmstore.Collection, tmp_path: Path) -> None:
    data = encoded(tone(440), SR, "FLAC")
    (tmp_path / "same.flac").write_bytes(data)
    acol.ingest(
        [
            {"id": "a", "audio": data},
            {"id": "b", "audio": data},
            {"id": "c", "audio": str(tmp_path / "same.flac")},
        ]
    )
    sources = [r["audio"] for r in acol.get(["a", "b", "c"])]
    assert len({s["media"] for s in sources}) == 1
    (blob,) = media_blobs(acol.store)
    assert blob.read_bytes() == data


@pytest.mark.parametrize("kind", ["wav-bytes", "flac-path", "stereo-array", "ogg-bytes"])
def test_source_round_trip_gives_the_same_samples(
    acol: mmstore.Collection, tmp_path: Path, kind: str
) -> None:
    sf.write(tmp_path / "a.flac", chirp(44_100), 44_100)
    value_in = {
        "wav-bytes": encoded(tone(440)),
        "flac-path": str(tmp_path / "a.flac"),
        "stereo-array": (np.stack([tone(440), noise()], axis=1), SR),
        "ogg-bytes": encoded(chirp(), SR, "OGG"),
    }[kind]
    audio = modality_of(acol)
    value = audio.validate(value_in, "r", "audio")
    back = audio.from_source(audio.to_source(value))
    assert isinstance(back, AudioValue) and back.digest == value.digest
    np.testing.assert_array_equal(back.load()[0], value.load()[0])
    assert back.load()[1] == value.load()[1]


def test_reference_keeps_the_path_and_notices_a_changed_file(
    audio_store: mmstore.Store, tmp_path: Path
) -> None:
    col = make_col(audio_store, [str(tmp_path)], keep="reference")
    sf.write(tmp_path / "a.wav", tone(440), SR)
    col.ingest({"id": "a", "audio": str(tmp_path / "a.wav")})
    source = col.get("a")[0]["audio"]
    assert source["path"] == str((tmp_path / "a.wav").resolve()) and len(source["sha256"]) == 64
    assert media_blobs(audio_store) == []
    audio = modality_of(col)
    np.testing.assert_allclose(audio.from_source(source).load()[0], tone(440), atol=1e-4)
    sf.write(tmp_path / "a.wav", tone(880), SR)
    with pytest.raises(AudioSourceError, match="changed since it was ingested"):
        audio.from_source(source)
    (tmp_path / "a.wav").unlink()
    with pytest.raises(AudioSourceError, match="cannot be read"):
        audio.from_source(source)


def test_reembed_reads_the_stored_media(acol: mmstore.Collection) -> None:
    acol.ingest(
        [{"id": "440", "audio": encoded(tone(440))}, {"id": "2k", "audio": (tone(2000), SR)}]
    )
    report = acol.reembed("audio", encoder={"encoder": "logmel", "n_mels": 32})
    assert report.encoded == 2 and report.switched and not report.rejected
    assert acol.search(audio=(tone(440), SR), k=1).ids == ["440"]


def test_decoded_cache_does_not_change_the_vectors(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.flac", chirp(44_100), 44_100)
    sf.write(tmp_path / "b.wav", tone(440, 48_000), 48_000)
    paths = [str(tmp_path / "a.flac"), str(tmp_path / "b.wav")]
    ids = ["a", "b"]
    cached = Audio(roots=[str(tmp_path)]).validate_batch(paths, ids, "audio")
    uncached = Audio(roots=[str(tmp_path)], cache_mb=0).validate_batch(paths, ids, "audio")
    enc = LogMel()
    np.testing.assert_array_equal(enc.encode(cached, "audio"), enc.encode(uncached, "audio"))


def test_the_same_samples_always_encode_to_the_same_bytes() -> None:
    """libsndfile stamps a float WAV's PEAK chunk with the time of writing; an array value's
    digest (its content hash, unchanged-detection) must not depend on the clock. This made
    the conformance check flaky when validate and validate_batch straddled a second."""
    import time

    from mmstore_audio.decode import encode_wav

    samples = noise(seconds=0.1)[:, None]
    first = encode_wav(samples, SR)
    time.sleep(1.1)
    assert encode_wav(samples, SR) == first
