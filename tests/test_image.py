"""The image modality through a real store, with a tiny OpenCLIP model saved to safetensors.

Accepted: a path (str and pathlib.Path) under a root, encoded bytes, a PIL image, uint8
arrays (HxW, HxWx3, HxWx4); an EXIF-rotated JPEG ends upright; RGBA, LA, L, P, 1 and I;16
end as RGB. The modality passes mmstore.testing.check_modality with keep="copy" and
keep="reference".

Bad inputs tried, each refused with a RecordError naming the record and the field; with
on_error="raise" nothing is written (no record, no media blob) and with on_error="skip" only
the bad record is dropped: a path outside the roots, a ``..`` path climbing out of a root, a
symlink under a root pointing outside it, a folder, a missing file, a path with no roots
configured, empty bytes, non-image bytes, corrupt PNG data, a truncated JPEG, a truncated
PNG, an image over max_pixels, a header claiming more pixels than Pillow allows (whose
DecompressionBombWarning must become the error, not a warning), bytes over max_bytes, a
float array, a 2-channel array, a 4-d array, an int and a dict; and valid images in formats
Pillow reads but the modality does not accept (EPS, PCX, ICO, TGA, PPM, the first also as a
``.png`` path): only JPEG, PNG, WebP, GIF, BMP and TIFF are decoded, on validation and when
an encoder loads a value.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mmstore_image import ImageModality, ImageValue, ReferenceChangedError
from mmstore_openclip.testing import random_encoder
from PIL import Image

import mmstore
from mmstore.testing import check_modality

pytestmark = pytest.mark.kernels  # also run on portable CPU kernels (Makefile)

TINY = "mms-tiny-image-test"


# -- helpers ----------------------------------------------------------------------------
def pixels(seed: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    """A small distinct RGB image (solid colour plus noise), as an array."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    noise = rng.integers(-20, 20, (size[1], size[0], 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encoded(seed: int, fmt: str = "PNG", size: tuple[int, int] = (8, 8), **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels(seed, size)).save(buf, fmt, **save)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (with almost no data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def corrupt_png() -> bytes:
    """A complete PNG whose compressed pixel data is garbage (chunk CRCs made valid)."""
    data = bytearray(encoded(1, size=(32, 32)))
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8 : start - 4])[0]
    data[start : start + length] = bytes((b * 7 + 13) % 256 for b in data[start : start + length])
    crc = zlib.crc32(bytes(data[start - 4 : start + length]))
    data[start + length : start + length + 4] = struct.pack(">I", crc)
    return bytes(data)


