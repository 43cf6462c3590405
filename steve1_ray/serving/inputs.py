"""HTTP input checks: every bad request becomes an `InputError(status, message)` that says what to fix."""
from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from typing import Any, Sequence

import cv2
import numpy as np


RUNTIME: dict = {}
"""Per-process settings of the ingress replica (`cfg`), shared by the Api class and the HTTP middleware."""


class BodyBudget:
    """Bytes of request bodies this process (an `Api` replica) holds at once, against `max_inflight_bytes`, and per
    client against its share. The middleware takes a body's bytes before or as they arrive and gives them back when
    its request is answered. One event loop runs the middleware, so no lock."""

    def __init__(self):
        self.held = 0
        self.by_client: dict[str, int] = {}

    def take(self, n: int, limit: int, client: str = "", share: int | None = None) -> bool:
        mine = self.by_client.get(client, 0)
        if self.held + n > limit or (share is not None and mine + n > share):
            return False
        self.held += n
        self.by_client[client] = mine + n
        return True

    def give(self, n: int, client: str = "") -> None:
        if n:
            self.held -= n
            left = self.by_client.get(client, 0) - n
            if left > 0:
                self.by_client[client] = left
            else:
                self.by_client.pop(client, None)


BODIES = BodyBudget()


class InputError(Exception):
    """A client mistake; `status` is the HTTP 4xx code, the message names the fix."""

    def __init__(self, status: int, message: str, retry: bool | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.retry = status in (409, 503) if retry is None else retry


def _b64(data: str, what: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise InputError(400, f"{what}: expected a non-empty base64 string")
    if data.startswith("data:"):  # data URL: data:image/png;base64,....
        _, _, data = data.partition(",")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(400, f"{what}: not valid base64 (send the PNG/JPEG file bytes base64-encoded, "
                              f"e.g. base64.b64encode(open('frame.png','rb').read()).decode())") from None


# The image formats an observation or a clip frame may use, by their first bytes (magic numbers). Anything else
# (GIF, TIFF, Radiance HDR, OpenEXR, PPM...) is refused before any decoder sees it.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"))


def image_format(raw: bytes) -> str | None:
    """PNG, JPEG, BMP or WEBP from the file's first bytes; None for anything else."""
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if raw.startswith(magic)), None)


def _header_size(raw: bytes, fmt: str, what: str) -> tuple[int, int]:
    """(width, height) read from the file header by Pillow, without decoding a pixel; refuses what it cannot read."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=[fmt]) as im:
                return im.size
    except Image.DecompressionBombError as exc:  # more than 2x Pillow's own limit: far beyond any cap of ours
        raise InputError(413, f"{what}: {exc}; downscale it first (the agent sees 128x128 anyway)") from None
    except Exception:
        raise InputError(400, f"{what}: the {fmt} header cannot be read (a truncated or corrupt file?); send "
                              f"a PNG/JPEG/BMP/WebP image") from None


def decode_image(data: str, max_pixels: int, what: str = "image") -> np.ndarray:
    """base64 PNG/JPEG/BMP/WebP -> (H, W, 3) uint8 RGB (grey and alpha images are converted).

    The format is checked by its magic bytes and the size read from its header before anything is decoded, so
    an image over `max_pixels` (a decompression bomb: a few hundred KB of PNG can hold 14000x14000 pixels) is
    refused with 413 having cost only its compressed bytes. cv2 itself is capped too (OPENCV_IO_MAX_IMAGE_PIXELS,
    set in steve1_ray/__init__.py before cv2 is loaded)."""
    raw = _b64(data, what)
    fmt = image_format(raw)
    if fmt is None:
        raise InputError(400, f"{what}: not a PNG, JPEG, BMP or WebP file (by its first bytes); other formats "
                              f"are refused")
    w, h = _header_size(raw, fmt, what)
    if w * h > max_pixels:
        raise InputError(413, f"{what}: {w}x{h} pixels is more than the {max_pixels} allowed (max_image_pixels); "
                              f"downscale it first (the agent sees 128x128 anyway)")
    try:
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # over cv2's own pixel cap, or a decoder error
        img = None
    if img is None or img.ndim != 3 or img.size == 0:
        raise InputError(400, f"{what}: the bytes are not a {fmt} image cv2 can decode (truncated or corrupt?)")
    if img.shape[0] * img.shape[1] > max_pixels:  # the header said otherwise: trust the pixels
        raise InputError(413, f"{what}: {img.shape[1]}x{img.shape[0]} pixels is more than the {max_pixels} allowed")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_pixels(data: str, shape: Sequence[int], max_pixels: int) -> np.ndarray:
    """base64 raw uint8 RGB bytes + shape [H, W, 3] -> (H, W, 3) uint8 (lossless, no image codec)."""
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise InputError(400, f"shape must be [height, width, 3], got {shape!r}")
    h, w, c = (int(x) for x in shape)
    if h * w > max_pixels:
        raise InputError(413, f"pixels: {w}x{h} is more than the {max_pixels} allowed")
    raw = _b64(data, "pixels")
    if len(raw) != h * w * c:
        raise InputError(400, f"pixels: got {len(raw)} bytes but shape {list(shape)} needs {h * w * c} "
                              f"(raw uint8 RGB, row-major)")
    return np.frombuffer(raw, np.uint8).reshape(h, w, c).copy()


def check_embedding(values: Any, dim: int, what: str = "goal_embed") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1) if values is not None else np.zeros(0)
    if arr.size != dim:
        raise InputError(422, f"{what} has {arr.size} values but this model expects {dim} "
                              f"(a MineCLIP embedding; GET /info shows embed_dim)")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if not np.all(np.isfinite(out)):  # 1e300 is finite as float64, inf as float32
        raise InputError(422, f"{what} contains NaN or infinite values, or values beyond float32's range")
    return out


def check_scale(value: Any, limit: float) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(422, f"cond_scale must be a finite number (6 is the original's text default), got {value!r}")
    if abs(value) > limit:
        raise InputError(422, f"cond_scale {value} is outside [-{limit}, {limit}] (max_cond_scale); "
                              f"useful values are 0-10")
    return float(value)
