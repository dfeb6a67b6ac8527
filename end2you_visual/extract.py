"""Per-frame embeddings of a visual model: ``e2y-visual extract``.

The facial extractor as a feature extractor for other tasks and for fusion
with other modalities: for every frame of a generated HDF5 file (or of a
video, through the face pipeline) the model's CNN embedding
(``model.features``, (T, F)) is written beside the frame's timestamp, its
``face_found`` mask and its labels, aligned row for row with the input.
A frame without a face gets a NaN row: no embedding is invented for it.

Outputs, one per input, in ``out_dir``:

* ``<stem>.features.h5`` (the default; ``docs/format.md``): ``features``,
  ``timestamps``, ``face_found``, ``labels`` (when the input has labels) and
  the sequence index, with the model's name, checksum and config as
  attributes;
* ``<stem>.features.npy``: the (N, F) array alone (NaN rows: no face);
* ``<stem>.features.csv``: ``sequence, timestamp, face_found, <labels>,
  f0 ... f{F-1}``, empty cells where no face was found.

Each format has its writer (:data:`WRITERS`, keyed by the format names of
:data:`~end2you_visual.choices.EXTRACT_FORMATS`). Frames are read, embedded
and written chunk by chunk (``batch_size`` frames): memory does not grow
with the length of the input. Outputs are written atomically
(:mod:`end2you_visual.files`) and never replaced unless ``overwrite``. (A
2D CNN embeds each frame alone, so the chunking changes nothing; an I3D CNN
looks one frame across each chunk's edge, so its embeddings there are close
to, not equal to, a whole-clip pass.)
"""
import csv
import json
import os
import shutil
import tempfile
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional,
                    Sequence, Tuple, Type, Union)

import h5py
import numpy as np
import torch

from . import __version__
from .choices import EXTRACT_FORMATS, FEATURE_DTYPES
from .errors import InputError
from .face_settings import FaceSettings
from .files import atomic_file, atomic_path, check_name_length, check_writable
from .framing import Framing, file_framing, model_face_settings, resolve_face_settings
from .ranges import check_number
from .zoo import ResolvedModel, model_checksum, resolve_model

if TYPE_CHECKING:
    from .faces import FacePipeline
    from .video import VideoInfo

__all__ = ["FEATURES_FORMAT", "FORMATS", "DTYPES", "WRITERS", "ExtractResult",
           "extract_features", "output_path", "model_checksum"]

FEATURES_FORMAT = "end2you-visual-features"
FEATURES_VERSION = 1
DTYPES = FEATURE_DTYPES
_HDF5_SUFFIXES = (".h5", ".hdf5")
_STR = h5py.string_dtype(encoding="utf-8")
PathLike = Union[str, "os.PathLike[str]"]
# What the chunk generators yield: first the input's description (a dict:
# label_names, sequences), then (features, timestamps, found,
# labels, q) tuples of numpy arrays and the sequence's index.
_Stream = Iterator[Any]


@dataclass
class ExtractResult:
    """One input's extraction: where it went and what it holds
    (``face_settings``: the face pipeline's settings for a video, as a dict;
    None for an HDF5 input)."""

    input: str
    output: str
    frames: int
    faces_found: int
    features: int
    seconds: float
    face_settings: Optional[Dict[str, Any]] = None


def output_path(out_dir: PathLike, source: PathLike, fmt: str = "hdf5") -> Path:
    """``out_dir / <stem of source> + FORMATS[fmt]``."""
    return Path(out_dir) / (Path(source).stem + FORMATS[fmt])


def _visual(resolved: ResolvedModel, device: torch.device) -> Any:
    """The model's visual branch (the model itself, or an audiovisual
    model's), in eval mode on ``device``; InputError for a model that sees
    no face."""
    from .models import VisualModel

    visual = getattr(resolved.base, "visual", resolved.base)
    if not isinstance(visual, VisualModel):
        raise InputError(_name(resolved), f"extract needs a visual or audiovisual model, not "
                                          f"{type(resolved.base).__name__}")
    return visual.to(device).eval()


