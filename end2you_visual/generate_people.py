"""`generate` for every person of a video (``--faces all``, or an input
CSV's ``person`` column): one sequence per person.

The video is decoded once; the face pipeline with ``faces="all"`` (its tracker a
:class:`~end2you_visual.people.PeopleTracker`)
gives each batch's crops per person, and each person's rows go to a hidden
temporary HDF5 file beside the output as they stream by (a person first
seen late gets no-face rows before). At the end the people kept (seen for
``min_duration``) are copied, in id order, into the output file, one
sequence each, and the temporary files removed:

* ``--faces all`` (no ``person`` given): every person kept, sequences
  ``<name>_person<id>``;
* ``person`` ``left`` / ``right`` / an id (a labelled row): the one person
  the labels belong to (:func:`choose_person`), the sequence named as the
  row's output, with its labels.

Each sequence's metadata holds the person (``person``: id,
``first_frame``, ``last_frame``, ``frames``, ``mean_x``, ``mean_y``); the
manifest row lists them under ``persons``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np
from tqdm.auto import tqdm

from .audio import store_audio_track
from .errors import InputError
from .face_settings import settings_record
from .hdf5 import SequenceWriter
from .manifest import Result
from .preview import sample_indices, save_contact_sheet

if TYPE_CHECKING:
    from .face_batch import FaceBatch
    from .generate_settings import GenerateSettings
    from .inputs import InputItem
    from .labels import LabelTrack
    from .people import Person
    from .row_plan import RowPlan
    from .video import VideoFrames

__all__ = ["PERSON_COLUMN", "PERSON_SIDES", "choose_person", "generate_people"]

#: The input CSV column saying whose labels a label file holds.
PERSON_COLUMN = "person"
#: Its values besides a person id: the main subject, or the person on the left / right.
PERSON_SIDES = ("main", "left", "right")
# Two people's mean horizontal positions closer than this (fraction of the
# frame's width) are "equally far left": an ambiguous label, an error.
_SAME_SIDE = 0.02
_ROWS_COPIED = 256  # rows per copy from a temporary file into the output
_SHEET_COLUMNS = 8
_SHEET_CANDIDATES = 32  # tiles kept per person while streaming, 8 shown
# A contact-sheet tile: (crop, face found or None for an empty cell, caption).
_Tile = Tuple[np.ndarray, Optional[bool], str]


def wanted_person(item: InputItem) -> Optional[str]:
    """The input CSV's ``person`` for ``item`` ("" and "main": None, the main subject)."""
    value = str(item.metadata.get(PERSON_COLUMN, "") or "").strip().lower()
    return None if value in ("", "main") else value


def check_person_value(value: Optional[str], where: Union[str, os.PathLike[str]]) -> None:
    """InputError naming ``where`` unless ``value`` is main, left, right or an id >= 1."""
    if value is None or value in PERSON_SIDES or (value.isdigit() and int(value) >= 1):
        return
    raise InputError(where, f"person column: {value!r} is not main, left, right or a person "
                            "id (1, 2, ...)")


class _PersonRows:
    """One person's rows, written to a temporary file as they come."""

    def __init__(self, path: Path, settings: GenerateSettings, names: Sequence[str], kind: str,
                 times: Union[np.ndarray, Sequence[float]], labels: Optional[np.ndarray],
                 detector: str) -> None:
        self.writer = SequenceWriter(path, settings.size, names, kind,
                                     settings_record(settings, detector),
                                     settings.compression)
        self.writer.begin_sequence("person", fps=0.0)
        self.centres: List[Tuple[int, float]] = []  # (frame index, box centre x) where found
        if len(times):  # seen late: the rows before hold no face
            n = len(times)
            self.writer.append(np.zeros((n, settings.size, settings.size, 3), np.uint8),
                               np.asarray(times), labels, np.zeros(n, bool))

    def append(self, faces: FaceBatch, rows: np.ndarray, times: np.ndarray,
               labels: Optional[np.ndarray], frame_indices: np.ndarray) -> None:
        if not len(rows):
            return
        self.writer.append(faces.crops[rows], times, labels, faces.found[rows],
                           faces.boxes[rows],
                           None if faces.landmarks is None else faces.landmarks[rows])
        found = faces.found[rows]
        centres = (faces.boxes[rows, 0] + faces.boxes[rows, 2]) / 2
        self.centres += list(zip(np.asarray(frame_indices)[found].tolist(),
                                 centres[found].tolist()))


