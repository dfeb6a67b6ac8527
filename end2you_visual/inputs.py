"""What ``generate`` reads: an input CSV, a folder of videos, or image folders.

Every source becomes a list of :class:`InputItem`, one per output file:

* an End2You-style CSV (``raw_file,label_file`` plus optional metadata
  columns), :func:`read_input_csv`;
* a folder of videos with label CSVs of the same stem beside them,
  :func:`scan_video_dir`;
* a FER2013-style folder of class folders of images,
  :func:`scan_image_classes`;
* a CK+-style folder of class folders of image-sequence folders,
  :func:`scan_image_sequences`.

:func:`discover_inputs` picks one by the path's content. Items are sorted (or
kept in CSV order) so that the same input always gives the same list, and
:func:`select_shard` splits that list between ``torchrun`` workers.

Hidden files and folders (names starting with ``.``, e.g. macOS ``._x.png``)
are ignored everywhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np

from .csvfile import read_csv_rows
from .errors import InputError
from .files import files_in
from .labels import one_hot
from .ranges import check_number

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg",
                    ".m4v", ".flv", ".wmv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
LAYOUTS = ("auto", "csv", "videos", "image_classes", "image_sequences")
# The values of an input CSV's ``split`` column (any case) naming each partition.
TRAIN_NAMES = ("train", "training")
VALID_NAMES = ("valid", "validation", "val", "devel", "dev", "development")
TEST_NAMES = ("test", "testing")
SPLIT_NAMES = {"train": TRAIN_NAMES, "valid": VALID_NAMES, "test": TEST_NAMES}
KINDS = ("video", "image", "image_sequence")

_T = TypeVar("_T")


@dataclass
class InputItem:
    """One input to turn into one output file.

    ``name``: the output stem, unique within a list; ``kind``: ``"video"``,
    ``"image"`` or ``"image_sequence"``; ``raw``: the video file, image file
    or sequence folder; ``label_file``: a label CSV (videos) or None;
    ``label``: one float32 (L,) label for an image or sequence, or None;
    ``metadata``: extra str -> str facts (CSV columns, ``class``).
    """

    name: str
    kind: str
    raw: Path
    label_file: Optional[Path] = None
    label: Optional[np.ndarray] = None
    metadata: Dict[str, str] = field(default_factory=dict)


# --- the input CSV -----------------------------------------------------------

def read_input_csv(csv_path: str | os.PathLike[str]) -> List[InputItem]:
    """Read an End2You-style input CSV into video items, in row order.

    Columns: ``raw_file`` (required), ``label_file`` (optional; an empty cell
    is an unlabelled video), any others kept as ``metadata`` (e.g. ``split``,
    ``subject``). Relative paths are relative to the CSV's folder. Names come
    from the raw file's path relative to that folder without its extension,
    ``/`` becoming ``__`` (``sub/clip.mp4`` -> ``sub__clip``); a raw file
    outside that folder (``/data/clip.mp4``, ``../clip.mp4``) is named by its
    stem (``clip``). Two different
    files with the same name get ``__2``, ``__3``... in row order, and so
    does the same raw file with another label file (two annotations of one
    video); the same raw file with the same label file twice is an error.
    A raw or label file that does not exist is NOT an error here: the
    generator records it for that item and goes on.
    """
    csv_path = Path(csv_path)
    header, rows = _read_input_rows(csv_path)
    base = csv_path.parent
    items: List[InputItem] = []
    seen: Dict[Tuple[Optional[str], Optional[str]], int] = {}
    for line, row in rows:
        raw_cell = row.get("raw_file", "")
        if not raw_cell:
            raise InputError(csv_path, f"row {line}: raw_file is empty")
        raw = base / raw_cell
        label_cell = row.get("label_file", "")
        label_file = base / label_cell if label_cell else None
        key = (_same_file_key(raw), _same_file_key(label_file))
        if key in seen:
            raise InputError(csv_path, f"row {line} repeats row {seen[key]} "
                                       f"(raw file {raw_cell!r}, label file "
                                       f"{label_cell!r})")
        seen[key] = line
        metadata = {column: row.get(column, "") for column in header
                    if column not in ("raw_file", "label_file")}
        items.append(InputItem(
            name=_csv_name(base, raw), kind="video", raw=raw,
            label_file=label_file, metadata=metadata))
    _make_names_unique(items)
    return items


def _read_input_rows(csv_path: Path) -> Tuple[List[str], List[Tuple[int, Dict[str, str]]]]:
    """The stripped header and the rows as (line number, {column: cell})."""
    header, rows = read_csv_rows(csv_path, "input CSV",
                                 "expected a header row raw_file,label_file")
    if "raw_file" not in header:
        raise InputError(csv_path, f"has no 'raw_file' column; the header is "
                                   f"{header} (expected raw_file,label_file)")
    if "" in header or len(set(header)) != len(header):
        raise InputError(csv_path, f"header {header} has an empty or repeated "
                                   "column name")
    if not rows:
        raise InputError(csv_path, "lists no files (no data rows)")
    parsed = []
    for line, cells in rows:
        if len(cells) > len(header):
            raise InputError(csv_path, f"row {line} has {len(cells)} cells, "
                                       f"the header has {len(header)}")
        parsed.append((line, {column: cell.strip()
                              for column, cell in zip(header, cells)}))
    return header, parsed


def _csv_name(base: str | os.PathLike[str], raw: str | os.PathLike[str]) -> str:
    """The output stem of a CSV row's raw file (see read_input_csv)."""
    raw_abs = os.path.normpath(os.path.abspath(raw))
    try:
        relative = os.path.relpath(raw_abs, os.path.abspath(base))
    except ValueError:                          # another drive (Windows)
        relative = os.pardir
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        relative = os.path.basename(raw_abs)
    return _stem_name(relative)


