"""Content validation for downloaded photos: bytes in, a `CheckedImage` out, never an exception.

The content-validation core of the fetch stage, which downloads YFCC100M photos from a web
that serves HTML error pages as image/jpeg, drops connections mid-file and hosts the odd
decompression bomb. Plain Python + Pillow: no network, no Spark, no global state changed, so a
Spark task or a thread pool can call `check_image` once per downloaded body.

Every body gets exactly one of these statuses:

  not_image        no JPEG/PNG/WebP magic number: HTML, JSON, empty body, GIF, ...
  too_many_pixels  width*height from the header > max_pixels
  decode_error     has a magic number, but the header does not parse, the file is incomplete
                   or corrupt (see below), the pixels do not decode, or re-encoding failed
  ok               decoded fully; `data` is what to store

The steps run cheapest first and stop at the first failure: magic number, header (then the
pixel cap, so nothing is decoded before the size is known to be acceptable), container
integrity, full decode, then orientation/resize and re-encoding if needed.

Decisions:

- The status follows the content alone. A PNG served as photo.jpg is an ok "png"; bytes with
  a JPEG magic number whose body is not JPEG claim a format and fail it, so they are a
  decode_error, not not_image.
- Only the sniffed format's Pillow reader ever sees the bytes: we call that plugin class
  directly instead of letting Image.open try every registered format, so the format Pillow
  reports always agrees with the sniffed one. This also skips Image.open's check against
  Pillow's process-global MAX_IMAGE_PIXELS: `max_pixels` is the one cap, and no
  DecompressionBombWarning is ever emitted (muting it would need warnings.catch_warnings,
  which is not thread-safe). Where Pillow enforces its global limit anyway (its WebP reader
  does, before allocating the canvas), the DecompressionBombError becomes too_many_pixels.
- Pillow accepts a JPEG without its EOI marker and a PNG without IEND, and it checks no CRC
  after the first IDAT; with ImageFile.LOAD_TRUNCATED_IMAGES (which any library in the process
  may switch on) it accepts much worse. So we check the container ourselves, cheaply: a JPEG
  must reach its EOI marker after a scan, and every PNG chunk up to IEND must be complete with
  a correct CRC. (Truncated WebPs are already refused by libwebp.) Bytes after EOI/IEND are
  allowed: cameras append data there.
- Not detected: corrupt JPEG entropy data that libjpeg recovers from (it only warns).
- Animated PNG/WebP: only the first frame is decoded; a re-encode keeps only that frame.
- A re-encoded image keeps its ICC profile (unless its colours were converted, e.g. CMYK to
  RGB) but no EXIF or XMP: the orientation is baked into the pixels and must not be applied a
  second time by a viewer. An unreadable EXIF block counts as "no orientation" (Pillow may
  print a UserWarning about it; we leave the process's warning filters alone).
- MemoryError is re-raised rather than reported: with the pixel cap it means the worker is out
  of memory, and calling a good photo broken would drop it for good.
"""

from __future__ import annotations

import hashlib
import io
import re
import zlib
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

__all__ = ["IMAGE_STATUSES", "CheckedImage", "check_image", "sniff_format"]

IMAGE_STATUSES: Final = ("ok", "not_image", "decode_error", "too_many_pixels")

_READERS: Final[dict[str, type[ImageFile.ImageFile]]] = {
    "jpeg": JpegImagePlugin.JpegImageFile,
    "png": PngImagePlugin.PngImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
}
_SAVE_NAMES: Final = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"

# EXIF orientation -> the transpose that makes the pixels upright (EXIF 2.3, tag 0x0112).
_ORIENTATION_TAG: Final = 0x0112
_UPRIGHT: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# A JPEG marker is 0xFF followed by anything but 0x00 (a stuffed 0xFF data byte), 0xFF (fill)
# or RST0-7 (restart markers live inside entropy-coded data and carry no length).
_JPEG_MARKER: Final = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")
_JPEG_NO_LENGTH: Final = frozenset({0x01, 0xD8})  # TEM, SOI
_JPEG_EOI: Final = 0xD9
_JPEG_SOS: Final = 0xDA

# Let Pillow box-reduce by an integer factor first, as long as LANCZOS still shrinks by at
# least this much afterwards. Pillow documents 3.0 as indistinguishable from plain LANCZOS;
# measured here, a 4000x3000 image goes to 256 px in 27 ms instead of 200 ms.
_REDUCING_GAP: Final = 3.0