def record_decoding(result: Result, item: InputItem, video: VideoFrames, plan: RowPlan) -> None:
    """What decoding ``video`` found, into ``result``: the frames decoded
    and expected, a warning when it ended early, the label rows dropped
    after its end (``plan.check_coverage``: an InputError when the labels
    do not fit, which discards the output)."""
    result.decoded_frames, result.expected_frames = video.decoded, video.expected
    if video.ends_early:
        result.warnings.append(
            f"{item.raw}: the video ends early: decoded {video.decoded} of "
            f"{video.expected} frames ({video.decode_error}); the output holds the "
            "decoded frames")
    dropped = plan.check_coverage(video)
    if dropped:
        result.warnings.append(f"{item.label_file}: {dropped} label rows after the "
                               "video's end dropped")


def choose_person(people: List[Person], wanted: str, centres: Dict[int, list],
                  span: Tuple[int, int], width: int, where: Union[str, os.PathLike[str]]
                  ) -> Person:
    """The person a label file's ``person`` names.

    Args:
        people: the people kept.
        wanted: ``"left"``, ``"right"`` or an id (a string of digits).
        centres: per person id, ``(frame index, box centre x)`` where found.
        span: ``(first, last)`` frame indices of the labels' time span.
        width: the frames' width, pixels.
        where: what errors name (the label file).

    ``left`` / ``right``: among the people visible during ``span``, the one
    whose mean horizontal position there is leftmost / rightmost
    (Aff-Wild2's convention). No one visible, or two people equally far
    (within 2 % of the width), is an InputError, never a guess.
    """
    if wanted.isdigit():
        for p in people:
            if p.id == int(wanted):
                return p
        ids = ", ".join(str(p.id) for p in people) or "none"
        raise InputError(where, f"person {wanted} is not among the people found in the "
                                f"video (found: {ids})")
    first, last = span
    means = {}
    for p in people:
        xs = [x for f, x in centres.get(p.id, []) if first <= f <= last]
        if xs:
            means[p.id] = float(np.mean(xs)) / width
    if not means:
        raise InputError(where, f"person {wanted}: nobody is visible during its labels' "
                                f"time span (frames {first}-{last})")
    order = sorted(means, key=means.__getitem__, reverse=wanted == "right")
    if len(order) > 1 and abs(means[order[0]] - means[order[1]]) < _SAME_SIDE:
        a, b = sorted(order[:2])
        raise InputError(where, f"person {wanted}: people {a} and {b} are equally far "
                                f"{wanted} (mean x {means[a]:.3f} and {means[b]:.3f} of the "
                                "width) during its labels' time span; name the person by id "
                                "instead")
    chosen = order[0]
    return next(p for p in people if p.id == chosen)