def _name(resolved: ResolvedModel) -> str:
    """The model's name in the outputs: the registered name or checkpoint
    path as given, else ``"<arch> (in memory)"``."""
    if resolved.source is not None:
        return resolved.source
    return f"{resolved.config.get('arch', 'unnamed')} (in memory)"


def extract_features(inputs: Union[PathLike, Iterable[PathLike]],
                     model: Union[PathLike, torch.nn.Module], out_dir: PathLike,
                     fmt: str = "hdf5", dtype: str = "float16", batch_size: int = 64,
                     device: Union[str, torch.device] = "auto", overwrite: bool = False,
                     progress: bool = False, announce: Optional[Callable[[str], object]] = None,
                     **faces: Any) -> List[ExtractResult]:
    """Write the per-frame embeddings of ``model`` for each input.

    Args:
        inputs: generated HDF5 files (``*.h5``, ``*.hdf5``; End2You's too),
            videos, or folders of either.
        model: a registered name, a checkpoint path, or a model (a
            VisualModel; an AudioVisualModel gives its visual branch's
            embeddings).
        out_dir: output folder (``<stem>.features.h5|npy|csv`` per input).
        fmt: ``"hdf5"``, ``"npy"`` or ``"csv"``.
        dtype: ``"float16"`` or ``"float32"`` (HDF5 and npy; CSV writes the
            values of that precision as text).
        batch_size: frames embedded together (memory is bounded by it).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        overwrite: replace existing outputs (else refused before any work).
        progress: a progress bar per input.
        announce: a callable (e.g. ``print``) given one line when video
            inputs are cropped with the model's framing (or with a given
            margin or crop kind that differs from it).
        **faces: face-pipeline settings for video inputs
            (:class:`~end2you_visual.faces.FaceSettings`; the crop size is
            the model's input size; ``margin`` / ``crop`` None or not
            given: the model's framing,
            :func:`~end2you_visual.framing.model_framing`, else 0.2 /
            ``"box"``).

    Returns:
        A list of :class:`ExtractResult`.

    Raises:
        InputError: unknown format or dtype, a batch size out of range, an
            existing output (without ``overwrite``), an output name longer
            than the file system takes, an unreadable input or model, an
            output folder that cannot be written.
    """
    from .devices import resolve_device
    from .files import expand_paths

    if fmt not in WRITERS:
        raise InputError("--format", f"must be one of {list(WRITERS)}, got {fmt!r}")
    if dtype not in DTYPES:
        raise InputError("--dtype", f"must be one of {list(DTYPES)}, got {dtype!r}")
    batch_size = int(check_number("--batch-size", batch_size, 1, integer=True))
    from .inputs import VIDEO_EXTENSIONS

    faces = {**faces, "batch_size": batch_size}
    resolve_face_settings(faces, None)  # settings out of range: refused before any work
    sources = expand_paths(inputs, _HDF5_SUFFIXES + tuple(VIDEO_EXTENSIONS),
                           "HDF5 or video files")
    check_writable(out_dir, "--out")
    targets = [output_path(out_dir, s, fmt) for s in sources]
    _check_targets(sources, targets, overwrite)
    device = resolve_device(device)
    resolved = resolve_model(model, device)
    visual, framing = _visual(resolved, device), resolved.framing
    videos = any(not _is_hdf5(s) for s in sources)
    settings = model_face_settings(faces, framing, visual.config["input_size"], device,
                                   announce if videos else None)
    kind, checksum = resolved.checksum()
    attrs = {"format": FEATURES_FORMAT, "schema_version": FEATURES_VERSION,
             "model_name": _name(resolved), "model_checksum": checksum,
             "model_checksum_of": kind,
             "model_config": json.dumps(resolved.config, default=str), "feature_dtype": dtype,
             "num_features": int(visual.num_features), "created_by": f"end2you-visual "
                                                                     f"{__version__}"}
    results = []
    for source, target in zip(sources, targets):
        started = time.perf_counter()
        used: Optional[Dict[str, Any]]
        if _is_hdf5(source):
            stream, used = _hdf5_chunks(source, visual, batch_size, device, framing), None
        else:
            chunks = _people_chunks if settings.faces == "all" else _video_chunks
            stream = chunks(source, visual, device, settings)
            used = settings.face_settings()  # what the pipeline ran with
        meta = next(stream)
        with WRITERS[fmt](target, dtype, int(visual.num_features), meta,
                          {**attrs, "source": str(source),
                           **({} if used is None else {"face_settings": json.dumps(used)})}
                          ) as sink:
            for chunk in _bar(stream, source, progress):
                sink.append(*chunk)
        results.append(ExtractResult(str(source), str(target), sink.rows, sink.faces,
                                     int(visual.num_features),
                                     time.perf_counter() - started, used))
    return results


