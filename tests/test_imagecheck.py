"""Unit tests for faceatlas.imagecheck (validating downloaded photo bytes).

Every input is built here with Pillow/numpy or by hand; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from faceatlas.imagecheck import (
    IMAGE_STATUSES,
    CheckedImage,
    _encode,
    check_image,
    sniff_format,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ORIENTATION = 0x0112
PIL_NAME = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


def _gradient(width: int, height: int, seed: int = 0) -> np.ndarray:
    """RGB gradient plus a little noise: compresses like a photo, not like flat colour."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1
    )
    noise = np.random.default_rng(seed).integers(-20, 21, base.shape)
    return (base + noise).clip(0, 255).astype(np.uint8)


def _save(img: Image.Image | np.ndarray, fmt: str, **options: object) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, PIL_NAME[fmt], **options)
    return buf.getvalue()


def _photo(fmt: str, width: int = 64, height: int = 48, **options: object) -> bytes:
    return _save(_gradient(width, height), fmt, **options)


def _open(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def _bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid all-black 1-bit PNG of width x height: ~50 KB of file, 50 MB of pixel rows.

    Built in milliseconds: a full flush ends a deflate block on a byte boundary and resets
    the history, so one compressed block of 100 zero rows can simply be repeated.
    """
    assert height % 100 == 0
    block = bytes(1 + (width + 7) // 8) * 100  # filter byte 0 + packed bits, 100 rows
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, we add the zlib frame
    piece = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height // 100):
        adler = zlib.adler32(block, adler)
    # zlib header (max compression), the blocks, an empty final block, the Adler-32.
    idat = b"\x78\xda" + piece * (height // 100) + b"\x03\x00" + adler.to_bytes(4, "big")
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        PNG_MAGIC + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )


def _assert_consistent(r: CheckedImage) -> None:
    """What every result must satisfy, whatever the input."""
    assert isinstance(r, CheckedImage)
    assert r.status in IMAGE_STATUSES
    if r.status == "ok":
        assert r.detail == ""
        assert r.data is not None
        assert r.sha256 == hashlib.sha256(r.data).hexdigest()
        assert r.format == sniff_format(r.data)
        assert r.orig_width and r.orig_height
        stored = _open(r.data)
        assert stored.size == (r.width, r.height)
    else:
        assert r.detail
        assert r.data is None and r.sha256 is None and r.format is None
        assert r.width is None and r.height is None


def _check(data: bytes, **kwargs: object) -> CheckedImage:
    r = check_image(data, **kwargs)  # type: ignore[arg-type]
    _assert_consistent(r)
    return r


# ---------------------------------------------------------------------------------------------
# sniff_format
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\xff\xd8\xff", "jpeg"),
        (PNG_MAGIC + b"\x00\x00\x00\x0dIHDR", "png"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"RIFF\x00\x00\x00\x00WEBP", "webp"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),  # a RIFF that is not WebP
        (b"\xff\xd8", None),
        (PNG_MAGIC[:7], None),
        (b"GIF89a", None),
        (b"BM", None),
        (b"<!DOCTYPE html>", None),
        (b"", None),
    ],
)
def test_sniff_format(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


# ---------------------------------------------------------------------------------------------
# ok: original bytes kept
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_good_image_keeps_original_bytes(fmt: str) -> None:
    data = _photo(fmt, 64, 48)
    r = _check(data)
    assert r.status == "ok"
    assert r.data == data
    assert r.sha256 == hashlib.sha256(data).hexdigest()
    assert (r.format, r.width, r.height, r.orig_width, r.orig_height) == (fmt, 64, 48, 64, 48)


def test_ok_with_bytes_after_the_end() -> None:
    # Cameras append data after EOI/IEND; the image itself is complete.
    for data in (_photo("jpeg") + b"trailer \xff\xd8\xff", _photo("png") + b"junk"):
        r = _check(data)
        assert r.status == "ok"
        assert r.data == data


def test_bytes_like_input() -> None:
    data = _photo("jpeg")
    for value in (bytearray(data), memoryview(data)):
        r = _check(value)  # type: ignore[arg-type]
        assert r.status == "ok"
        assert r.data == data and isinstance(r.data, bytes)


def test_progressive_jpeg() -> None:
    data = _photo("jpeg", 200, 150, progressive=True)
    assert _check(data).status == "ok"
    assert _check(data[: len(data) * 3 // 4]).status == "decode_error"


# ---------------------------------------------------------------------------------------------
# not_image
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<html><body>404 Not Found</body></html>",
        b"<!DOCTYPE html>\n<html>" + b"x" * 5000,
        b'{"error": "photo unavailable"}',
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        b"\xff\xd8",  # too short to be a JPEG
    ],
)
def test_not_image(data: bytes) -> None:
    r = _check(data)
    assert r.status == "not_image"
    assert r.orig_width is None


def test_not_image_detail() -> None:
    assert _check(b"").detail == "empty body"
    assert "<html>" in _check(b"<html>hello</html>").detail


# ---------------------------------------------------------------------------------------------
# decode_error
# ---------------------------------------------------------------------------------------------


def test_truncated_jpeg() -> None:
    data = _photo("jpeg", 200, 150)
    for cut in (len(data) // 2, len(data) - 100):
        r = _check(data[:cut])
        assert r.status == "decode_error"
        assert r.orig_width == 200  # the header was readable


def test_jpeg_missing_only_its_eoi_marker() -> None:
    # Pillow alone decodes this without complaint; the file is still cut short.
    data = _photo("jpeg", 200, 150)
    assert data.endswith(b"\xff\xd9")
    for cut in (len(data) - 1, len(data) - 2):
        r = _check(data[:cut])
        assert r.status == "decode_error"
        assert "EOI" in r.detail


def test_jpeg_eoi_inside_a_segment_does_not_count() -> None:
    # A comment segment holding a whole little JPEG (like an EXIF thumbnail): its EOI is not
    # the end of the main image, so a truncated main image is still caught.
    data = _photo("jpeg", 200, 150)
    inner = _photo("jpeg", 8, 8)
    comment = b"\xff\xfe" + (len(inner) + 2).to_bytes(2, "big") + inner
    with_comment = data[:2] + comment + data[2:]
    assert _check(with_comment).status == "ok"
    r = _check(with_comment[: len(with_comment) * 3 // 4])
    assert r.status == "decode_error"


@pytest.mark.parametrize("cut", [0.5, 0.9])
@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_truncated_png_and_webp(fmt: str, cut: float) -> None:
    data = _photo(fmt, 200, 150)
    assert _check(data[: int(len(data) * cut)]).status == "decode_error"


def test_png_missing_iend() -> None:
    data = _photo("png")
    assert data.endswith(_png_chunk(b"IEND", b""))
    r = _check(data[:-12])
    assert r.status == "decode_error"
    assert "IEND" in r.detail


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_corrupted_png_idat(where: float) -> None:
    data = bytearray(_photo("png", 100, 80))
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    data[start + int(length * where)] ^= 0x5A
    r = _check(bytes(data))
    assert r.status == "decode_error"
    assert r.detail == "PNG: CRC mismatch in IDAT chunk"


def test_truncation_caught_even_if_pillow_is_told_to_load_truncated_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any library in the worker may switch this global on; it must not change our answer.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    jpeg, png = _photo("jpeg", 200, 150), _photo("png", 200, 150)
    assert _check(jpeg[: len(jpeg) // 2]).status == "decode_error"
    assert _check(png[: len(png) // 2]).status == "decode_error"
    assert _check(jpeg).status == "ok"


def test_decode_error_detail_names_the_exception() -> None:
    r = _check(b"\xff\xd8\xff" + b"\x00" * 100)
    assert r.status == "decode_error"
    assert r.detail.startswith("header: SyntaxError")  # Pillow's "not a valid file" exception
    jpeg = _photo("jpeg", 200, 150)
    assert _check(jpeg[: len(jpeg) - 100]).detail == "JPEG: truncated (no EOI marker)"


# ---------------------------------------------------------------------------------------------
# format mismatch: the magic number decides, a lying body is a decode_error
# ---------------------------------------------------------------------------------------------


def test_png_bytes_served_as_jpeg_are_a_png() -> None:
    # No URL or Content-Type goes in: a PNG behind photo.jpg is simply an ok PNG.
    data = _photo("png")
    r = _check(data)
    assert (r.status, r.format) == ("ok", "png")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xd8\xff" + _photo("png"), id="jpeg-magic-png-body"),
        pytest.param(PNG_MAGIC + _photo("jpeg"), id="png-magic-jpeg-body"),
        pytest.param(b"RIFF\x00\x10\x00\x00WEBP" + _photo("jpeg"), id="webp-magic-jpeg-body"),
    ],
)
def test_magic_of_one_format_body_of_another(data: bytes) -> None:
    r = _check(data)
    assert r.status == "decode_error"


# ---------------------------------------------------------------------------------------------
# too_many_pixels
# ---------------------------------------------------------------------------------------------


def test_png_bomb_rejected_from_the_header_alone() -> None:
    t0 = time.perf_counter()
    bomb = _bomb_png()
    assert time.perf_counter() - t0 < 1.0  # building the input is cheap too
    assert len(bomb) < 100_000

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        r = check_image(bomb)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _assert_consistent(r)
    assert r.status == "too_many_pixels"
    assert (r.orig_width, r.orig_height) == (20_000, 20_000)
    assert "20000x20000" in r.detail
    # Decoding 400 million pixels would take seconds and hundreds of MB.
    assert elapsed < 1.0
    assert peak < 50 * 2**20


def test_max_pixels_boundary() -> None:
    data = _photo("png", 100, 50)
    assert _check(data, max_pixels=5000).status == "ok"
    r = _check(data, max_pixels=4999)
    assert r.status == "too_many_pixels"
    assert (r.orig_width, r.orig_height) == (100, 50)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_max_pixels_applies_to_every_format(fmt: str) -> None:
    data = _photo(fmt, 100, 50)
    assert _check(data, max_pixels=5000).status == "ok"
    assert _check(data, max_pixels=4999).status == "too_many_pixels"


def test_huge_webp_canvas_rejected_before_pillow_opens_it() -> None:
    # libwebp allocates the canvas at open; a 16000x16000 header must be refused first.
    data = _save(Image.new("RGB", (64, 48), "red"), "webp", exif=_exif(1))
    assert data[12:16] == b"VP8X"
    side = (16_000 - 1).to_bytes(3, "little")
    r = _check(data[:24] + side + side + data[30:])
    assert r.status == "too_many_pixels"
    assert (r.orig_width, r.orig_height) == (16_000, 16_000)


def test_pillow_decompression_bomb_error_is_too_many_pixels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pillow's WebP reader enforces its global limit itself (2x MAX_IMAGE_PIXELS -> error).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = _check(_photo("webp", 64, 48))
    assert r.status == "too_many_pixels"
    assert "DecompressionBombError" in r.detail


def test_pillow_global_limit_neither_crashes_nor_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    # 64*48 is over Pillow's (lowered) limit, where Image.open would warn or raise, but well
    # within ours: JPEG and PNG come back ok, with no DecompressionBombWarning. (check_image
    # is called directly: the helpers' Image.open would trip over the lowered limit.)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fmt in ("jpeg", "png"):
            data = _photo(fmt, 64, 48, exif=_exif(6))
            assert check_image(data).status == "ok"
            r = check_image(data, resize_max=32)
            assert (r.status, r.width, r.height) == ("ok", 24, 32)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


# ---------------------------------------------------------------------------------------------
# EXIF orientation
# ---------------------------------------------------------------------------------------------


def _left_red_right_blue(width: int, height: int) -> Image.Image:
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def test_orientation_6_is_applied_and_reencoded() -> None:
    data = _save(_left_red_right_blue(40, 20), "jpeg", quality=95, exif=_exif(6))
    assert _open(data).getexif()[ORIENTATION] == 6
    r = _check(data)
    assert r.status == "ok"
    assert r.data != data
    assert (r.format, r.width, r.height) == ("jpeg", 20, 40)
    assert (r.orig_width, r.orig_height) == (40, 20)
    stored = _open(r.data)
    assert stored.getexif().get(ORIENTATION, 1) == 1
    # Orientation 6: the stored left edge was the top; rotated clockwise, it becomes the top.
    arr = np.asarray(stored).astype(int)
    assert arr[:18, :, 0].mean() > 200 and arr[:18, :, 2].mean() < 50
    assert arr[22:, :, 2].mean() > 200 and arr[22:, :, 0].mean() < 50


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow_exif_transpose(orientation: int) -> None:
    # Lossless PNG, so the stored pixels must equal Pillow's exif_transpose exactly.
    data = _save(_gradient(30, 20), "png", exif=_exif(orientation))
    r = _check(data)
    assert r.status == "ok"
    expected = ImageOps.exif_transpose(_open(data))
    assert np.array_equal(np.asarray(_open(r.data)), np.asarray(expected))
    if orientation == 1:
        assert r.data == data
    else:
        assert r.data != data
        assert _open(r.data).getexif().get(ORIENTATION, 1) == 1


@pytest.mark.parametrize("orientation", [1, 0, 9, 65535])
def test_orientation_1_or_invalid_keeps_original_bytes(orientation: int) -> None:
    data = _photo("jpeg", 40, 20, exif=_exif(orientation))
    r = _check(data)
    assert r.status == "ok"
    assert r.data == data
    assert (r.width, r.height) == (40, 20)


def test_broken_exif_is_ignored() -> None:
    data = _photo("jpeg", 40, 20, exif=b"Exif\x00\x00MM\x00*garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow says "Corrupt EXIF data"
        r = _check(data)
    assert r.status == "ok"
    assert r.data == data


def test_reencode_keeps_icc_profile_but_drops_exif() -> None:
    icc = b"not really an ICC profile, but Pillow stores any bytes"
    data = _photo("jpeg", 40, 20, exif=_exif(3), icc_profile=icc)
    r = _check(data)
    assert r.status == "ok" and r.data != data
    stored = _open(r.data)
    assert stored.info.get("icc_profile") == icc
    assert "exif" not in stored.info


# ---------------------------------------------------------------------------------------------
# resize
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1000, 500), (256, 128)),
        ((300, 1000), (77, 256)),  # 300 * 256 / 1000 = 76.8
        ((257, 1), (256, 1)),  # never below 1 px
        ((1000, 3), (256, 1)),  # 0.768 rounds to 1
        ((512, 5), (256, 3)),  # 2.5 rounds half-up (round() would give 2)
        ((600, 250), (256, 107)),  # 106.67
    ],
)
def test_resize_jpeg(size: tuple[int, int], expected: tuple[int, int]) -> None:
    data = _photo("jpeg", *size)
    r = _check(data, resize_max=256)
    assert r.status == "ok"
    assert (r.format, r.width, r.height) == ("jpeg", *expected)
    assert (r.orig_width, r.orig_height) == size
    assert _open(r.data).format == "JPEG"


@pytest.mark.parametrize("size", [(100, 50), (256, 256), (256, 10)])
def test_small_enough_is_not_touched(size: tuple[int, int]) -> None:
    data = _photo("jpeg", *size)
    r = _check(data, resize_max=256)
    assert r.status == "ok"
    assert r.data == data
    assert (r.width, r.height) == size


def test_resize_and_orientation_together() -> None:
    data = _photo("jpeg", 1000, 500, exif=_exif(6))
    r = _check(data, resize_max=256)
    assert (r.status, r.width, r.height) == ("ok", 128, 256)
    assert _open(r.data).getexif().get(ORIENTATION, 1) == 1


def test_resized_pixels_look_like_the_original() -> None:
    arr = _gradient(400, 300)
    r = _check(_save(arr, "png"), resize_max=100)
    small = np.asarray(_open(r.data)).astype(float)
    expected = np.asarray(Image.fromarray(arr).resize((100, 75), Image.Resampling.BOX))
    assert np.abs(small - expected).mean() < 3


def test_large_jpeg_resize_still_validates() -> None:
    # Decoded at reduced scale (libjpeg draft): must still catch a truncated file.
    data = _photo("jpeg", 1600, 1200)
    r = _check(data, resize_max=256)
    assert (r.status, r.width, r.height) == ("ok", 256, 192)
    assert _check(data[: len(data) // 2], resize_max=256).status == "decode_error"


def test_rgba_png_resized_stays_png_with_alpha() -> None:
    arr = np.zeros((300, 600, 4), np.uint8)
    arr[..., :3] = _gradient(600, 300)
    arr[..., 3] = np.linspace(0, 255, 600).astype(np.uint8)[None, :]
    r = _check(_save(arr, "png"), resize_max=256)
    assert (r.status, r.format, r.width, r.height) == ("ok", "png", 256, 128)
    stored = _open(r.data)
    assert stored.mode == "RGBA"
    alpha = np.asarray(stored.getchannel("A")).astype(int)
    assert alpha[:, :5].mean() < 10 and alpha[:, -5:].mean() > 245


def test_webp_resized_stays_webp() -> None:
    r = _check(_photo("webp", 600, 300), resize_max=256)
    assert (r.status, r.format, r.width, r.height) == ("ok", "webp", 256, 128)
    assert _open(r.data).format == "WEBP"


def _png_mode(mode: str) -> bytes:
    rgb = Image.fromarray(_gradient(300, 150))
    if mode == "P":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
        img.info["transparency"] = 0
    elif mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    else:
        img = rgb.convert(mode)
    assert img.mode == mode
    return _save(img, "png")


@pytest.mark.parametrize(
    ("mode", "stored_modes"),
    [
        ("1", {"L"}),
        ("L", {"L"}),
        ("LA", {"LA"}),
        ("P", {"RGBA"}),  # resized as RGBA, not with NEAREST
        ("I;16", {"I;16", "I"}),
        ("RGB", {"RGB"}),
    ],
)
def test_png_modes_resize(mode: str, stored_modes: set[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = _check(_png_mode(mode), resize_max=256)
    assert (r.status, r.format, r.width, r.height) == ("ok", "png", 256, 128)
    assert _open(r.data).mode in stored_modes


def test_cmyk_jpeg() -> None:
    cmyk = Image.fromarray(_gradient(600, 300)).convert("CMYK")
    data = _save(cmyk, "jpeg", icc_profile=b"pretend CMYK profile")
    assert _open(data).mode == "CMYK"
    assert _check(data).data == data  # nothing to do: stored as is
    r = _check(data, resize_max=256)
    assert (r.status, r.format, r.width, r.height) == ("ok", "jpeg", 256, 128)
    stored = _open(r.data)
    assert stored.mode == "RGB"
    assert "icc_profile" not in stored.info  # a CMYK profile would be wrong on RGB pixels


def test_grayscale_jpeg_stays_grayscale() -> None:
    data = _save(Image.fromarray(_gradient(600, 300)).convert("L"), "jpeg")
    r = _check(data, resize_max=256)
    assert r.status == "ok"
    assert _open(r.data).mode == "L"


def test_jpeg_quality_is_used() -> None:
    data = _photo("jpeg", 800, 600, quality=95)
    low = _check(data, resize_max=400, jpeg_quality=30)
    high = _check(data, resize_max=400, jpeg_quality=95)
    assert low.data is not None and high.data is not None
    assert len(low.data) < len(high.data)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("RGBA", "RGB"), ("P", "RGB"), ("LA", "L"), ("CMYK", "RGB"), ("1", "L"), ("L", "L")],
)
def test_jpeg_encoding_converts_modes_it_cannot_store(mode: str, expected: str) -> None:
    img = Image.fromarray(_gradient(40, 30)).convert(mode)
    if mode == "P":
        img.info["transparency"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = _encode(img, "jpeg", 90, mode, None)
    stored = _open(data)
    assert (stored.format, stored.mode, stored.size) == ("JPEG", expected, (40, 30))


# ---------------------------------------------------------------------------------------------
# arguments and robustness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"max_pixels": 0}, {"resize_max": 0}, {"jpeg_quality": 0}, {"jpeg_quality": 101}],
)
def test_bad_arguments_raise(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        check_image(_photo("jpeg"), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "prefix",
    [b"\xff\xd8\xff", PNG_MAGIC, b"RIFF\x00\x01\x00\x00WEBP", b"RIFF\x00\x01\x00\x00WEBPVP8 "],
    ids=["jpeg", "png", "webp", "webp-vp8"],
)
def test_fuzz_magic_plus_garbage(prefix: bytes) -> None:
    rng = random.Random(1234)
    for _ in range(200):
        body = rng.randbytes(rng.randrange(0, 2000))
        r = _check(prefix + body, resize_max=rng.choice([None, 64]))
        assert r.status in ("decode_error", "too_many_pixels")


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_fuzz_mutated_images(fmt: str) -> None:
    # Damage a real image (flip bytes, cut, splice): reaches deeper into the decoders than
    # pure noise does. Whatever happens, a status comes back, never an exception.
    rng = random.Random(99)
    good = _photo(fmt, 48, 32, exif=_exif(6))
    seen = set()
    for _ in range(200):
        data = bytearray(good)
        action = rng.choice(["flip", "cut", "splice"])
        if action == "flip":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif action == "cut":
            del data[rng.randrange(3, len(data)) :]
        else:
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 50))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow on damaged EXIF
            r = _check(bytes(data), max_pixels=100_000, resize_max=rng.choice([None, 24]))
        seen.add(r.status)
    assert "decode_error" in seen
