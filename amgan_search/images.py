"""The project's one image loader and writer.

Everything that reads an image goes through `load_image`: EXIF orientation applied, every mode
(L, P, RGBA, LA, CMYK, I;16, ...) converted to RGB with transparency composited over white, a
decompression-bomb limit checked before any pixel is decoded, and one clear error otherwise.
Images inside the project are uint8 HxWx3 arrays; models take float tensors in [0, 1], NCHW.

A PNG the project writes as an output (a contact sheet, an edit) records what wrote it in a text
chunk (`made_by`), so a later command replaces only a picture of its own kind, never a user's.
A server decodes uploads within a budget of pixels in flight (`PixelBudget`): a 40-megapixel PNG
can be 130 kB on the wire and 120 MB once decoded.
"""

from __future__ import annotations

import ctypes
import io
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from amgan_search.errors import UserError

# 40 megapixels: a large catalog photo passes, a header that claims 50,000 x 50,000 does not.
MAX_PIXELS = 40_000_000
# The PNG text chunk naming the command that wrote an output picture.
MADE_BY = "amgan-search"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale the full range to 8 bits rather than clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "RGB":
        return img  # no copy: a 40 MP picture is 120 MB
    if img.mode == "P":
        # through RGBA only when the palette has a transparent entry (opaque over white is itself)
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read any image file as uint8 HxWx3 RGB, or raise UserError naming the file and the problem."""
    from amgan_search.io import check_regular

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not an image")
    check_regular(path, missing_ok=False)  # a FIFO would block the read forever
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, not an image")
    return _decode(path, path)


def decode_image(data: bytes, name: str = "image", max_side: int | None = None,
                 budget: "PixelBudget | None" = None) -> np.ndarray:
    """Image bytes (an upload) as uint8 HxWx3 RGB, under the same rules as `load_image`; errors
    name `name`. `max_side`: the long side cut to it (bicubic, as `fit_square` resizes) before the
    picture becomes an array; `budget`: the decoding waits for its pixels to fit in it."""
    if not data:
        raise UserError(f"{name}: empty file, not an image")
    return _decode(io.BytesIO(data), name, max_side, budget)


def _decode(source, name, max_side: int | None = None, budget: "PixelBudget | None" = None
            ) -> np.ndarray:
    """PIL decoding with the pixel limit, EXIF orientation and one-line errors naming `name`.
    One decoded copy at a time: the orientation is applied in place and an RGB picture is not
    converted, so a 40 MP photo peaks at its own 120 MB and the array made from it."""
    try:
        with Image.open(source) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise UserError(
                    f"{name}: {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit"
                )
            with budget.hold(width * height) if budget is not None else _nothing():
                ImageOps.exif_transpose(img, in_place=True)
                if max_side is not None and img.mode in _SHRINK_FIRST:
                    img = _shrunk(img, max_side)  # before the conversion: it then costs little
                rgb = _to_rgb(img)
                if max_side is not None:
                    rgb = _shrunk(rgb, max_side)
                return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    except UserError:
        raise
    except Image.DecompressionBombError:
        # PIL refuses headers past twice its own limit before we see the size.
        raise UserError(f"{name}: image header claims more than the {MAX_PIXELS:,}-pixel limit") from None
    except UnidentifiedImageError:
        raise UserError(f"{name}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{name}: unreadable image ({exc})") from None


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# Modes shrunk before their conversion to RGB, which gives the same pixels: grey levels are copied
# to the three channels. Not transparency: PIL resizes it in 8-bit premultiplied colours, several
# levels off where alpha is low; not a palette, looked up first.
_SHRINK_FIRST = ("RGB", "L")


def _shrunk(img: Image.Image, side: int) -> Image.Image:
    """The picture with its long side cut to `side` (bicubic), itself when it is not longer."""
    w, h = img.size
    if max(w, h) <= side:
        return img
    scale = side / max(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)


class PixelBudget:
    """At most `pixels` decoded pixels in flight across threads: a decoding waits until its
    picture fits (one larger than the whole budget waits until it is alone). When the last one
    leaves after large pictures (`TRIM_AFTER` pixels since the last time), the freed memory goes
    back to the system (`release_freed_memory`)."""

    TRIM_AFTER = 8_000_000

    def __init__(self, pixels: int):
        self.total = self.free = int(pixels)
        self._cond = threading.Condition()
        self._since_trim = 0

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = min(int(pixels), self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.free >= pixels)
            self.free -= pixels
        try:
            yield
        finally:
            with self._cond:
                self.free += pixels
                self._since_trim += pixels
                trim = self.free == self.total and self._since_trim >= self.TRIM_AFTER
                if trim:
                    self._since_trim = 0
                self._cond.notify_all()
            if trim:
                release_freed_memory()


_TRIM = None


def release_freed_memory() -> None:
    """Hand memory freed by large pictures back to the system. glibc keeps freed blocks under its
    mmap threshold (PIL's 16 MB image blocks, once it has raised the threshold) in its per-thread
    arenas, where they stay the process's memory until trimmed. Elsewhere, nothing."""
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


def save_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95,
               compress_level: int = 6, made_by: str | None = None) -> None:
    """Write uint8 HxWx3 (or HxW) under a temporary name, then rename into place.

    `compress_level` (PNG, zlib 0-9): bulk writers of noisy images use 1, three times faster.
    `made_by` (PNG): the command writing an output picture, recorded in it (`png_made_by`).
    """
    from PIL.PngImagePlugin import PngInfo

    from amgan_search.io import atomic_path

    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(Path(path).suffix.lower(), "PNG")
    kwargs = ({"quality": quality} if fmt == "JPEG"
              else {"optimize": False, "compress_level": compress_level})
    if made_by is not None and fmt == "PNG":
        kwargs["pnginfo"] = PngInfo()
        kwargs["pnginfo"].add_text(MADE_BY, made_by)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format=fmt, **kwargs)


