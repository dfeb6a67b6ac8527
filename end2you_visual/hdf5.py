"""Writing end2you-visual HDF5 files (schema version 1), atomically.

One file holds one or more *sequences* (a video, an image sequence, or a
single image), their frames concatenated along the first axis::

    /frames        uint8   (N, S, S, 3)  face crops, RGB
    /labels        float32 (N, L)        one label row per frame (L may be 0)
    /timestamps    float64 (N,)          seconds from the start of its sequence
    /face_found    bool    (N,)          False where no face was found
    /boxes         float32 (N, 4)        x1, y1, x2, y2 in source pixels (NaN: none)
    /landmarks     float32 (N, 5, 2)     five face landmarks x, y in source pixels (NaN:
                                         none); files written before it lack it
    /sequences/offsets  int64 (Q + 1,)   sequence q is rows offsets[q]:offsets[q+1]
    /sequences/name     str   (Q,)
    /sequences/source   str   (Q,)       the raw file it came from
    /sequences/label_file str (Q,)       "" when unlabelled
    /sequences/fps      float64 (Q,)     frame rate of the sequence's frames
    /sequences/metadata str   (Q,)       JSON object (extra input-CSV columns...)
    /audio/...                           with audio_rate: see end2you_visual.audio

File attributes: ``format`` ("end2you-visual"), ``schema_version`` (1),
``label_names`` (JSON list), ``label_kind``, ``frame_size``, ``complete``
(True once committed), ``settings`` (JSON of the generator's settings) and
``created_by``. See ``docs/format.md``.

The file is written to ``<name>.partial`` and renamed into place by
:meth:`SequenceWriter.commit`, so a killed run never leaves a file that looks
finished.
"""
from __future__ import annotations

import errno
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Literal, Mapping, Sequence

import h5py
import numpy as np
import numpy.typing as npt

from . import __version__
from .audio import AudioStore, audio_found

FORMAT_NAME = "end2you-visual"
SCHEMA_VERSION = 1
PARTIAL_SUFFIX = ".partial"
LABEL_KINDS = ("none", "continuous", "multilabel", "multiclass")

_STR = h5py.string_dtype(encoding="utf-8")