def generate_people(item: InputItem, out_path: Union[str, os.PathLike[str]],
                    settings: GenerateSettings, plan: RowPlan, names: List[str], kind: str,
                    track: Optional[LabelTrack], result: Result, video: VideoFrames,
                    preview_path: Union[str, os.PathLike[str], None] = None,
                    progress: bool = False) -> Result:
    """Write ``item``'s people to ``out_path`` (see the module docstring);
    ``plan``, ``names``, ``kind``, ``track``, ``result`` and ``video`` as
    :func:`~end2you_visual.generate.generate_video` made them."""
    from .faces import FacePipeline  # torch: imported when faces are detected

    started = time.perf_counter()
    info = video.info
    wanted = wanted_person(item)
    pipeline = FacePipeline.from_settings(settings, info.fps, faces="all")
    out_path = Path(out_path)
    temp: Dict[int, _PersonRows] = {}
    times_so_far: List[np.ndarray] = []
    labels_so_far: List[np.ndarray] = []
    tiles: Dict[int, List[_Tile]] = {}
    total_rows = len(track.times) if track is not None and settings.align == "labels" \
        else info.n_frames
    every = max(1, -(-total_rows // _SHEET_CANDIDATES))  # rows between candidate tiles
    bar = tqdm(total=info.n_frames, desc=Path(item.raw).name, unit="frame",
               disable=not progress, leave=False)
    try:
        for start, frames in video:
            batches = pipeline.track(frames)  # {person id: FaceBatch}
            rows, times, labels, first = plan.rows(start, len(frames))
            for pid, faces in batches.items():
                if pid not in temp:
                    before_labels = np.concatenate(labels_so_far) if labels_so_far and \
                        labels is not None else None
                    temp[pid] = _PersonRows(
                        out_path.with_name(f".{out_path.stem}.person{pid}.h5"), settings,
                        names, kind, np.concatenate(times_so_far) if times_so_far else [],
                        before_labels, pipeline.face_detector.name)
                temp[pid].append(faces, rows, times, labels, start + rows)
                for k, row in enumerate(rows):  # the sheet shows each person's own frames
                    if preview_path is not None and (first + k) % every == 0 and \
                            faces.found[row]:
                        tiles.setdefault(pid, []).append(
                            (faces.crops[row].copy(), True, f"P{pid} {times[k]:.1f}s"))
            times_so_far.append(np.asarray(times))
            if labels is not None:
                labels_so_far.append(np.asarray(labels))
            bar.update(len(frames))
        bar.close()
        record_decoding(result, item, video, plan)
        people = pipeline.people()
        for rows_of in temp.values():
            rows_of.writer.commit()
        if wanted is not None:
            span = (0, video.decoded - 1) if track is None else \
                (int(np.floor(track.times[0] * info.fps)),
                 int(np.ceil(track.times[-1] * info.fps)))
            chosen = choose_person(people, wanted, {p: t.centres for p, t in temp.items()},
                                   span, info.width, item.label_file or item.raw)
            selected = [(chosen, item.name)]
        else:
            selected = [(p, f"{item.name}_person{p.id}") for p in people]
        if not selected:
            result.warnings.append(f"{item.raw}: no person was seen for --min-duration "
                                   f"{settings.min_duration:g} s; the file holds no sequence")
        _assemble(out_path, settings, names, kind, item, result, selected, temp,
                  pipeline.face_detector.name)
    finally:
        for rows_of in temp.values():
            rows_of.writer.abort()
            Path(rows_of.writer.path).unlink(missing_ok=True)
    if preview_path is not None:
        sheet = [t for p, _ in selected for t in _row(tiles.get(p.id, []), settings.size)]
        if sheet:
            save_contact_sheet(preview_path, [t[0] for t in sheet], [t[1] for t in sheet],
                               [t[2] for t in sheet], columns=_SHEET_COLUMNS)
    result.persons = [p.to_dict() for p, _ in selected]
    result.sequences = len(selected)
    result.seconds = time.perf_counter() - started
    return result


def _row(tiles: List[_Tile], size: int) -> List[_Tile]:
    """One contact-sheet row of a person: 8 of their tiles, evenly spaced,
    padded with empty cells."""
    row = [tiles[k] for k in sample_indices(len(tiles), _SHEET_COLUMNS)]  # evenly spaced
    blank = (np.full((size, size, 3), 255, np.uint8), None, "")
    return row + [blank] * (_SHEET_COLUMNS - len(row))


def _assemble(out_path: Path, settings: GenerateSettings, names: List[str], kind: str,
              item: InputItem, result: Result, selected: List[Tuple[Person, str]],
              temp: Dict[int, _PersonRows], detector: str) -> None:
    """Copy the selected people's temporary files into the output, one
    sequence each, and commit it."""
    with SequenceWriter(out_path, settings.size, names, kind, settings_record(settings, detector),
                        settings.compression,
                        audio_rate=settings.audio_rate if settings.audio else None) as writer:
        for person, name in selected:
            metadata = {**item.metadata, "person": person.to_dict()}
            assert result.fps is not None  # the output's rate, set by generate_video
            writer.begin_sequence(name, item.raw, result.fps, item.label_file, metadata)
            with h5py.File(temp[person.id].writer.path, "r") as source:
                n = len(source["timestamps"])
                for s in range(0, n, _ROWS_COPIED):
                    part = slice(s, min(n, s + _ROWS_COPIED))
                    labels = source["labels"][part] if source["labels"].shape[1] else None
                    writer.append(source["frames"][part], source["timestamps"][part], labels,
                                  source["face_found"][part], source["boxes"][part],
                                  source["landmarks"][part] if "landmarks" in source else None)
                result.faces_found += int(np.count_nonzero(source["face_found"][()]))
            if result.audio_found:
                store_audio_track(writer, item.raw, settings.audio_rate)
            writer.end_sequence()
        result.frames = writer.n_frames
        writer.commit()