def _is_hdf5(source: PathLike) -> bool:
    return Path(source).suffix.lower() in _HDF5_SUFFIXES


def _check_targets(sources: Sequence[Path], targets: Sequence[Path], overwrite: bool) -> None:
    seen: Dict[Path, Path] = {}
    for source, target in zip(sources, targets):
        check_name_length(target, source, Path(source).stem)
        if target in seen:
            raise InputError(source, f"gives the same output {target} as {seen[target]}; "
                                     "extract them into different folders")
        seen[target] = source
        if Path(target).exists() and not overwrite:
            raise InputError(target, "exists (use --overwrite to replace it)")


def _bar(stream: _Stream, source: PathLike, progress: bool) -> Iterable[Any]:
    if not progress:
        return stream
    from tqdm.auto import tqdm

    return tqdm(stream, desc=Path(source).name, unit="batch", leave=False)


@torch.inference_mode()
def _embed(visual: Any, crops: np.ndarray, found: np.ndarray, device: torch.device
           ) -> np.ndarray:
    """(n, F) float32 embeddings of uint8 crops; NaN rows where ``found`` is False."""
    out = np.full((len(crops), visual.num_features), np.nan, np.float32)
    rows = np.arange(len(crops)) if visual.is_3d else np.flatnonzero(found)
    if len(rows):
        frames = torch.from_numpy(np.ascontiguousarray(crops[rows])).to(device)
        out[rows] = visual.features(frames[None])[0].float().cpu().numpy()
    out[~np.asarray(found, bool)] = np.nan
    return out


def _hdf5_chunks(source: PathLike, visual: Any, batch_size: int, device: torch.device,
                 framing: Optional[Framing]) -> _Stream:
    """First the input's description, then (features, timestamps, found, labels, q) chunks."""
    from .data import SequenceFile

    file = SequenceFile(source)
    size = visual.config.get("input_size")
    if size and file.frame_size != size:
        warnings.warn(f"{source}: {file.frame_size} px crops, the model was trained on "
                      f"{size} px", stacklevel=3)
    cut = file_framing(file)
    if framing is not None and cut is not None and not framing.same_crops(cut):
        warnings.warn(f"{source}: crops of {cut.describe()}; the model's framing is "
                      f"{framing.describe()}", stacklevel=3)
    yield {"label_names": file.label_names,
           "sequences": [(s.name, s.fps, s.length) for s in file.sequences]}
    try:
        for q, info in enumerate(file.sequences):
            for start in range(0, info.length, batch_size):
                clip = file.read(info, start, start + batch_size)
                assert clip.frames is not None  # read with its frames
                yield (_embed(visual, clip.frames, clip.face_found, device), clip.timestamps,
                       clip.face_found, clip.labels, q)
    finally:
        file.close()


def _video_pipeline(source: PathLike, visual: Any, device: torch.device,
                    settings: FaceSettings) -> "Tuple[VideoInfo, FacePipeline]":
    """The video's probe and the face pipeline cutting crops of the model's
    input size for it (its frame size checked first: before MTCNN loads and
    before any decoding)."""
    from .faces import FacePipeline
    from .video import probe_video

    info = probe_video(str(source))
    settings.check_frame_size(info.width, info.height, source)
    return info, FacePipeline.from_settings(settings, info.fps,
                                            size=int(visual.config["input_size"]),
                                            device=device)