# Resampling filters for the resize. "area" (box averaging, like OpenCV's INTER_AREA that
# img2dataset uses) is about 3.5x faster than LANCZOS on a 500x375 photo and is the
# fetch stage's default; LANCZOS keeps a little more detail.
RESAMPLE: Final = {
    "area": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """The outcome for one body. Only `status == "ok"` has data, format and sha256."""

    status: str
    detail: str = ""  # short human reason; '' when ok
    data: bytes | None = None  # bytes to store: the input unless oriented or resized
    width: int | None = None  # of the stored image
    height: int | None = None
    format: str | None = None  # "jpeg" / "png" / "webp", of the stored bytes
    sha256: str | None = None  # hex digest of `data`
    orig_width: int | None = None  # from the header, when it could be read
    orig_height: int | None = None


def sniff_format(head: bytes) -> str | None:
    """Return "jpeg", "png" or "webp" by the magic number at the start of `head`, else None.

    Needs at most the first 12 bytes, so a fetcher can sniff before reading the whole body.
    """
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == _PNG_MAGIC:
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def check_image(
    data: bytes,
    *,
    max_pixels: int = 40_000_000,
    resize_max: int | None = None,
    jpeg_quality: int = 90,
    resample: str = "lanczos",
) -> CheckedImage:
    """Validate one downloaded body and return what to store; never raises for bad bytes.

    max_pixels: cap on width*height from the header, checked before decoding (equal passes).
    resize_max: if the longest edge is longer, shrink to exactly this (aspect kept, shorter
      edge rounded half-up, at least 1 px) and re-encode in the same format.
    jpeg_quality: quality of re-encoded JPEGs (and lossy WebPs), 1-100.
    resample: the resize filter, a key of RESAMPLE.

    Bad arguments (not bad bytes) raise ValueError: they are the caller's bug.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if resize_max is not None and resize_max < 1:
        raise ValueError(f"resize_max must be >= 1 or None, got {resize_max}")
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)

    fmt = sniff_format(data)
    if fmt is None:
        return CheckedImage(
            "not_image", "empty body" if not data else f"no JPEG/PNG/WebP magic: {data[:8]!r}"
        )

    # libwebp allocates the whole canvas when Pillow opens the file: check the cap first.
    size = _webp_canvas_size(data) if fmt == "webp" else None
    if size is not None and size[0] * size[1] > max_pixels:
        return _too_big(*size, max_pixels)

    try:
        im = _READERS[fmt](io.BytesIO(data))
    except MemoryError:
        raise
    except Image.DecompressionBombError as e:
        orig = size or (None, None)
        return CheckedImage(
            "too_many_pixels", _describe(e), orig_width=orig[0], orig_height=orig[1]
        )
    except Exception as e:
        return CheckedImage("decode_error", f"header: {_describe(e)}")

    with im:
        width, height = im.size
        if width * height > max_pixels:
            return _too_big(width, height, max_pixels)
        try:
            problem = _container_problem(data, fmt)
            if problem is not None:
                status, detail = "decode_error", problem
            else:
                return _decode(im, data, fmt, resize_max, jpeg_quality, resample)
        except MemoryError:
            raise
        except Image.DecompressionBombError as e:
            status, detail = "too_many_pixels", _describe(e)
        except Exception as e:
            status, detail = "decode_error", _describe(e)
    return CheckedImage(status, detail, orig_width=width, orig_height=height)


def _decode(
    im: ImageFile.ImageFile,
    data: bytes,
    fmt: str,
    resize_max: int | None,
    quality: int,
    resample: str = "lanczos",
) -> CheckedImage:
    orig_w, orig_h = im.size
    target = None if resize_max is None else _fit(orig_w, orig_h, resize_max)
    if target is not None and fmt == "jpeg":
        # libjpeg can decode at 1/2, 1/4 or 1/8 scale for a fraction of the cost; stop at twice
        # the target so the final LANCZOS pass still has real detail to filter. It still reads
        # every scan, so this is still a full validation.
        # Box averaging gains nothing from the extra detail, so "area" drafts to the target.
        k = 1 if resample == "area" else 2
        im.draft(None, (target[0] * k, target[1] * k))
    im.load()
    upright = _upright(im)

    if target is None and upright is None:
        # Nothing to change: store the original bytes, untouched and lossless.
        return _ok(data, fmt, orig_w, orig_h, orig_w, orig_h)

    out: Image.Image = im
    if target is not None:
        # Pillow resizes "1" and "P" images with NEAREST whatever filter is asked for.
        if out.mode == "1":
            out = out.convert("L")
        elif out.mode in ("P", "PA"):
            out = out.convert("RGBA" if out.has_transparency_data else "RGB")
        gap = None if resample == "area" else _REDUCING_GAP
        out = out.resize(target, RESAMPLE[resample], reducing_gap=gap)
    if upright is not None:
        # After the resize: transposing the small image is cheaper, and the longest edge is
        # the same either way.
        out = out.transpose(upright)
    stored = _encode(out, fmt, quality, im.mode, im.info.get("icc_profile"))
    return _ok(stored, fmt, out.width, out.height, orig_w, orig_h)


def _encode(img: Image.Image, fmt: str, quality: int, src_mode: str, icc: bytes | None) -> bytes:
    """Re-encode `img` as `fmt`, converting modes the format cannot store.

    No EXIF/XMP in the output (see the module docstring); the ICC profile is kept only while
    the colour space is unchanged.
    """
    if fmt == "jpeg" and img.mode not in ("L", "RGB"):
        img = img.convert("L" if img.mode in ("1", "LA", "La") else "RGB")
    elif fmt == "webp" and img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if img.has_transparency_data else "RGB")
    if _colour_space(img.mode) != _colour_space(src_mode):
        icc = None
    options: dict[str, object] = {"exif": b"", "xmp": b""}
    if icc:
        options["icc_profile"] = icc
    if fmt in ("jpeg", "webp"):
        options["quality"] = quality
    buf = io.BytesIO()
    img.save(buf, _SAVE_NAMES[fmt], **options)
    return buf.getvalue()


def _colour_space(mode: str) -> str:
    if mode == "CMYK":
        return "cmyk"
    if mode in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"):
        return "gray"
    return "rgb"  # RGB, RGBA, P, PA, ...


def _fit(width: int, height: int, resize_max: int) -> tuple[int, int] | None:
    """Size with the longest edge == resize_max, or None when already small enough."""
    long_edge, short_edge = max(width, height), min(width, height)
    if long_edge <= resize_max:
        return None
    # short * resize_max / long, rounded half-up in integers (no float ties).
    short = max(1, (2 * short_edge * resize_max + long_edge) // (2 * long_edge))
    return (resize_max, short) if width >= height else (short, resize_max)


def _upright(im: Image.Image) -> Image.Transpose | None:
    """The transpose the EXIF (or XMP) orientation asks for; None for 1, absent or invalid."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG)
    except Exception:  # broken EXIF is common on the web and says nothing about the pixels
        return None
    return _UPRIGHT.get(value) if isinstance(value, int) else None


def _container_problem(data: bytes, fmt: str) -> str | None:
    """Why the file is incomplete or corrupt at the container level, or None."""
    if fmt == "jpeg":
        return _jpeg_problem(data)
    if fmt == "png":
        return _png_problem(data)
    return None  # libwebp refuses a truncated RIFF container itself


def _jpeg_problem(data: bytes) -> str | None:
    """None if the JPEG's marker structure reaches EOI after at least one scan."""
    pos, end, scans = 2, len(data), 0
    while (m := _JPEG_MARKER.search(data, pos)) is not None:
        at = m.start()
        code = data[at + 1]
        if code == _JPEG_EOI:
            return None if scans else "JPEG: EOI before any scan"
        if code in _JPEG_NO_LENGTH:
            pos = at + 2
            continue
        if at + 4 > end:
            break
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if length < 2:
            return f"JPEG: bad length {length} in marker 0x{code:02X}"
        # Skipping segments by their length steps over APP payloads such as the EXIF
        # thumbnail, whose own EOI must not count as ours.
        pos = at + 2 + length
        scans += code == _JPEG_SOS
    return "JPEG: truncated (no EOI marker)"


def _png_problem(data: bytes) -> str | None:
    """None if every chunk up to IEND is complete and has a correct CRC."""
    view = memoryview(data)
    pos, end = len(_PNG_MAGIC), len(data)
    while pos + 12 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunk_end = pos + 12 + length
        if chunk_end > end:
            break
        kind = data[pos + 4 : pos + 8]
        if zlib.crc32(view[pos + 4 : chunk_end - 4]) != int.from_bytes(
            data[chunk_end - 4 : chunk_end], "big"
        ):
            return f"PNG: CRC mismatch in {kind.decode('ascii', 'replace')} chunk"
        if kind == b"IEND":
            return None
        pos = chunk_end
    return "PNG: truncated (no IEND chunk)"


def _webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first chunk of a WebP, or None if it cannot be read."""
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:  # extended: 24-bit canvas size minus one
        return (
            int.from_bytes(data[24:27], "little") + 1,
            int.from_bytes(data[27:30], "little") + 1,
        )
    if kind == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: 14+14 bits
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # lossy
        return (
            int.from_bytes(data[26:28], "little") & 0x3FFF,
            int.from_bytes(data[28:30], "little") & 0x3FFF,
        )
    return None


def _ok(data: bytes, fmt: str, width: int, height: int, orig_w: int, orig_h: int) -> CheckedImage:
    return CheckedImage(
        status="ok",
        data=data,
        width=width,
        height=height,
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        orig_width=orig_w,
        orig_height=orig_h,
    )


def _too_big(width: int, height: int, max_pixels: int) -> CheckedImage:
    return CheckedImage(
        "too_many_pixels",
        f"{width}x{height} = {width * height} px > {max_pixels}",
        orig_width=width,
        orig_height=height,
    )


def _describe(e: BaseException) -> str:
    """Exception class name (what the counts group by) and a capped message."""
    message = str(e)
    return f"{type(e).__name__}: {message}"[:200] if message else type(e).__name__
