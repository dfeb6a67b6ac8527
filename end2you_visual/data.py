"""Reading HDF5 face-crop sequences: end2you-visual files and End2You's own.

:class:`SequenceFile` reads one file's index and serves windows of
consecutive frames; :class:`WindowDataset` turns a set of files into
fixed-length windows for training and evaluation (a PyTorch ``Dataset``).

Frames are returned as they are stored, uint8 (T, S, S, 3) RGB: moving uint8
to the GPU and converting there is the fast path (the model normalises).

End2You files (datasets ``visual`` (T, n, 3, H, W) float32 and ``labels``
(T, L)) are read as one sequence of T*n frames, each label row repeated for
its n frames; their pixel values (0-255, or 0-1 when the file's maximum is
at most 1) are converted to uint8. Their ``audio`` (T, samples), when
present, gives each of a step's n frames one n-th of its row.

Audio (``read(..., audio=True)``, ``WindowDataset(..., audio=True)``): each
frame's window of samples (:mod:`end2you_visual.audio`), opt-in.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence, Union, cast

import h5py
import numpy as np
import torch

from .audio import end2you_audio_windows, read_audio_windows, samples_per_frame
from .errors import InputError
from .files import files_in
from .hdf5 import FORMAT_NAME, SCHEMA_VERSION

# Files or folders (str or os.PathLike): one, or several.
Paths = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]


@dataclass(frozen=True)
class SequenceInfo:
    """Where one sequence lies in its file."""

    path: str
    index: int
    name: str
    start: int
    length: int
    fps: float
    source: str = ""
    label_file: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Clip:
    """Consecutive frames of one sequence and their per-frame rows."""

    frames: np.ndarray | None  # uint8 (T, S, S, 3); None when read with frames=False
    labels: np.ndarray       # float32 (T, L)
    timestamps: np.ndarray   # float64 (T,), seconds
    face_found: np.ndarray   # bool (T,)
    boxes: np.ndarray        # float32 (T, 4), NaN where unknown
    audio: np.ndarray | None = None  # float32 (T, samples per frame) when read with audio=True
    audio_found: bool | None = None  # False: the source had no audio track (zeros in ``audio``)
    landmarks: np.ndarray | None = None  # float32 (T, 5, 2), NaN where unknown (files without them too)


def _decode(values: Iterable[object]) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class SequenceFile:
    """One HDF5 file of face-crop sequences, opened lazily per process.

    Args:
        path: an end2you-visual file (``docs/format.md``) or an End2You file.
        end2you_fps: frame rate to assume for End2You files, which do not
            store one (timestamps are then frame index / fps; NaN fps and
            frame-index timestamps when not given).

    Attributes: ``path``, ``format`` ("end2you-visual" or "end2you"),
    ``label_names``, ``label_kind``, ``frame_size``, ``sequences``
    (list of :class:`SequenceInfo`), ``n_frames``.
    """

    format: str
    label_names: list[str]
    label_kind: str
    frame_size: int
    settings: dict[str, Any]
    audio_rate: float | None
    sequences: list[SequenceInfo]

    def __init__(self, path: str | os.PathLike[str], end2you_fps: float | None = None) -> None:
        self.path = Path(path)
        self._h5: Any = None  # an h5py.File, opened by _file
        self._pid: int | None = None
        self._end2you_cache: tuple[np.ndarray, np.ndarray] | None = None
        self.end2you_fps = end2you_fps
        if not self.path.is_file():
            raise InputError(self.path, "no such HDF5 file")
        try:
            with h5py.File(self.path, "r") as h5:
                self._read_index(h5)
        except OSError as err:
            raise InputError(self.path, f"not a readable HDF5 file ({err})") from err

    def _read_index(self, h5: Any) -> None:
        if h5.attrs.get("format") == FORMAT_NAME:
            self._read_index_native(h5)
        elif "visual" in h5 and "labels" in h5:
            self._read_index_end2you(h5)
        else:
            raise InputError(self.path, "neither an end2you-visual file (attribute "
                             "format='end2you-visual') nor an End2You file "
                             "(datasets 'visual' and 'labels')")

    def _read_index_native(self, h5: Any) -> None:
        version = int(h5.attrs.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise InputError(self.path, f"schema version {version} is newer than this "
                             f"reader's ({SCHEMA_VERSION}): upgrade end2you-visual")
        if not h5.attrs.get("complete", False) or "sequences" not in h5:
            raise InputError(self.path, "incomplete file (an interrupted write): "
                             "generate it again")
        self.format = FORMAT_NAME
        self.label_names = json.loads(h5.attrs["label_names"])
        self.label_kind = str(h5.attrs.get("label_kind", "none"))
        self.frame_size = int(h5.attrs["frame_size"])
        self.settings = json.loads(h5.attrs.get("settings", "{}"))
        self.audio_rate = int(h5["audio"].attrs["rate"]) if "audio" in h5 else None
        seq = h5["sequences"]
        offsets = seq["offsets"][:]
        names, sources = _decode(seq["name"][:]), _decode(seq["source"][:])
        label_files, metas = _decode(seq["label_file"][:]), _decode(seq["metadata"][:])
        fps = seq["fps"][:]
        self.sequences = [
            SequenceInfo(str(self.path), q, names[q], int(offsets[q]),
                         int(offsets[q + 1] - offsets[q]), float(fps[q]), sources[q],
                         label_files[q], json.loads(metas[q]))
            for q in range(len(names))
        ]

    def _read_index_end2you(self, h5: Any) -> None:
        visual, labels = h5["visual"], h5["labels"]
        if visual.ndim != 5 or visual.shape[2] != 3 or visual.shape[3] != visual.shape[4]:
            raise InputError(self.path, f"End2You 'visual' must be (T, n, 3, H, H), "
                             f"got {visual.shape}")
        steps, per_step = visual.shape[:2]
        if labels.shape[0] != steps:
            raise InputError(self.path, f"End2You file has {steps} frame groups but "
                             f"{labels.shape[0]} label rows")
        names = h5.attrs.get("label_names")
        n_labels = labels.shape[1] if labels.ndim == 2 else 1
        self.format = "end2you"
        self.label_names = (_decode(np.atleast_1d(names)) if names is not None
                            else end2you_label_names(n_labels))
        self.label_kind = "continuous"
        self.frame_size = int(visual.shape[3])
        self.settings = {}
        if "audio" in h5 and (h5["audio"].ndim != 2 or h5["audio"].shape[0] != steps):
            raise InputError(self.path, f"End2You 'audio' must be ({steps}, samples), "
                             f"got {h5['audio'].shape}")
        # End2You stores no audio rate: samples per label step x steps per second.
        self.audio_rate = (h5["audio"].shape[1] / per_step * float(self.end2you_fps)
                           if "audio" in h5 and self.end2you_fps else
                           float("nan") if "audio" in h5 else None)
        fps = float(self.end2you_fps) if self.end2you_fps else float("nan")
        source = h5.attrs.get("data_file", "")
        self.sequences = [SequenceInfo(str(self.path), 0, self.path.stem, 0,
                                       steps * per_step, fps, str(source),
                                       str(h5.attrs.get("label_file", "")),
                                       {"frames_per_label": int(per_step)})]

    @property
    def n_frames(self) -> int:
        return sum(s.length for s in self.sequences)

    def _file(self) -> Any:
        # h5py handles must not cross a fork: reopen in each DataLoader worker.
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    @property
    def has_audio(self) -> bool:
        """True when the file stores audio (``generate --audio``, or End2You's ``audio``)."""
        return self.audio_rate is not None

    def read(self, seq: int | SequenceInfo = 0, start: int = 0, stop: int | None = None,
             frames: bool = True, audio: bool = False) -> Clip:
        """Rows ``start:stop`` of sequence ``seq`` (an index or a SequenceInfo).

        ``frames=False`` skips the pixels (labels and masks only, cheap).
        ``audio=True`` also fills the Clip's ``audio`` windows (T, samples per
        frame) and ``audio_found`` (:mod:`end2you_visual.audio`); an
        InputError when the file has no audio.
        """
        clip = self._read(seq, start, stop, frames)
        if audio:
            info = seq if isinstance(seq, SequenceInfo) else self.sequences[seq]
            clip.audio, clip.audio_found = self._read_audio(info, start, start + len(
                clip.timestamps))
        return clip

    def audio_samples(self, seq: int | SequenceInfo = 0) -> int | None:
        """Samples in each audio window of sequence ``seq`` (None without audio)."""
        info = seq if isinstance(seq, SequenceInfo) else self.sequences[seq]
        if self.audio_rate is None:  # not has_audio
            return None
        if self.format == "end2you":
            return int(self._file()["audio"].shape[1]) // int(
                info.metadata.get("frames_per_label", 1))
        return samples_per_frame(info.fps, self.audio_rate)

    def _read_audio(self, info: SequenceInfo, start: int, stop: int
                    ) -> tuple[np.ndarray, bool]:
        if not self.has_audio:
            raise InputError(self.path, "holds no audio (generate it with --audio)")
        h5 = self._file()
        if self.format == "end2you":
            per_step = int(info.metadata.get("frames_per_label", 1))
            return end2you_audio_windows(h5["audio"], per_step, start, stop), True
        return read_audio_windows(h5, info.index, info.start + start, info.start + stop,
                                  info.fps)

    def _read(self, seq: int | SequenceInfo, start: int, stop: int | None, frames: bool) -> Clip:
        info = seq if isinstance(seq, SequenceInfo) else self.sequences[seq]
        stop = info.length if stop is None else min(stop, info.length)
        if not 0 <= start <= stop:
            raise IndexError(f"{self.path}: rows {start}:{stop} outside sequence "
                             f"{info.name!r} of length {info.length}")
        if self.format == "end2you":
            return self._read_end2you(info, start, stop, frames)
        h5 = self._file()
        a, b = info.start + start, info.start + stop
        return Clip(
            frames=h5["frames"][a:b] if frames else None,
            labels=h5["labels"][a:b],
            timestamps=h5["timestamps"][a:b],
            face_found=h5["face_found"][a:b],
            boxes=h5["boxes"][a:b],
            landmarks=(h5["landmarks"][a:b] if "landmarks" in h5
                       else np.full((b - a, 5, 2), np.nan, np.float32)),
        )

    def _read_end2you(self, info: SequenceInfo, start: int, stop: int, frames: bool) -> Clip:
        if self._end2you_cache is None:
            h5 = self._file()
            visual = h5["visual"][:]
            steps, per_step = visual.shape[:2]
            scale = 255.0 if visual.size and float(visual.max()) <= 1.0 else 1.0
            pixels = np.clip(visual * scale, 0, 255).round().astype(np.uint8)
            pixels = pixels.reshape(steps * per_step, 3, *visual.shape[3:]).transpose(0, 2, 3, 1)
            labels = np.asarray(h5["labels"][:], np.float32).reshape(steps, -1)
            self._end2you_cache = (np.ascontiguousarray(pixels),
                                   np.repeat(labels, per_step, axis=0))
        pixels, labels = self._end2you_cache
        index = np.arange(start, stop, dtype=np.float64)
        times = index / info.fps if np.isfinite(info.fps) else index
        return Clip(frames=pixels[start:stop] if frames else None,
                    labels=labels[start:stop], timestamps=times,
                    face_found=np.ones(stop - start, bool),
                    boxes=np.full((stop - start, 4), np.nan, np.float32),
                    landmarks=np.full((stop - start, 5, 2), np.nan, np.float32))