def png_made_by(path: str | os.PathLike) -> str | None:
    """The command that wrote a PNG output (its `made_by`), None for any other file."""
    try:
        with open(path, "rb") as f:
            if f.read(len(PNG_MAGIC)) != PNG_MAGIC:
                return None
        with Image.open(path) as img:  # text chunks before the pixels are read at open
            return img.info.get(MADE_BY)
    except (OSError, SyntaxError, ValueError):
        return None


def made_by_any(*commands: str):
    """A check for `outputs.claim_file`: a PNG one of `commands` wrote."""
    return lambda path: png_made_by(path) in commands


def fit_square(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Resize keeping the aspect ratio and pad to size x size with white (catalog backgrounds).

    Returns the square image and the box (top, left, height, width) the picture occupies in it,
    which `unfit_square` uses to map a model output back to the original frame.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = image if (nh, nw) == (h, w) else np.asarray(
        Image.fromarray(image).resize((nw, nh), Image.BICUBIC))
    out = np.full((size, size, 3), 255, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out, (top, left, nh, nw)


def unfit_square(square: np.ndarray, box: tuple[int, int, int, int],
                 shape: tuple[int, int]) -> np.ndarray:
    """Crop the padding `fit_square` added and resize back to the original HxW.

    Images go back bicubic; masks (2-D) bilinear: its weights are never negative, so a mask
    confined by another (alpha * region <= region) stays confined at the input's size, where
    bicubic would overshoot."""
    top, left, nh, nw = box
    crop = square[top:top + nh, left:left + nw]
    h, w = shape
    if crop.ndim == 2:
        img, resample = Image.fromarray(crop), Image.BILINEAR
    else:
        img, resample = Image.fromarray(np.asarray(crop, dtype=np.uint8)), Image.BICUBIC
    return np.asarray(img.resize((w, h), resample))


def to_tensor(images):
    """uint8 HxWx3 array (or a list of them, same size) -> float tensor in [0, 1], NCHW."""
    import torch

    batch = np.stack(images) if isinstance(images, (list, tuple)) else np.asarray(images)[None]
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)


def resize_batch(x, size: int, antialias: bool | None = None):
    """Float NCHW -> size x size, bilinear; unchanged when already that size (the one resize to a
    model's input size). `antialias` None: only when shrinking, where it avoids aliasing; the
    catalog embedder and the benchmark always ask for it."""
    import torch.nn.functional as F

    if x.shape[-2:] == (size, size):
        return x
    if antialias is None:
        antialias = size < x.shape[-1]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=antialias)


def to_uint8(tensor) -> np.ndarray:
    """Float tensor in [0, 1], NCHW (or CHW) -> uint8 NHWC (or HWC) array."""
    t = tensor.detach().float().clamp(0, 1).mul(255).round().to("cpu")
    t = t.permute(0, 2, 3, 1) if t.dim() == 4 else t.permute(1, 2, 0)
    return t.numpy().astype(np.uint8)


def preview_values(k: int, n: int) -> list[int]:
    """n value indices spread evenly over 0..k-1 (first and last included): what pictures show."""
    return sorted({int(v) for v in np.linspace(0, k - 1, min(k, n)).round()})


def tile_rows(rows) -> np.ndarray:
    """Float tensors [B, 3, S, S] in [0, 1], one per row -> one uint8 picture, B tiles wide."""
    return np.concatenate([np.concatenate(list(to_uint8(r.cpu())), axis=1) for r in rows], axis=0)


def picture_grid(rows, tile: int, columns: int | None = None, labels=(), label_px: int = 10,
                 caption_h: int = 0) -> np.ndarray:
    """Pictures in rows on white, the one layout of every contact sheet: a uint8 picture.

    `rows` holds (picture, caption) cells: a uint8 tile x tile picture, or None for one that
    could not be read (drawn as a grey box), with up to two caption lines of 24 characters in
    the `caption_h` pixels under it. `labels`, one per row, go left of the rows at `label_px`.
    The grid is `columns` tiles wide (default: the longest row).
    """
    from PIL import ImageDraw

    font = _font(label_px) if labels else None
    label_w = 8 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(label, font=font))
                      for label in labels) if labels else 0
    columns = max(len(row) for row in rows) if columns is None else columns
    sheet = Image.new("RGB", (label_w + columns * tile, len(rows) * (tile + caption_h)),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for y, row in enumerate(rows):
        top = y * (tile + caption_h)
        if labels:
            draw.text((4, top + tile // 2), labels[y], fill=(0, 0, 0), font=font, anchor="lm")
        for x, (picture, caption) in enumerate(row):
            left = label_w + x * tile
            if picture is None:
                draw.rectangle([left + 4, top + 4, left + tile - 4, top + tile - 4],
                               fill=(220, 220, 220))
                draw.text((left + 8, top + tile // 2), "unreadable", fill=(0, 0, 0))
            else:
                sheet.paste(Image.fromarray(picture), (left, top))
            for i, line in enumerate(caption.split("\n")[:2] if caption else ()):
                draw.text((left + 3, top + tile + 2 + 13 * i), line[:24], fill=(0, 0, 0))
    return np.asarray(sheet)


def _font(px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()

