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

Frames are read, embedded and written chunk by chunk (``batch_size``
frames): memory does not grow with the length of the input. Outputs are
written atomically and never replaced unless ``overwrite``. (A 2D CNN embeds
each frame alone, so the chunking changes nothing; an I3D CNN looks one
frame across each chunk's edge, so its embeddings there are close to, not
equal to, a whole-clip pass.)
"""
import csv
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from . import __version__
from .errors import InputError
from .files import check_name_length, check_writable, temporary_beside
from .framing import file_framing, model_framing, resolve_face_settings
from .models.checkpoint import state_dict_sha256
from .ranges import check_number

__all__ = ["FEATURES_FORMAT", "FORMATS", "DTYPES", "ExtractResult", "extract_features",
           "output_path", "model_checksum"]

FEATURES_FORMAT = "end2you-visual-features"
FEATURES_VERSION = 1
FORMATS = {"hdf5": ".features.h5", "npy": ".features.npy", "csv": ".features.csv"}
DTYPES = ("float16", "float32")
_HDF5_SUFFIXES = (".h5", ".hdf5")
_STR = h5py.string_dtype(encoding="utf-8")


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
    face_settings: dict = None


def output_path(out_dir, source, fmt="hdf5"):
    """``out_dir / <stem of source> + FORMATS[fmt]``."""
    return Path(out_dir) / (Path(source).stem + FORMATS[fmt])


def model_checksum(model, path=None):
    """``("file", sha256 of path)`` for a checkpoint file, else ``("state_dict",
    sha256 over the model's tensors, by name)``: the same weights give the
    same checksum whatever file they came from."""
    if path is not None:
        from .zoo import sha256_file

        return "file", sha256_file(path)
    return "state_dict", state_dict_sha256(model)


def _resolve_model(model, device):
    """(visual model in eval mode, name, checksum kind, checksum, config, framing)."""
    from .models import VisualModel
    from .models.checkpoint import unwrap_model

    path = None
    if isinstance(model, (str, os.PathLike)):
        from .zoo import list_pretrained, load_pretrained

        name = str(model)
        registered = {w.name: w for w in list_pretrained()}
        loaded = load_pretrained(model, device="cpu")
        if name in registered:
            kind, checksum = "file", registered[name].sha256.lower()
        else:
            path = Path(model)
            kind, checksum = model_checksum(loaded, path)
        model = loaded
    else:
        model = unwrap_model(model)
        name = f"{model.config.get('arch', 'unnamed')} (in memory)"
        kind, checksum = model_checksum(model)
    visual = getattr(model, "visual", model)  # an audiovisual model: its visual branch
    if not isinstance(visual, VisualModel):
        raise InputError(name, f"extract needs a visual or audiovisual model, not "
                               f"{type(model).__name__}")
    return (visual.to(device).eval(), name, kind, checksum, model.config,
            model_framing(model))


def extract_features(inputs, model, out_dir, fmt="hdf5", dtype="float16", batch_size=64,
                     device="auto", overwrite=False, progress=False, announce=None, **faces):
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

    if fmt not in FORMATS:
        raise InputError("--format", f"must be one of {list(FORMATS)}, got {fmt!r}")
    if dtype not in DTYPES:
        raise InputError("--dtype", f"must be one of {list(DTYPES)}, got {dtype!r}")
    batch_size = check_number("--batch-size", batch_size, 1, integer=True)
    from .inputs import VIDEO_EXTENSIONS

    faces = {**faces, "batch_size": batch_size}
    resolve_face_settings(faces, None)  # settings out of range: refused before any work
    sources = expand_paths(inputs, _HDF5_SUFFIXES + tuple(VIDEO_EXTENSIONS),
                           "HDF5 or video files")
    check_writable(out_dir, "--out")
    targets = [output_path(out_dir, s, fmt) for s in sources]
    _check_targets(sources, targets, overwrite)
    device = resolve_device(device)
    visual, name, kind, checksum, config, framing = _resolve_model(model, device)
    settings, line = resolve_face_settings(faces, framing)
    if line and announce is not None and any(not _is_hdf5(s) for s in sources):
        announce(line)
    attrs = {"format": FEATURES_FORMAT, "schema_version": FEATURES_VERSION,
             "model_name": name, "model_checksum": checksum, "model_checksum_of": kind,
             "model_config": json.dumps(config, default=str), "feature_dtype": dtype,
             "num_features": int(visual.num_features), "created_by": f"end2you-visual "
                                                                     f"{__version__}"}
    results = []
    for source, target in zip(sources, targets):
        started = time.perf_counter()
        if _is_hdf5(source):
            stream, used = _hdf5_chunks(source, visual, batch_size, device, framing), None
        else:
            chunks = _people_chunks if settings.faces == "all" else _video_chunks
            stream = chunks(source, visual, device, settings)
            used = {**settings.face_settings(), "size": int(visual.config["input_size"]),
                    "device": str(device)}  # what the pipeline ran with
        meta = next(stream)
        sink = _Sink(target, fmt, dtype, int(visual.num_features), meta,
                     {**attrs, "source": str(source),
                      **({} if used is None else {"face_settings": json.dumps(used)})})
        with sink:
            for chunk in _bar(stream, meta["frames"], source, progress):
                sink.append(*chunk)
            sink.commit()
        results.append(ExtractResult(str(source), str(target), sink.rows, sink.faces,
                                     int(visual.num_features),
                                     time.perf_counter() - started, used))
    return results


def _is_hdf5(source):
    return Path(source).suffix.lower() in _HDF5_SUFFIXES


def _check_targets(sources, targets, overwrite):
    seen = {}
    for source, target in zip(sources, targets):
        check_name_length(target, source, Path(source).stem)
        if target in seen:
            raise InputError(source, f"gives the same output {target} as {seen[target]}; "
                                     "extract them into different folders")
        seen[target] = source
        if Path(target).exists() and not overwrite:
            raise InputError(target, "exists (use --overwrite to replace it)")


def _bar(stream, total, source, progress):
    if not progress:
        return stream
    from tqdm.auto import tqdm

    return tqdm(stream, desc=Path(source).name, unit="batch", leave=False)


@torch.inference_mode()
def _embed(visual, crops, found, device):
    """(n, F) float32 embeddings of uint8 crops; NaN rows where ``found`` is False."""
    out = np.full((len(crops), visual.num_features), np.nan, np.float32)
    rows = np.arange(len(crops)) if visual.is_3d else np.flatnonzero(found)
    if len(rows):
        frames = torch.from_numpy(np.ascontiguousarray(crops[rows])).to(device)
        out[rows] = visual.features(frames[None])[0].float().cpu().numpy()
    out[~np.asarray(found, bool)] = np.nan
    return out


def _hdf5_chunks(source, visual, batch_size, device, framing):
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
    yield {"frames": file.n_frames, "label_names": file.label_names,
           "sequences": [(s.name, s.fps, s.length) for s in file.sequences]}
    try:
        for q, info in enumerate(file.sequences):
            for start in range(0, info.length, batch_size):
                clip = file.read(info, start, start + batch_size)
                yield (_embed(visual, clip.frames, clip.face_found, device), clip.timestamps,
                       clip.face_found, clip.labels, q)
    finally:
        file.close()


def _video_chunks(source, visual, device, settings):
    from .video import iter_frame_batches, probe_video

    batch_size = settings.batch_size
    info = probe_video(str(source))
    pipeline = settings.pipeline(info.fps, size=int(visual.config["input_size"]),
                                 device=device)
    settings.check_frame_size(info.width, info.height, source)  # before any decoding
    yield {"frames": info.n_frames, "label_names": [],
           "sequences": [(Path(source).stem, info.fps, None)]}
    for start, frames in iter_frame_batches(str(source), batch_size):
        found = pipeline.process(frames)
        times = (start + np.arange(len(frames))) / info.fps
        yield (_embed(visual, found.crops, found.found, device), times, found.found.copy(),
               np.zeros((len(frames), 0), np.float32), 0)


def _people_chunks(source, visual, device, settings):
    """:func:`_video_chunks` for every person (``faces="all"``): one sequence
    per person kept, ``<stem>_person<id>``, every frame of the video (NaN
    rows where the person is not in view). The embeddings are held until
    the video's end (the people are known only then): (frames x features)
    float32 per person."""
    from .people import PeopleTracker, PersonSeries
    from .video import iter_frame_batches, probe_video

    info = probe_video(str(source))
    settings.check_frame_size(info.width, info.height, source)  # before any decoding
    tracker = PeopleTracker(settings, fps=info.fps, min_duration=settings.min_duration,
                            max_gap=settings.max_gap, size=int(visual.config["input_size"]),
                            device=device)
    series, done = PersonSeries(visual.num_features), 0
    for _, frames in iter_frame_batches(str(source), settings.batch_size):
        for pid, faces in tracker.process(frames).items():
            series.append(pid, done, _embed(visual, faces.crops, faces.found, device),
                          faces.found)
        done += len(frames)
    people = tracker.finish()
    stem = Path(source).stem
    yield {"frames": done * len(people), "label_names": [],
           "sequences": [(f"{stem}_person{p.id}", info.fps, done) for p in people],
           "persons": [p.to_dict() for p in people]}
    times = np.arange(done) / info.fps
    for q, person in enumerate(people):
        yield (series.values(person.id), times, series.found(person.id),
               np.zeros((done, 0), np.float32), q)


class _Sink:
    """One output being written: a temporary file beside it, renamed at commit."""

    def __init__(self, path, fmt, dtype, n_features, meta, attrs):
        self.path, self.fmt, self.dtype = Path(path), fmt, np.dtype(dtype)
        self.n_features, self.meta, self.attrs = n_features, meta, attrs
        self.label_names = list(meta["label_names"])
        self.rows = self.faces = 0
        fd, self.tmp = temporary_beside(self.path)  # the umask's permissions, not 0600
        os.close(fd)
        self.offsets = [0] * (len(meta["sequences"]) + 1)
        self._open()

    def _open(self):
        if self.fmt == "hdf5":
            self.h5 = h5py.File(self.tmp, "w")
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
        elif self.fmt == "npy":
            self.raw = open(self.tmp.with_suffix(".raw"), "wb")  # header added at commit
        else:
            self.csv_handle = open(self.tmp, "w", newline="", encoding="utf-8")
            self.writer = csv.writer(self.csv_handle)
            self.writer.writerow(["sequence", "timestamp", "face_found", *self.label_names,
                                  *(f"f{i}" for i in range(self.n_features))])

    def append(self, features, timestamps, found, labels, q):
        n = len(features)
        values = features.astype(self.dtype)
        if self.fmt == "hdf5":
            for key, data in (("features", values), ("timestamps", timestamps),
                              ("face_found", found), ("labels", labels)):
                if key in self.dsets:
                    dset = self.dsets[key]
                    dset.resize(self.rows + n, axis=0)
                    dset[self.rows:] = data
        elif self.fmt == "npy":
            self.raw.write(np.ascontiguousarray(values).tobytes())
        else:
            name = self.meta["sequences"][q][0]
            for i in range(n):
                cells = [] if not found[i] else [f"{v:.7g}" for v in values[i].astype(np.float64)]
                self.writer.writerow([name, f"{timestamps[i]:.6f}", int(bool(found[i])),
                                      *(f"{v:.7g}" for v in labels[i]),
                                      *(cells or [""] * self.n_features)])
        self.rows += n
        self.faces += int(np.count_nonzero(found))
        self.offsets[q + 1] = self.rows
        for later in range(q + 2, len(self.offsets)):
            self.offsets[later] = self.rows

    def commit(self):
        if self.fmt == "hdf5":
            seqs = self.meta["sequences"]
            group = self.h5.create_group("sequences")
            group.create_dataset("offsets", data=np.asarray(self.offsets, np.int64))
            group.create_dataset("name", data=np.asarray([s[0] for s in seqs], dtype=object),
                                 dtype=_STR)
            group.create_dataset("fps", data=np.asarray([s[1] for s in seqs], np.float64))
            self.h5.attrs.update({**self.attrs, "label_names": json.dumps(self.label_names)})
            self.h5.close()
        elif self.fmt == "npy":
            self.raw.close()
            self._assemble_npy()
        else:
            self.csv_handle.close()
        os.replace(self.tmp, self.path)

    def _assemble_npy(self):
        raw = self.tmp.with_suffix(".raw")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows, self.n_features)}
        with open(self.tmp, "wb") as out, open(raw, "rb") as data:
            np.lib.format.write_array_header_2_0(out, header)
            for block in iter(lambda: data.read(1 << 20), b""):
                out.write(block)
        raw.unlink()

    def _close_all(self):
        for handle in (getattr(self, "h5", None), getattr(self, "raw", None),
                       getattr(self, "csv_handle", None)):
            if handle is not None:
                handle.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._close_all()
            self.tmp.unlink(missing_ok=True)
            self.tmp.with_suffix(".raw").unlink(missing_ok=True)
        return False
