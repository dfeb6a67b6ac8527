"""Contact sheets: a PNG of sampled face crops, to check a video's crops at a glance."""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .files import atomic_file

NO_FACE_COLOUR = (220, 30, 30)
FACE_COLOUR = (40, 170, 60)


def sample_indices(n_rows, n_samples=24):
    """Evenly spaced row indices (at most ``n_samples``, distinct, sorted)."""
    if n_rows <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n_rows - 1, min(n_samples, n_rows)).round().astype(np.int64))


def contact_sheet(crops, found, captions=None, columns=8, border=3):
    """A grid image of crops (uint8 (n, S, S, 3)), green-bordered where a face
    was found and red-bordered where not (the crop shown is the fill).

    Returns a PIL image.
    """
    crops = np.asarray(crops)
    n = len(crops)
    size = crops.shape[1] if n else 64
    cell, text_h = size + 2 * border, 12
    rows = max(1, -(-n // columns))
    sheet = Image.new("RGB", (columns * cell, rows * (cell + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k in range(n):
        x, y = (k % columns) * cell, (k // columns) * (cell + text_h)
        colour = FACE_COLOUR if found[k] else NO_FACE_COLOUR
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
        sheet.paste(Image.fromarray(crops[k]), (x + border, y + border))
        if captions is not None:
            draw.text((x + 2, y + cell), str(captions[k]), fill=(0, 0, 0))
    return sheet


def save_contact_sheet(path, crops, found, captions=None, columns=8):
    """Write :func:`contact_sheet` to ``path`` atomically (PNG)."""
    sheet = contact_sheet(crops, found, captions, columns)
    with atomic_file(path) as handle:
        sheet.save(handle, format="PNG")
    return Path(path)


class ContactSheet:
    """Collects the sampled crops of ``n_rows`` rows as they stream by, then
    writes them with :meth:`save` (nothing happens when ``path`` is None)."""

    def __init__(self, path, n_rows, n_samples=24):
        self.path = path
        self.wanted = set(sample_indices(n_rows, n_samples).tolist()) if path else set()
        self.crops, self.found, self.captions = [], [], []

    def offer(self, row, crop, found, caption):
        """Keep row ``row``'s crop if it is one of the sampled rows."""
        if row in self.wanted:
            self.crops.append(crop)
            self.found.append(bool(found))
            self.captions.append(caption)

    def save(self):
        if self.path:
            save_contact_sheet(self.path, self.crops, self.found, self.captions)