def _same_file_key(path: str | os.PathLike[str] | None) -> Optional[str]:
    """A key equal for two spellings of the same file (existing or not)."""
    if path is None:
        return None
    return os.path.normcase(str(Path(path).resolve()))


# --- folders -----------------------------------------------------------------

def scan_video_dir(folder: str | os.PathLike[str]) -> List[InputItem]:
    """Video items for every video under ``folder`` (recursively).

    Videos are found by extension (:data:`VIDEO_EXTENSIONS`, any case); a
    label CSV of the same stem beside a video (``clip.mp4`` + ``clip.csv``)
    is its label file, no CSV means unlabelled. Sorted by relative path;
    names as in :func:`read_input_csv`.
    """
    folder = _existing_folder(folder)
    videos = sorted(files_in(folder, VIDEO_EXTENSIONS),
                    key=lambda path: _natural_key(
                        path.relative_to(folder).as_posix()))
    if not videos:
        raise InputError(folder, "has no video files "
                                 f"({_joined(VIDEO_EXTENSIONS)})")
    items = [InputItem(name=_stem_name(video.relative_to(folder).as_posix()),
                       kind="video", raw=video,
                       label_file=_label_beside(video))
             for video in videos]
    _make_names_unique(items)
    return items


def _classes(folder: Path) -> List[Tuple[str, np.ndarray]]:
    """``(class name, its one-hot label)`` for each class folder of ``folder``."""
    names = _subfolder_names(folder)
    return [(name, one_hot(index, len(names))) for index, name in enumerate(names)]


def scan_image_classes(folder: str | os.PathLike[str]) -> Tuple[List[InputItem], List[str]]:
    """Image items for a FER2013-style folder: ``folder/<class>/<image>``.

    Every non-hidden sub-folder is a class (an empty one included, so that
    class indices agree between splits); classes are sorted by name and each
    image gets the one-hot label of its class and ``metadata["class"]``.
    Images directly in a class folder only, naturally sorted.
    """
    folder = _existing_folder(folder)
    items = []
    classes = _classes(folder)
    for name, label in classes:
        for image in _images_in(folder / name):
            items.append(InputItem(
                name=_stem_name(f"{name}/{image.name}"), kind="image",
                raw=image, label=label.copy(), metadata={"class": name}))
    if not items:
        raise InputError(folder, "has no class folders of images "
                                 f"({_joined(IMAGE_EXTENSIONS)})")
    _make_names_unique(items)
    return items, [name for name, _ in classes]