def _video_chunks(source: PathLike, visual: Any, device: torch.device,
                  settings: FaceSettings) -> _Stream:
    from .video import iter_frame_batches

    info, pipeline = _video_pipeline(source, visual, device, settings)
    yield {"label_names": [],
           "sequences": [(Path(source).stem, info.fps, None)]}
    for start, frames in iter_frame_batches(str(source), settings.batch_size):
        found = pipeline.process(frames)
        times = (start + np.arange(len(frames))) / info.fps
        yield (_embed(visual, found.crops, found.found, device), times, found.found.copy(),
               np.zeros((len(frames), 0), np.float32), 0)


def _people_chunks(source: PathLike, visual: Any, device: torch.device,
                   settings: FaceSettings) -> _Stream:
    """:func:`_video_chunks` for every person (``faces="all"``): one sequence
    per person kept, ``<stem>_person<id>``, every frame of the video (NaN
    rows where the person is not in view). The embeddings are held until
    the video's end (the people are known only then): (frames x features)
    float32 per person."""
    from .people import PersonSeries
    from .video import iter_frame_batches

    info, pipeline = _video_pipeline(source, visual, device, settings)  # settings: faces="all"
    series, done = PersonSeries(visual.num_features), 0
    for _, frames in iter_frame_batches(str(source), settings.batch_size):
        for pid, faces in pipeline.track(frames).items():
            series.append(pid, done, _embed(visual, faces.crops, faces.found, device),
                          faces.found)
        done += len(frames)
    people = pipeline.people()
    stem = Path(source).stem
    yield {"label_names": [],
           "sequences": [(f"{stem}_person{p.id}", info.fps, done) for p in people]}
    times = np.arange(done) / info.fps
    for q, person in enumerate(people):
        yield (series.values(person.id), times, series.found(person.id),
               np.zeros((done, 0), np.float32), q)


class _Writer:
    """One output being written: ``with Writer(path, ...) as out:``, then
    :meth:`append` per chunk. The file is written through
    :mod:`end2you_visual.files` (a temporary file beside ``path``): it
    appears, complete, when the block ends, and an error leaves nothing.
    A subclass per format (:data:`WRITERS`) opens its file (:meth:`_open`),
    writes a chunk's rows (:meth:`_write`) and what follows them
    (:meth:`_finish`)."""

    suffix = ""  # the output's ending, FORMATS[format]

    def __init__(self, path: PathLike, dtype: str, n_features: int, meta: Dict[str, Any],
                 attrs: Dict[str, Any]) -> None:
        self.path, self.dtype = Path(path), np.dtype(dtype)
        self.n_features, self.meta, self.attrs = n_features, meta, attrs
        self.label_names = list(meta["label_names"])
        self.rows = self.faces = 0
        self.offsets = [0] * (len(meta["sequences"]) + 1)
        self._stack = ExitStack()

    def __enter__(self) -> "_Writer":
        with ExitStack() as stack:  # a failed opening leaves nothing behind
            self._open(stack)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None:  # closed and removed
            return bool(self._stack.__exit__(exc_type, exc, tb))
        with self._stack:  # completed, closed and renamed into place
            self._finish()
        return False

    def append(self, features: np.ndarray, timestamps: np.ndarray, found: np.ndarray,
               labels: np.ndarray, q: int) -> None:
        """Rows of sequence ``q``: features (n, F), their timestamps (n,),
        face_found (n,) and labels (n, labels)."""
        n = len(features)
        self._write(features.astype(self.dtype), timestamps, found, labels, q)
        self.rows += n
        self.faces += int(np.count_nonzero(found))
        self.offsets[q + 1] = self.rows
        for later in range(q + 2, len(self.offsets)):
            self.offsets[later] = self.rows

    def _open(self, stack: ExitStack) -> None:
        raise NotImplementedError

    def _write(self, values: np.ndarray, timestamps: np.ndarray, found: np.ndarray,
               labels: np.ndarray, q: int) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass


class _Hdf5Writer(_Writer):
    """``features``, ``timestamps``, ``face_found``, ``labels``, the
    ``sequences`` group and the attributes (``docs/format.md``)."""

    suffix = ".features.h5"

    def _open(self, stack: ExitStack) -> None:
        self.h5 = stack.enter_context(h5py.File(stack.enter_context(atomic_path(self.path)),
                                                "w"))
        f = self.n_features
        self.dsets = {
            "features": self.h5.create_dataset("features", (0, f), self.dtype,
                                               maxshape=(None, f), chunks=(256, f)),
            "timestamps": self.h5.create_dataset("timestamps", (0,), np.float64,
                                                 maxshape=(None,), chunks=(4096,)),
            "face_found": self.h5.create_dataset("face_found", (0,), bool,
                                                 maxshape=(None,), chunks=(4096,)),
        }
        if self.label_names:
            n = len(self.label_names)
            self.dsets["labels"] = self.h5.create_dataset(
                "labels", (0, n), np.float32, maxshape=(None, n), chunks=(4096, n))

    def _write(self, values: np.ndarray, timestamps: np.ndarray, found: np.ndarray,
               labels: np.ndarray, q: int) -> None:
        for key, data in (("features", values), ("timestamps", timestamps),
                          ("face_found", found), ("labels", labels)):
            if key in self.dsets:
                dset = self.dsets[key]
                dset.resize(self.rows + len(values), axis=0)
                dset[self.rows:] = data

    def _finish(self) -> None:
        seqs = self.meta["sequences"]
        group = self.h5.create_group("sequences")
        group.create_dataset("offsets", data=np.asarray(self.offsets, np.int64))
        group.create_dataset("name", data=np.asarray([s[0] for s in seqs], dtype=object),
                             dtype=_STR)
        group.create_dataset("fps", data=np.asarray([s[1] for s in seqs], np.float64))
        self.h5.attrs.update({**self.attrs, "label_names": json.dumps(self.label_names)})


class _NpyWriter(_Writer):
    """The (N, F) array alone; its rows wait in a scratch file beside the
    output until their count, which the header states, is known."""

    suffix = ".features.npy"

    def _open(self, stack: ExitStack) -> None:
        self.out = stack.enter_context(atomic_file(self.path, "wb"))
        self.raw = stack.enter_context(tempfile.TemporaryFile(dir=self.path.parent))

    def _write(self, values: np.ndarray, timestamps: np.ndarray, found: np.ndarray,
               labels: np.ndarray, q: int) -> None:
        self.raw.write(np.ascontiguousarray(values).tobytes())

    def _finish(self) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows, self.n_features)}
        np.lib.format.write_array_header_2_0(self.out, header)
        self.raw.seek(0)
        shutil.copyfileobj(self.raw, self.out, 1 << 20)


class _CsvWriter(_Writer):
    """``sequence, timestamp, face_found, <labels>, f0 ... f{F-1}``, one row
    per frame; empty feature cells where no face was found."""

    suffix = ".features.csv"

    def _open(self, stack: ExitStack) -> None:
        handle = stack.enter_context(atomic_file(self.path, "w", newline="", encoding="utf-8"))
        self.writer = csv.writer(handle)
        self.writer.writerow(["sequence", "timestamp", "face_found", *self.label_names,
                              *(f"f{i}" for i in range(self.n_features))])

    def _write(self, values: np.ndarray, timestamps: np.ndarray, found: np.ndarray,
               labels: np.ndarray, q: int) -> None:
        name = self.meta["sequences"][q][0]
        for i in range(len(values)):
            cells = [] if not found[i] else [f"{v:.7g}" for v in values[i].astype(np.float64)]
            self.writer.writerow([name, f"{timestamps[i]:.6f}", int(bool(found[i])),
                                  *(f"{v:.7g}" for v in labels[i]),
                                  *(cells or [""] * self.n_features)])


#: The writer of each output format (``--format``), keyed by the names of
#: :data:`~end2you_visual.choices.EXTRACT_FORMATS`.
WRITERS: Dict[str, Type[_Writer]] = {"hdf5": _Hdf5Writer, "npy": _NpyWriter, "csv": _CsvWriter}
assert tuple(WRITERS) == EXTRACT_FORMATS, "a format is named in end2you_visual.choices"
#: The output file's ending per format.
FORMATS = {fmt: writer.suffix for fmt, writer in WRITERS.items()}
