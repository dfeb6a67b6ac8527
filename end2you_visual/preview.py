"""Contact sheets: a PNG of sampled face crops, to check a video's crops at a glance.

A tile with a green border is a frame where the face was found (its crop);
a tile with a red border is a frame without a face, and shows that frame
itself, downscaled, so that what the detector missed can be seen (the HDF5
file holds the fill there: the last good crop or zeros). A legend under
the grid says so.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from .files import atomic_file

NO_FACE_COLOUR = (220, 30, 30)
FACE_COLOUR = (40, 170, 60)
LEGEND = ((FACE_COLOUR, "face found: its crop"),
          (NO_FACE_COLOUR, "no face: the whole frame"))
_TEXT_H = 12       # height of a caption line (PIL's default font)
_SWATCH = 10


def sample_indices(n_rows: int, n_samples: int = 24) -> npt.NDArray[np.int64]:
    """Evenly spaced row indices (at most ``n_samples``, distinct, sorted)."""
    if n_rows <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n_rows - 1, min(n_samples, n_rows)).round().astype(np.int64))


def frame_tile(frame: npt.ArrayLike, size: int,
               background: tuple[int, int, int] = (0, 0, 0)) -> npt.NDArray[np.uint8]:
    """A whole frame (uint8 (H, W, 3)) downscaled to fit ``size`` x ``size``,
    aspect kept, centred on ``background``: the tile of a no-face frame."""
    image = Image.fromarray(np.asarray(frame, np.uint8))
    scale = size / max(image.width, image.height)
    width = max(1, round(image.width * scale))
    height = max(1, round(image.height * scale))
    tile = Image.new("RGB", (size, size), background)
    # Pillow sets Image.BILINEAR with setattr, unseen by type checkers
    # (Image.Resampling is Pillow >= 9.1 only).
    tile.paste(image.resize((width, height), Image.BILINEAR),  # type: ignore[attr-defined]
               ((size - width) // 2, (size - height) // 2))
    return np.asarray(tile)


def contact_sheet(crops: npt.ArrayLike, found: Sequence[bool | None],
                  captions: Sequence[object] | None = None, columns: int = 8,
                  border: int = 3, legend: bool = True) -> Image.Image:
    """A grid image of tiles (uint8 (n, S, S, 3)), green-bordered where a face
    was found and red-bordered where not (``found`` True / False; None: an
    empty cell), with a legend of the two colours under the grid
    (``legend``).

    Returns a PIL image.
    """
    crops = np.asarray(crops)
    n = len(crops)
    size = crops.shape[1] if n else 64
    cell = size + 2 * border
    rows = max(1, -(-n // columns))
    legend_h = len(LEGEND) * (_TEXT_H + 2) + 4 if legend else 0
    width = max(columns * cell, 170 if legend else 0)
    sheet = Image.new("RGB", (width, rows * (cell + _TEXT_H) + legend_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k in range(n):
        x, y = (k % columns) * cell, (k // columns) * (cell + _TEXT_H)
        if found[k] is None:  # an empty cell (a row of one person's tiles, padded)
            continue
        colour = FACE_COLOUR if found[k] else NO_FACE_COLOUR
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
        sheet.paste(Image.fromarray(crops[k]), (x + border, y + border))
        if captions is not None:
            draw.text((x + 2, y + cell), str(captions[k]), fill=(0, 0, 0))
    if legend:
        y = rows * (cell + _TEXT_H) + 2
        for colour, text in LEGEND:
            draw.rectangle([2, y + 1, 2 + _SWATCH, y + 1 + _SWATCH], fill=colour)
            draw.text((6 + _SWATCH, y), text, fill=(0, 0, 0))
            y += _TEXT_H + 2
    return sheet


def save_contact_sheet(path: str | os.PathLike[str], crops: npt.ArrayLike,
                       found: Sequence[bool | None], captions: Sequence[object] | None = None,
                       columns: int = 8) -> Path:
    """Write :func:`contact_sheet` to ``path`` atomically (PNG)."""
    sheet = contact_sheet(crops, found, captions, columns)
    with atomic_file(path) as handle:
        sheet.save(handle, format="PNG")
    return Path(path)


class ContactSheet:
    """Collects the sampled tiles of ``n_rows`` rows as they stream by, then
    writes them with :meth:`save` (nothing happens when ``path`` is None)."""

    def __init__(self, path: str | os.PathLike[str] | None, n_rows: int,
                 n_samples: int = 24) -> None:
        self.path = path
        self.wanted = set(sample_indices(n_rows, n_samples).tolist()) if path else set()
        self.crops: list[npt.NDArray[np.uint8]] = []
        self.found: list[bool | None] = []
        self.captions: list[str] = []

    def wants(self, row: int) -> bool:
        """Whether row ``row`` is one of the sampled rows (make its tile only then)."""
        return row in self.wanted

    def offer(self, row: int, tile: npt.NDArray[np.uint8], found: bool | np.bool_,
              caption: str) -> None:
        """Keep row ``row``'s tile (its crop, or its frame when no face was
        found: :func:`frame_tile`) if it is one of the sampled rows."""
        if row in self.wanted:
            self.crops.append(tile)
            self.found.append(bool(found))
            self.captions.append(caption)

    def save(self) -> None:
        if self.path:
            save_contact_sheet(self.path, self.crops, self.found, self.captions)