def scan_image_sequences(folder: str | os.PathLike[str]) -> Tuple[List[InputItem], List[str]]:
    """Sequence items for a CK+-style folder: ``folder/<class>/<seq>/<frame>``.

    Every non-hidden sub-folder is a class (sorted by name); every non-hidden
    folder inside a class is one sequence (kind ``"image_sequence"``, ``raw``
    the sequence folder) with the one-hot label of its class and
    ``metadata["class"]``. :func:`list_sequence_frames` gives its frames in
    order. A sequence folder without images is an error.
    """
    folder = _existing_folder(folder)
    items = []
    classes = _classes(folder)
    for name, label in classes:
        for sequence in _subfolder_names(folder / name):
            path = folder / name / sequence
            if not _images_in(path):
                raise InputError(path, "sequence folder has no images "
                                       f"({_joined(IMAGE_EXTENSIONS)})")
            items.append(InputItem(
                name=_stem_name(f"{name}/{sequence}", strip_suffix=False),
                kind="image_sequence", raw=path, label=label.copy(),
                metadata={"class": name}))
    if not items:
        raise InputError(folder, "has no class folders of image-sequence "
                                 "folders")
    _make_names_unique(items)
    return items, [name for name, _ in classes]


def assign_subjects(items: Sequence[InputItem], pattern: Optional[str] = None,
                    root: str | os.PathLike[str] | None = None) -> Dict[str, Any]:
    r"""Give each item a ``metadata["subject"]``, for subject-independent splits.

    An item that has one (the input CSV's ``subject`` column) keeps it;
    otherwise, with ``pattern`` (a regular expression searched in the
    item's path relative to ``root``, ``/``-separated), the subject is the
    match's group ``subject`` if the pattern names one, else its first
    group, else the whole match (``r"S\d{3}"`` finds ``S010`` in
    ``happy/S010_004_00000017.png``). Returns what the manifest records:
    ``{"known": n, "unknown": m, "pattern": pattern}`` and, when no
    subject is known, a ``note`` saying so.
    """
    regex = re.compile(pattern) if pattern else None
    for item in items:
        if str(item.metadata.get("subject", "")).strip() or regex is None:
            continue
        path = Path(item.raw)
        if root is not None and Path(root).is_dir():
            try:
                path = path.resolve().relative_to(Path(root).resolve())
            except ValueError:
                pass
        found = regex.search(path.as_posix())
        if found:
            subject = (found.group("subject") if "subject" in regex.groupindex
                       else found.group(1) if regex.groups else found.group(0))
            if subject:
                item.metadata = {**item.metadata, "subject": subject}
    known = sum(bool(str(i.metadata.get("subject", "")).strip()) for i in items)
    summary: Dict[str, Any] = {"known": known, "unknown": len(items) - known, "pattern": pattern}
    if not known:
        summary["note"] = ("no subject is known: `train --split-by subject` cannot hold "
                           "subjects out; give the input CSV a subject column or "
                           "generate --subject-pattern")
    return summary


def list_sequence_frames(folder: str | os.PathLike[str]) -> List[Path]:
    """The images of a sequence folder in natural order (frame2 < frame10)."""
    return _images_in(_existing_folder(folder))