def find_files(paths: Paths) -> list[Path]:
    """Expand files and folders (all ``*.h5`` / ``*.hdf5`` inside, sorted) to paths.

    Raises InputError naming the path(s) looked in when none is found.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += files_in(path, (".h5", ".hdf5"))
        else:
            found.append(path)
    if not found:
        where = ", ".join(str(p) for p in paths) if paths else None
        problem = ("no HDF5 files (*.h5, *.hdf5) found in " +
                   ("this folder" if len(paths) == 1 else "these folders")
                   if paths else "no HDF5 files given")
        raise InputError(where, problem)
    return found


def open_files(paths: Paths, end2you_fps: float | None = None) -> list[SequenceFile]:
    """Open every HDF5 file in ``paths`` (files or folders) as SequenceFiles."""
    return [SequenceFile(p, end2you_fps=end2you_fps) for p in find_files(paths)]


def end2you_label_names(n: int) -> list[str]:
    """The names of the ``n`` label columns of an End2You file that stores
    none: ``label_0``, ``label_1``..."""
    return [f"label_{i}" for i in range(n)]


def name_labels(files: Sequence[SequenceFile], names: Iterable[str],
                option: str = "--label-names") -> Sequence[SequenceFile]:
    """Give the label columns of End2You files, which name them ``label_0``,
    ``label_1``..., the names ``names`` (in column order), in place.

    A file that names its labels (end2you-visual files; End2You files with a
    ``label_names`` attribute) keeps them: they must be ``names``, so that
    no column is silently renamed. Unlabelled files are left as they are.

    Raises:
        InputError: empty or repeated ``names`` (naming ``option``), a file
            with another number of label columns, a file naming its labels
            otherwise.
    """
    names = [str(n).strip() for n in names]
    if not names or not all(names):
        raise InputError(option, f"give one name per label column, got {names}")
    if len(set(names)) != len(names):
        raise InputError(option, f"names repeat: {names}")
    for f in files:
        if f.label_kind == "none" or not f.label_names:
            continue
        if len(f.label_names) != len(names):
            raise InputError(f.path, f"has {len(f.label_names)} label columns "
                                     f"{f.label_names}, but {option} gives {len(names)}: "
                                     f"{names}")
        if f.format == "end2you" and f.label_names == end2you_label_names(len(names)):
            f.label_names = list(names)
        elif f.label_names != names:
            raise InputError(f.path, f"names its labels {f.label_names}; {option} names "
                                     "End2You's unnamed label_0, label_1... columns: leave it "
                                     "out, or give these names")
    return files


def check_label_names(files: Sequence[SequenceFile],
                      expected: Iterable[str] | None = None) -> list[str]:
    """The label names shared by ``files``; an InputError names a file that differs."""
    names = list(expected) if expected is not None else files[0].label_names
    for f in files:
        if f.label_names != names:
            missing = [n for n in names if n not in f.label_names]
            raise InputError(f.path, f"label names {f.label_names} do not match "
                             f"{names}" + (f" (missing {missing})" if missing else ""))
    return names


class WindowDataset(torch.utils.data.Dataset):
    """Fixed-length windows of consecutive frames over a set of HDF5 files.

    Args:
        files: paths, folders, or :class:`SequenceFile` objects.
        window: frames per window (the paper's 150); ``None`` = whole sequences
            (then use batch size 1 or a padding collate).
        stride: step between window starts (default ``window``: no overlap).
        label_names: the expected label names (checked against every file);
            default: those of the first file.
        sequence_filter: optional ``f(SequenceInfo) -> bool`` to select
            sequences (e.g. by ``metadata['split']``).
        audio: also return each frame's audio window (every file must hold
            audio: ``generate --audio``, or an End2You audiovisual file).

    Each item is a dict (W: ``window``, or the sequence's length when
    ``window`` is None; S: the frame size; L: the labels); docs/format.md
    lists the same keys:

    * ``frames``: uint8 tensor (W, S, S, 3), RGB;
    * ``labels``: float32 tensor (W, L), in ``label_names`` order;
    * ``mask``: bool tensor (W,), False on padding after a sequence's end;
    * ``face_found``: bool tensor (W,);
    * ``sequence``: int, the index of the window's sequence in
      :attr:`sequences` (``(file index, SequenceInfo)``);
    * ``start``: int, the window's first frame within its sequence;
    * with ``audio`` only: ``audio``, float32 tensor (W, A) (A: the longest
      window of the sequences, shorter ones zero-padded), and
      ``audio_found``, bool tensor (W,).

    Windows shorter than ``window`` (a sequence's tail) are zero-padded.
    (A DataLoader's default collate makes ``sequence`` and ``start`` int64
    tensors of shape (B,).)
    """

    def __init__(self, files: Paths | Sequence[SequenceFile], window: int | None = 150,
                 stride: int | None = None, label_names: Sequence[str] | None = None,
                 sequence_filter: Callable[[SequenceInfo], bool] | None = None,
                 audio: bool = False) -> None:
        if isinstance(files, (list, tuple)) and files and all(
                isinstance(f, SequenceFile) for f in files):
            opened = list(cast("Sequence[SequenceFile]", files))
        else:
            opened = open_files(cast(Paths, files))
        files = opened
        self.files = files
        self.label_names = check_label_names(files, label_names)
        self.window = window
        self.stride = stride or window
        self.sequences = [(fi, info) for fi, f in enumerate(files) for info in f.sequences
                          if info.length > 0 and (sequence_filter is None or sequence_filter(info))]
        self.windows = [(q, start) for q, (_, info) in enumerate(self.sequences)
                        for start in self._starts(info.length)]
        self.audio = bool(audio)
        if self.audio:
            require_audio(files)
        # Every file holds audio (require_audio): audio_samples is an int.
        self.audio_samples = max((cast(int, files[fi].audio_samples(info))
                                  for fi, info in self.sequences),
                                 default=0) if self.audio else None

    def _starts(self, length: int) -> list[int]:
        if self.window is None or length <= self.window:
            return [0]
        assert self.stride is not None  # stride or window: an int here
        starts = list(range(0, length - self.window + 1, self.stride))
        if starts[-1] + self.window < length:
            starts.append(length - self.window)  # cover the tail without padding
        return starts

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def frame_size(self) -> int:
        return self.files[0].frame_size

    def locate(self, index: int) -> tuple[SequenceFile, SequenceInfo, int, int]:
        """(SequenceFile, SequenceInfo, start, stop) of window ``index``;
        ``stop`` may pass the sequence's end (the window is then padded)."""
        q, start = self.windows[index]
        fi, info = self.sequences[q]
        stop = info.length if self.window is None else start + self.window
        return self.files[fi], info, start, stop

    def window_labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels and valid mask of window ``index`` without reading pixels."""
        file, info, start, stop = self.locate(index)
        clip = file.read(info, start, stop, frames=False)
        return clip.labels, clip.face_found

    def __getitem__(self, index: int) -> dict[str, Any]:
        file, info, start, stop = self.locate(index)
        clip = file.read(info, start, stop, audio=self.audio)
        assert clip.frames is not None  # read with its frames
        n = len(clip.frames)
        size = self.window if self.window is not None else n
        item: dict[str, np.ndarray] = {
            "frames": np.zeros((size,) + clip.frames.shape[1:], np.uint8),
            "labels": np.zeros((size, clip.labels.shape[1]), np.float32),
            "mask": np.zeros(size, bool),
            "face_found": np.zeros(size, bool),
        }
        item["frames"][:n] = clip.frames
        item["labels"][:n] = clip.labels
        item["mask"][:n] = True
        item["face_found"][:n] = clip.face_found
        if self.audio:
            assert clip.audio is not None and self.audio_samples is not None  # with audio
            item["audio"] = np.zeros((size, self.audio_samples), np.float32)
            item["audio"][:n, :clip.audio.shape[1]] = clip.audio
            item["audio_found"] = np.zeros(size, bool)
            item["audio_found"][:n] = clip.audio_found
        out: dict[str, Any] = {k: torch.from_numpy(v) for k, v in item.items()}
        out["sequence"], out["start"] = self.windows[index]
        return out


def require_audio(files: Iterable[SequenceFile], needed_by: str | None = None) -> None:
    """An InputError naming the first of ``files`` (SequenceFiles) that holds
    no audio; ``needed_by`` says what needs it ("this model")."""
    for f in files:
        if not f.has_audio:
            why = f", which {needed_by} needs" if needed_by else ""
            raise InputError(f.path, f"holds no audio{why} (generate it with --audio)")


def audio_window(sequences: Sequence[tuple[SequenceFile, SequenceInfo]]) -> int:
    """Samples per audio window over ``sequences`` ``[(SequenceFile,
    SequenceInfo)]`` (the longest); an InputError naming a file without audio."""
    require_audio([seqfile for seqfile, _ in sequences], "this model")
    return max(cast(int, seqfile.audio_samples(info)) for seqfile, info in sequences)


class _Rows(Protocol):
    """Rows ``start:stop`` of sequence ``seq`` (an inference step's item)."""

    @property
    def seq(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def stop(self) -> int: ...


def read_step_audio(sequences: Sequence[tuple[SequenceFile, SequenceInfo]],
                    items: Sequence[_Rows], t: int, samples: int) -> torch.Tensor:
    """The audio windows of ``items`` (each with ``seq``, ``start``, ``stop``:
    frames of ``sequences[seq]``) as one float32 tensor (len(items), t,
    samples), zero-padded after a sequence's end and after a shorter window."""
    x = torch.zeros((len(items), t, samples), dtype=torch.float32)
    for i, item in enumerate(items):
        seqfile, info = sequences[item.seq]
        clip = seqfile.read(info, item.start, item.stop, frames=False, audio=True)
        assert clip.audio is not None  # read with audio
        x[i, :len(clip.audio), :clip.audio.shape[1]] = torch.from_numpy(clip.audio)
    return x