def blobs(store: mmstore.Store) -> list[Path]:
    return sorted(p for p in store.media.folder.rglob("*") if p.is_file())


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder_params(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny CLIP with random weights (seed 0), saved as safetensors."""
    return random_encoder(tmp_path_factory.mktemp("tiny"), TINY)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Iterator[mmstore.Store]:
    with mmstore.open(tmp_path / "s") as s:
        yield s


@pytest.fixture
def make_col(
    store: mmstore.Store, encoder_params: dict[str, Any], root: Path
) -> Callable[..., mmstore.Collection]:
    def make(name: str = "pics", **options: Any) -> mmstore.Collection:
        opts = {"roots": [str(root)], **options}
        return store.create_collection(
            name, encoders={"image": encoder_params}, options={"image": opts}
        )

    return make


# -- accepted inputs --------------------------------------------------------------------
def test_every_input_kind_is_stored_and_found_again(
    make_col: Callable[..., mmstore.Collection], store: mmstore.Store, root: Path
) -> None:
    (root / "a.png").write_bytes(encoded(1))
    (root / "b.jpg").write_bytes(encoded(2, "JPEG", quality=95))
    rgba = np.dstack([pixels(7), np.full((8, 8), 200, np.uint8)])
    inputs = {
        "path_str": str(root / "a.png"),
        "path_obj": root / "b.jpg",
        "bytes": encoded(3, "WEBP", lossless=True),
        "pil": Image.fromarray(pixels(4)),
        "gray": pixels(5)[..., 0],
        "rgb": pixels(6),
        "rgba": rgba,
    }
    col = make_col()
    report = col.ingest([{"id": k, "image": v} for k, v in inputs.items()])
    assert (report.written, report.rejected) == (7, [])
    assert col.count() == 7
    got = {r["id"]: r["image"] for r in col.get(list(inputs))}
    assert got["path_str"]["format"] == "PNG" and got["path_obj"]["format"] == "JPEG"
    assert got["bytes"]["format"] == "WEBP" and got["rgb"]["format"] == "PNG"
    assert all(g["width"] == g["height"] == 8 for g in got.values())
    assert store.media.get(got["path_obj"]["media"]) == (root / "b.jpg").read_bytes()
    assert len(blobs(store)) == 7
    for rid, value in inputs.items():
        hits = col.search(image=value, k=1)
        assert hits.ids == [rid], rid
        assert hits[0].score > 0.999


def test_arrays_and_pil_images_are_kept_losslessly() -> None:
    modality = ImageModality()
    rgb, gray = pixels(1, (5, 3)), pixels(2, (4, 6))[..., 1]
    rgba = np.dstack([pixels(3), np.arange(64, dtype=np.uint8).reshape(8, 8)])
    assert np.array_equal(np.asarray(modality.validate(rgb, "r", "image").load()), rgb)
    loaded_gray = np.asarray(modality.validate(gray, "r", "image").load())
    assert loaded_gray.shape == (6, 4, 3) and all(
        np.array_equal(loaded_gray[..., c], gray) for c in range(3)
    )
    value = modality.validate(rgba, "r", "image")
    assert (value.format, value.width, value.height) == ("PNG", 8, 8)
    assert np.array_equal(np.asarray(value.load()), rgba[..., :3])
    from_pil = modality.validate(Image.fromarray(rgb), "r", "image")
    assert from_pil.digest == modality.validate(rgb, "r", "image").digest


@pytest.mark.parametrize("keep", ["copy", "reference"])
def test_conformance(keep: str, root: Path, tmp_path: Path) -> None:
    (root / "a.png").write_bytes(encoded(1))
    (root / "b.jpg").write_bytes(encoded(2, "JPEG"))
    media = mmstore.MediaStore(tmp_path / "media")
    modality = ImageModality(media=media, roots=[str(root)], keep=keep)
    good = [str(root / "a.png"), root / "b.jpg", encoded(3), Image.fromarray(pixels(4)), pixels(5)]
    bad = [str(_outside(tmp_path)), b"", b"not an image", encoded(6)[:40], np.zeros((2, 2, 2)), 7]
    check_modality(modality, good, bad, field="image")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "1", "I;16", "CMYK"])
def test_every_mode_loads_as_rgb(mode: str) -> None:
    image = Image.fromarray(pixels(9)).convert(mode)
    modality = ImageModality()
    for given in (image, _save(image, "TIFF" if mode == "CMYK" else "PNG")):
        loaded = modality.validate(given, "r", "image").load()
        assert (loaded.mode, loaded.size) == ("RGB", (8, 8))
    if mode == "L":
        assert np.array_equal(np.asarray(loaded)[..., 2], np.asarray(image))


def test_an_exif_rotated_jpeg_ends_upright(root: Path) -> None:
    """Stored 40 wide by 20 high, red left and blue right, with orientation 6 (display
    rotated 90 degrees clockwise): upright it is 20 by 40, red on top."""
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = root / "rotated.jpg"
    stored.save(path, "JPEG", exif=exif, quality=95)
    modality = ImageModality(roots=[str(root)])
    for given in (str(path), path.read_bytes(), Image.open(path)):
        value = modality.validate(given, "r", "image")
        upright = value.load()
        assert (value.width, value.height) == (20, 40)
        assert upright.size == (20, 40)
        top, bottom = upright.getpixel((10, 5)), upright.getpixel((10, 35))
        assert top[0] > 200 and top[2] < 60, top
        assert bottom[2] > 200 and bottom[0] < 60, bottom


def _save(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


# -- refused inputs ---------------------------------------------------------------------
def _outside(tmp: Path) -> Path:
    folder = tmp / "elsewhere"
    folder.mkdir(exist_ok=True)
    path = folder / "x.png"
    path.write_bytes(encoded(50))
    return path


def _symlink(root: Path, tmp: Path) -> Path:
    link = root / "link.png"
    link.symlink_to(_outside(tmp))
    return link


def _dotdot(root: Path, tmp: Path) -> str:
    _outside(tmp)
    return f"{root}/../elsewhere/x.png"


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _folder(root: Path) -> str:
    (root / "sub").mkdir()
    return str(root / "sub")


BAD: dict[str, tuple[Callable[[Path, Path], Any], dict[str, Any], str]] = {
    "outside_root": (lambda r, t: str(_outside(t)), {}, "outside the allowed roots"),
    "dotdot": (lambda r, t: _dotdot(r, t), {}, "outside the allowed roots"),
    "symlink_escape": (lambda r, t: _symlink(r, t), {}, "outside the allowed roots"),
    "folder": (lambda r, t: _folder(r), {}, "not a regular file"),
    "missing_file": (lambda r, t: str(r / "nope.png"), {}, "no file at"),
    "no_roots": (lambda r, t: str(r / "ok.png"), {"roots": []}, "'roots'"),
    "empty_bytes": (lambda r, t: b"", {}, "empty"),
    "not_an_image": (lambda r, t: b"just some text, not an image", {}, "not an image"),
    "corrupt_png": (lambda r, t: corrupt_png(), {}, "truncated or corrupt"),
    "truncated_jpeg": (
        lambda r, t: encoded(8, "JPEG", (64, 64))[:400],
        {},
        "truncated or corrupt",
    ),
    "truncated_png": (lambda r, t: encoded(8, size=(64, 64))[:300], {}, "truncated or corrupt"),
    "over_max_pixels": (lambda r, t: encoded(9, size=(20, 20)), {"max_pixels": 100}, "max_pixels"),
    "bomb_header": (lambda r, t: png_header(15_000, 15_000), {}, "decompression bomb"),
    "over_max_bytes": (lambda r, t: encoded(9, size=(40, 40)), {"max_bytes": 500}, "max_bytes"),
    "float_array": (lambda r, t: np.zeros((8, 8, 3), np.float32), {}, "uint8"),
    "two_channels": (lambda r, t: np.zeros((8, 8, 2), np.uint8), {}, r"\(H, W, 3\)"),
    "four_dims": (lambda r, t: np.zeros((1, 8, 8, 3), np.uint8), {}, r"shape \(1, 8, 8, 3\)"),
    "eps": (lambda r, t: encoded(10, "EPS"), {}, "not a JPEG, PNG, WebP, GIF, BMP or TIFF"),
    "pcx": (lambda r, t: encoded(10, "PCX"), {}, "not a JPEG, PNG, WebP, GIF, BMP or TIFF"),
    "ico": (lambda r, t: encoded(10, "ICO"), {}, "not a JPEG, PNG, WebP, GIF, BMP or TIFF"),
    "tga": (lambda r, t: encoded(10, "TGA"), {}, "not a JPEG, PNG, WebP, GIF, BMP or TIFF"),
    "ppm": (lambda r, t: encoded(10, "PPM"), {}, "not a JPEG, PNG, WebP, GIF, BMP or TIFF"),
    "eps_named_png": (
        lambda r, t: _write(r / "disguised.png", encoded(10, "EPS")),
        {},
        "not a JPEG, PNG, WebP, GIF, BMP or TIFF",
    ),
    "an_int": (lambda r, t: 42, {}, "got int"),
    "a_dict": (lambda r, t: {"path": "x.png"}, {}, "got dict"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_image_is_refused_naming_record_and_field(
    case: str,
    make_col: Callable[..., mmstore.Collection],
    store: mmstore.Store,
    root: Path,
    tmp_path: Path,
) -> None:
    make_value, options, says = BAD[case]
    (root / "ok.png").write_bytes(encoded(60))
    value = make_value(root, tmp_path)
    col = make_col(**options)
    good = {"id": "good", "image": encoded(61)}
    bad = {"id": "bad", "image": value}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(mmstore.RecordError, match=says) as err:
            col.ingest([good, bad])
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    assert (err.value.record_id, err.value.field) == ("bad", "image")
    assert col.count() == 0 and blobs(store) == []
    report = col.ingest([good, bad, {"id": "good2", "image": encoded(62)}], on_error="skip")
    assert report.written == 2
    assert [(r.id, r.field) for r in report.rejected] == [("bad", "image")]
    assert [r["id"] for r in col.get(["good", "good2"])] == ["good", "good2"]
    assert len(blobs(store)) == 2


@pytest.mark.parametrize("fmt", ["EPS", "PCX", "TGA"])
def test_loading_decodes_only_the_accepted_formats(fmt: str) -> None:
    """A stored value is decoded again when an encoder loads it: with the same formats."""
    data = encoded(11, fmt)
    value = ImageValue(mmstore.MediaStore.digest(data), fmt, 8, 8, data)
    with pytest.raises(Image.UnidentifiedImageError):
        value.load()
    png = encoded(11)
    assert ImageValue(mmstore.MediaStore.digest(png), "PNG", 8, 8, png).load().size == (8, 8)


def test_the_roots_message_says_how_to_allow_paths(
    make_col: Callable[..., mmstore.Collection], root: Path
) -> None:
    (root / "a.png").write_bytes(encoded(1))
    col = make_col(roots=[])
    with pytest.raises(mmstore.RecordError) as err:
        col.ingest([{"id": "a", "image": str(root / "a.png")}])
    assert "options={'image': {'roots': [" in err.value.problem


def test_a_path_query_outside_the_roots_is_refused(
    make_col: Callable[..., mmstore.Collection], tmp_path: Path
) -> None:
    col = make_col()
    col.ingest([{"id": "a", "image": encoded(1)}])
    with pytest.raises(mmstore.InvalidInputError, match="outside the allowed roots"):
        col.search(image=str(_outside(tmp_path)), k=1)


@pytest.mark.parametrize(
    "options",
    [{"keep": "move"}, {"max_pixels": 0}, {"max_pixels": 10**12}, {"resize": 224}],
)
def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(mmstore.ConfigError, match="modality 'image'"):
        ImageModality(**options)


# -- storage ----------------------------------------------------------------------------
def test_the_same_bytes_are_stored_once(
    make_col: Callable[..., mmstore.Collection], store: mmstore.Store, root: Path
) -> None:
    data = encoded(5)
    (root / "same.png").write_bytes(data)
    col = make_col()
    col.ingest([{"id": "a", "image": data}, {"id": "b", "image": str(root / "same.png")}])
    col.ingest([{"id": "c", "image": Image.open(io.BytesIO(encoded(6)))}])
    col.ingest([{"id": "d", "image": encoded(6, size=(8, 8))}])  # other bytes, same pixels
    a, b, c, d = (r["image"]["media"] for r in col.get(["a", "b", "c", "d"]))
    assert a == b == store.media.digest(data)
    assert c != d  # c was re-encoded as PNG, d is kept as given
    assert len(blobs(store)) == 3


def test_reference_keeps_the_path_and_no_blob(
    make_col: Callable[..., mmstore.Collection], store: mmstore.Store, root: Path
) -> None:
    path = root / "ref.png"
    path.write_bytes(encoded(7))
    col = make_col(keep="reference")
    col.ingest([{"id": "ref", "image": str(path)}])
    (source,) = (r["image"] for r in col.get(["ref"]))
    assert source == {
        "path": str(path.resolve()),
        "sha256": store.media.digest(path.read_bytes()),
        "format": "PNG",
        "width": 8,
        "height": 8,
    }
    assert blobs(store) == []
    col.ingest([{"id": "inline", "image": encoded(8)}])  # bytes are always copied
    assert len(blobs(store)) == 1


def test_from_source_reads_media_and_refuses_a_changed_reference(
    root: Path, tmp_path: Path
) -> None:
    media = mmstore.MediaStore(tmp_path / "media")
    path = root / "r.png"
    path.write_bytes(encoded(3))
    copy = ImageModality(media=media, roots=[str(root)])
    ref = ImageModality(media=media, roots=[str(root)], keep="reference")
    value = copy.validate(str(path), "r", "image")
    assert value.data is None and value.path == str(path.resolve())  # no bytes held
    for modality in (copy, ref):
        source = modality.to_source(value)
        again = modality.from_source(source)
        assert isinstance(again, ImageValue) and again.digest == value.digest
        assert np.array_equal(np.asarray(again.load()), np.asarray(value.load()))
    source = ref.to_source(value)
    path.write_bytes(encoded(4))
    with pytest.raises(ReferenceChangedError, match="changed since it was ingested"):
        ref.from_source(source)
    with pytest.raises(ReferenceChangedError):
        value.load()
    assert copy.from_source(copy.to_source(copy.validate(encoded(3), "r", "image"))).load()
    path.unlink()
    with pytest.raises(mmstore.NotFoundError, match="is gone"):
        ref.from_source(source)


def test_copy_without_a_media_store_is_a_clear_error() -> None:
    modality = ImageModality(media=None)
    value = modality.validate(encoded(1), "r", "image")
    with pytest.raises(mmstore.ConfigError, match="media"):
        modality.to_source(value)


def test_reembed_reads_the_store_copy_not_the_originals(
    make_col: Callable[..., mmstore.Collection],
    encoder_params: dict[str, Any],
    root: Path,
) -> None:
    paths = []
    for i in range(3):
        paths.append(root / f"{i}.png")
        paths[-1].write_bytes(encoded(20 + i))
    col = make_col()
    col.ingest([{"id": str(i), "image": str(p)} for i, p in enumerate(paths)])
    for p in paths:
        p.unlink()
    report = col.reembed("image", encoder={**encoder_params, "pretrained": None, "seed": 3})
    assert report.switched and report.encoded == 3
    assert col.spaces()[0]["params"]["weights"] == "random:seed=3"
    for i in range(3):
        assert col.search(image=encoded(20 + i), k=1).ids == [str(i)]