class SequenceWriter:
    """Append sequences of face crops and labels to one HDF5 file.

    Args:
        path: final file path (``.h5``); data goes to ``path + '.partial'``
            until :meth:`commit`.
        frame_size: side S of the square crops.
        label_names: names of the L label columns (may be empty).
        label_kind: one of ``LABEL_KINDS``.
        settings: JSON-serialisable generator settings, stored as an attribute.
        compression: ``None``, ``"gzip"`` or ``"lzf"`` for the frames.
        chunk_frames: frames per HDF5 chunk (windows of consecutive frames
            are read chunk by chunk).
        audio_rate: also store audio at this rate (Hz): the ``/audio`` group of
            :class:`end2you_visual.audio.AudioStore`, samples given with
            :meth:`append_audio`.

    Use as a context manager: leaving the block without :meth:`commit`
    (an exception) removes the partial file.
    """

    def __init__(self, path: str | os.PathLike[str], frame_size: int,
                 label_names: Sequence[str] = (), label_kind: str = "none",
                 settings: Mapping[str, Any] | None = None, compression: str | None = None,
                 chunk_frames: int = 16, audio_rate: int | None = None) -> None:
        if label_kind not in LABEL_KINDS:
            raise ValueError(f"label_kind must be one of {LABEL_KINDS}, not {label_kind!r}")
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.frame_size = int(frame_size)
        self.label_names = list(label_names)
        self._offsets = [0]  # sequence boundaries so far
        self._n = 0          # frames written so far
        self._seq: dict[str, list[Any]] = {"name": [], "source": [], "label_file": [], "fps": [],
                                           "metadata": []}
        self._open = False
        self.flush_rows = max(256, chunk_frames)
        self._pending: dict[str, list[np.ndarray]] = {k: [] for k in ("frames", "timestamps", "labels", "face_found", "boxes",
                                         "landmarks")}
        self._pending_rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._h5 = h5py.File(self.partial, "w")
        except OSError:  # a full disk: the file was made, its first block not written
            self.partial.unlink(missing_ok=True)
            raise
        try:
            self._create(label_kind, settings or {}, compression, chunk_frames)
            self.audio = None if audio_rate is None else AudioStore(self._h5, audio_rate)
        except BaseException:
            self.abort()
            raise

    def _create(self, label_kind: str, settings: Mapping[str, Any], compression: str | None,
                chunk_frames: int) -> None:
        s, n_labels = self.frame_size, len(self.label_names)
        h5 = self._h5
        h5.attrs.update({
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "label_names": json.dumps(self.label_names),
            "label_kind": label_kind,
            "frame_size": s,
            "settings": json.dumps(settings, default=str),
            "created_by": f"end2you-visual {__version__}",
            "complete": False,
        })
        # The datasets stay open until the file closes: closing one writes its
        # cached chunks, and a write failing there (a full disk), in a
        # garbage-collected handle, would corrupt HDF5's state (see abort).
        self._dsets: dict[str, Any] = {"frames": h5.create_dataset(
            "frames", (0, s, s, 3), np.uint8, maxshape=(None, s, s, 3),
            chunks=(chunk_frames, s, s, 3), compression=compression)}
        for name, shape, dtype in (("labels", (n_labels,), np.float32),
                                   ("timestamps", (), np.float64),
                                   ("face_found", (), bool),
                                   ("boxes", (4,), np.float32),
                                   ("landmarks", (5, 2), np.float32)):
            # An empty label axis (unlabelled data) still needs a positive chunk.
            self._dsets[name] = h5.create_dataset(
                name, (0,) + shape, dtype, maxshape=(None,) + tuple(d or None for d in shape),
                chunks=(max(1024, chunk_frames),) + tuple(d or 1 for d in shape))

    @property
    def n_frames(self) -> int:
        return self._n

    @property
    def n_sequences(self) -> int:
        return len(self._seq["name"])

    def begin_sequence(self, name: str, source: str | os.PathLike[str] = "", fps: float = 0.0,
                       label_file: str | os.PathLike[str] | None = "",
                       metadata: Mapping[str, Any] | None = None) -> None:
        """Start a new sequence; frames appended until :meth:`end_sequence` belong to it."""
        if self._open:
            raise RuntimeError("end_sequence() the current sequence first")
        self._open = True
        for key, value in (("name", str(name)), ("source", str(source)),
                           ("label_file", str(label_file or "")), ("fps", float(fps)),
                           ("metadata", json.dumps(metadata or {}, default=str))):
            self._seq[key].append(value)
        if self.audio is not None:
            self.audio.begin_sequence()

    def append_audio(self, samples: npt.ArrayLike) -> None:
        """Append mono float32 samples to the open sequence's audio track."""
        if not self._open or self.audio is None:
            raise RuntimeError("append_audio needs an open sequence and audio_rate")
        with self._writing():
            self.audio.append(samples)

    def append(self, frames: npt.ArrayLike, timestamps: npt.ArrayLike, labels: npt.ArrayLike | None = None,
               face_found: npt.ArrayLike | None = None, boxes: npt.ArrayLike | None = None,
               landmarks: npt.ArrayLike | None = None) -> None:
        """Append n frames (uint8 (n, S, S, 3)) and their per-frame rows
        (``boxes`` (n, 4) and ``landmarks`` (n, 5, 2): NaN when not given)."""
        if not self._open:
            raise RuntimeError("begin_sequence() first")
        frames = np.asarray(frames)
        n = len(frames)
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.frame_size, self.frame_size, 3):
            raise ValueError(f"frames must be uint8 (n, {self.frame_size}, {self.frame_size}, 3), "
                             f"got {frames.dtype} {frames.shape}")
        n_labels = len(self.label_names)
        rows = {
            "frames": frames,
            "timestamps": np.asarray(timestamps, np.float64).reshape(n),
            "labels": (np.zeros((n, n_labels), np.float32) if labels is None
                       else np.asarray(labels, np.float32).reshape(n, n_labels)),
            "face_found": (np.ones(n, bool) if face_found is None
                           else np.asarray(face_found, bool).reshape(n)),
            "boxes": (np.full((n, 4), np.nan, np.float32) if boxes is None
                      else np.asarray(boxes, np.float32).reshape(n, 4)),
            "landmarks": (np.full((n, 5, 2), np.nan, np.float32) if landmarks is None
                          else np.asarray(landmarks, np.float32).reshape(n, 5, 2)),
        }
        for name, data in rows.items():
            self._pending[name].append(data)
        self._pending_rows += n
        self._n += n
        if self._pending_rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows (appends are buffered so that many tiny
        sequences, e.g. single images, cost one HDF5 write per batch)."""
        if not self._pending_rows:
            return
        start = self._n - self._pending_rows
        with self._writing():
            for name, parts in self._pending.items():
                dset = self._dsets[name]
                dset.resize(self._n, axis=0)
                dset[start:self._n] = np.concatenate(parts)
                parts.clear()
        self._pending_rows = 0

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """HDF5's write errors as an OSError naming the partial file, with the
        errno of the failed write (ENOSPC, EFBIG...) when HDF5 gives it."""
        try:
            yield
        except (OSError, RuntimeError) as err:
            code = err.errno if isinstance(err, OSError) and err.errno else None
            if code is None:
                found = re.search(r"errno = (\d+)", str(err))
                code = int(found.group(1)) if found else errno.EIO
            raise OSError(code, os.strerror(code), str(self.partial)) from err

    def end_sequence(self) -> None:
        if not self._open:
            raise RuntimeError("no sequence is open")
        self._open = False
        self._offsets.append(self._n)
        if self.audio is not None:
            self.audio.end_sequence()

    def commit(self) -> None:
        """Write the sequence index, close, and rename the file into place."""
        if self._open:
            self.end_sequence()
        self.flush()
        with self._writing():
            group = self._h5.create_group("sequences")
            # Handles kept, as the frames' (see _create), until the file is flushed.
            handles: list[Any] = [group, group.create_dataset(
                "offsets", data=np.asarray(self._offsets, np.int64))]
            handles.append(group.create_dataset(
                "fps", data=np.asarray(self._seq["fps"], np.float64)))
            for key in ("name", "source", "label_file", "metadata"):
                handles.append(group.create_dataset(
                    key, data=np.asarray(self._seq[key], dtype=object), dtype=_STR))
            if self.audio is not None:
                handles += self.audio.finish(self._dsets["timestamps"][:], self._offsets,
                                             self._seq["fps"])
            self._h5.attrs["complete"] = True
            self._h5.flush()  # a failed write fails here, the file still open (see abort)
            del handles
            self._h5.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        """Close and delete the partial file, whatever state a failed write left."""
        try:
            _close_discarding(self._h5)
        finally:
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> SequenceWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc_type is not None or self.partial.exists():
            self.abort()
        return False


def _close_discarding(h5: Any) -> None:  # an h5py.File
    """Close ``h5``, a file being thrown away, even after a failed write.

    HDF5 flushes its metadata on close. After a failed write (a full disk,
    a size limit) that flush fails too, the file stays open inside the
    library, and closing it again, or the interpreter's exit, crashes
    (segmentation fault). The file is discarded anyway, so its descriptor
    is first pointed at the null device: the flush goes nowhere and the
    file closes once, cleanly.
    """
    if not h5.id.valid:
        return
    try:
        fd = h5.id.get_vfd_handle()
    except (OSError, RuntimeError, ValueError):  # not a POSIX-file driver
        fd = None
    if fd is not None:
        _redirect_to_null(fd)
    try:
        h5.close()
    except RuntimeError:
        # A real full disk (ENOSPC) can leave HDF5's metadata cache in a
        # state its close refuses ("Can't decrement id ref count"): the
        # objects are closed one by one instead; the data goes nowhere.
        _close_each(h5)


def _close_each(h5: Any) -> None:  # an h5py.File
    """Close every HDF5 object still open in ``h5``'s file, then the file."""
    fid = h5.id
    for oid in h5py.h5f.get_obj_ids(fid, h5py.h5f.OBJ_LOCAL | h5py.h5f.OBJ_DATASET
                                    | h5py.h5f.OBJ_GROUP | h5py.h5f.OBJ_DATATYPE
                                    | h5py.h5f.OBJ_ATTR):
        while oid.valid:
            oid._close()
    while fid.valid:
        fid._close()


def _redirect_to_null(fd: int) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def is_complete(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a committed end2you-visual file (used to resume)."""
    try:
        with h5py.File(path, "r") as h5:
            return bool(h5.attrs.get("complete", False)) and "sequences" in h5
    except OSError:
        return False


def file_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a committed file holds: ``frames``, ``faces_found``, ``sequences``,
    ``fps`` (of its first sequence, None if it has none) and ``audio_found``
    (see :func:`end2you_visual.audio.audio_found`); the manifest's numbers
    for a file that a re-run skips."""
    with h5py.File(path, "r") as h5:
        fps = h5["sequences/fps"][:]
        return {"frames": int(h5["frames"].shape[0]),
                "faces_found": int(np.count_nonzero(h5["face_found"][:])),
                "sequences": int(len(h5["sequences/name"])),
                "fps": float(fps[0]) if len(fps) else None,
                "audio_found": audio_found(h5)}