def discover_inputs(path: str | os.PathLike[str], layout: str = "auto"
                    ) -> Tuple[List[InputItem], Optional[List[str]]]:
    """The items at ``path`` and their label names (class names), or None.

    ``layout="auto"``: a CSV file is an input CSV; a video file is one video
    (with the label CSV of its stem beside it, if any); a folder holding video
    files anywhere is a video folder; a folder of class folders holding
    images is an image-classes folder; a folder of class folders holding
    folders of images is an image-sequences folder. ``layout`` may force
    ``"csv"``, ``"videos"``, ``"image_classes"`` or ``"image_sequences"``.
    Label names are None for CSV and video inputs (they come from the label
    files) and the sorted class names for image inputs.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    path = Path(path)
    if not path.exists():
        raise InputError(path, "input not found")
    if layout == "auto":
        layout = _detect_layout(path)
    if layout == "csv":
        if not path.is_file():
            raise InputError(path, "layout 'csv' needs a CSV file, this is a "
                                   "folder")
        return read_input_csv(path), None
    if layout == "videos":
        if path.is_file():  # one video, with the label CSV of its stem if any
            return [InputItem(name=_stem_name(path.name), kind="video", raw=path,
                              label_file=_label_beside(path))], None
        return scan_video_dir(path), None
    if layout == "image_classes":
        return scan_image_classes(path)
    return scan_image_sequences(path)


def _detect_layout(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return "videos"
        raise InputError(path, "is neither an input CSV (.csv), a video nor a folder")
    if files_in(path, VIDEO_EXTENSIONS):
        return "videos"
    with_images: List[str] = []
    with_sequences: List[str] = []
    for name in _subfolder_names(path):
        if _images_in(path / name):
            with_images.append(name)
        elif any(_images_in(path / name / sub)
                 for sub in _subfolder_names(path / name)):
            with_sequences.append(name)
    if with_images and with_sequences:
        raise InputError(path, f"is ambiguous: class folders {with_images} "
                               f"hold images, {with_sequences} hold "
                               "sequence folders; pass the layout")
    if with_images:
        return "image_classes"
    if with_sequences:
        return "image_sequences"
    raise InputError(path, "found nothing to read: no video files "
                           f"({_joined(VIDEO_EXTENSIONS)}), no class folders "
                           "of images, no class folders of image-sequence "
                           "folders (or pass an input CSV)")


# --- sharding ----------------------------------------------------------------

def select_shard(items: Iterable[_T], num_shards: int, shard_index: int) -> List[_T]:
    """Items ``shard_index``, ``shard_index + num_shards``, ... (round-robin).

    Every item lands in exactly one shard, and the shards' sizes differ by at
    most one. A count below 1 or an index outside ``[0, num_shards)`` raises
    :class:`InputError` naming ``--num-shards`` / ``--shard-index``.
    """
    num_shards = int(check_number("--num-shards", num_shards, 1, integer=True))
    shard_index = int(check_number("--shard-index", shard_index, 0, num_shards,
                                   integer=True, max_open=True))
    return list(items)[shard_index::num_shards]


def shard_from_env(environ: Optional[Mapping[str, str]] = None) -> Tuple[int, int]:
    """(num_shards, shard_index) from torchrun's environment, else (1, 0).

    Reads ``WORLD_SIZE`` and ``RANK`` from ``environ`` (default
    ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    world, rank = environ.get("WORLD_SIZE"), environ.get("RANK")
    if world is None and rank is None:
        return 1, 0
    if world is None or rank is None:
        raise InputError(None, "WORLD_SIZE and RANK must be set together "
                               f"(WORLD_SIZE={world!r}, RANK={rank!r})")
    try:
        num_shards, shard_index = int(world), int(rank)
    except ValueError:
        raise InputError(None, f"WORLD_SIZE={world!r} and RANK={rank!r} must "
                               "be integers") from None
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise InputError(None, f"RANK={rank} is not in [0, WORLD_SIZE="
                               f"{world})")
    return num_shards, shard_index


# --- helpers -----------------------------------------------------------------

def _natural_key(text: str) -> Tuple[List[Any], str]:
    """Sort key with digit runs compared as numbers: frame2 < frame10."""
    parts = re.split(r"(\d+)", text)
    return ([int(part) if k % 2 else part.lower()
             for k, part in enumerate(parts)], text)


def _stem_name(relative: str, strip_suffix: bool = True) -> str:
    """``sub/clip.mp4`` -> ``sub__clip``: a flat, file-name-safe stem."""
    parts = [part for part in re.split(r"[\\/]+", relative)
             if part not in ("", ".", "..")]
    if strip_suffix and parts:
        stem = os.path.splitext(parts[-1])[0]
        parts[-1] = stem or parts[-1]
    name = "__".join(parts)
    name = re.sub(r"[^\w.\-]", "_", name)
    return name.lstrip(".") or "item"


def _make_names_unique(items: Sequence[InputItem]) -> None:
    """Append ``__2``, ``__3``... to later items whose name is taken."""
    taken = {item.name for item in items}
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            k = 2
            while f"{item.name}__{k}" in taken:
                k += 1
            item.name = f"{item.name}__{k}"
            taken.add(item.name)
        seen.add(item.name)


def _existing_folder(folder: str | os.PathLike[str]) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise InputError(folder, "folder not found")
    if not folder.is_dir():
        raise InputError(folder, "is a file, not a folder")
    return folder


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _subfolder_names(folder: str | os.PathLike[str]) -> List[str]:
    """Sorted names of the non-hidden folders directly in ``folder``."""
    return sorted(entry.name for entry in os.scandir(folder)
                  if entry.is_dir() and not _is_hidden(entry.name))


def _images_in(folder: str | os.PathLike[str]) -> List[Path]:
    """Non-hidden image files directly in ``folder``, naturally sorted."""
    names = [entry.name for entry in os.scandir(folder)
             if entry.is_file() and not _is_hidden(entry.name)
             and entry.name.lower().endswith(IMAGE_EXTENSIONS)]
    return [Path(folder) / name for name in sorted(names, key=_natural_key)]


def _label_beside(video: Path) -> Optional[Path]:
    for suffix in (".csv", ".CSV"):
        candidate = video.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _joined(extensions: Iterable[str]) -> str:
    return " ".join(extensions)
