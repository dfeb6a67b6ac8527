"""`generate`: raw videos or image folders + label CSVs -> HDF5 face-crop sequences.

Per video: decode at its own frame rate in batches (streaming), find and
track the main face (:mod:`end2you_visual.faces`), align the labels to the
frames by timestamp (:mod:`end2you_visual.labels`) and append the crops to an
HDF5 file (:mod:`end2you_visual.hdf5`) that is renamed into place only when
complete. Image datasets (one image = one frame) are packed into shards.

A failure in one input (unreadable video, bad labels...) is recorded in the
manifest with its reason and the other inputs go on. A re-run skips outputs
that are complete and redoes the rest.
"""
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .errors import InputError
from .files import atomic_write_text
from .hdf5 import SequenceWriter, is_complete
from .inputs import discover_inputs, list_sequence_frames, select_shard
from .labels import align_labels, read_labels
from .preview import ContactSheet

MANIFEST = "manifest.json"


@dataclass
class GenerateSettings:
    """How `generate` turns inputs into crops; stored in every output file.

    Attributes:
        size: side of the square face crops (the paper's 150).
        margin: extra border around the detected box, as a fraction of its side.
        device: where MTCNN and the cropping run ("cpu", "cuda", "cuda:1"...).
        batch_size: frames decoded and detected together.
        detect_every: detect on every k-th frame, interpolate the track between.
        detect_scale: detect on frames scaled by this factor (None: full size).
        min_face_size: MTCNN's smallest face, in (scaled) pixels.
        smoothing: box smoothing strength over time (0: none).
        fill: what a no-face frame holds: "last" good crop or "zeros".
        align: output frame rate: "video" (every frame) or "labels" (a frame per label row).
        interpolation: label value at a frame time: "previous", "nearest", "linear".
        tolerance: seconds labels may start late / end early or late vs. the video.
        time_column / label_columns: which label CSV columns to use (None: first / rest).
        skip_detection: inputs are already face crops (e.g. FER2013): only resize.
        image_fps: frame rate recorded for image sequences.
        shard_size: images or image sequences per shard file.
        compression: HDF5 compression of the frames (None, "gzip", "lzf").
    """

    size: int = 150
    margin: float = 0.2
    device: str = "cpu"
    batch_size: int = 16
    detect_every: int = 1
    detect_scale: float = None
    min_face_size: int = 20
    smoothing: float = 0.5
    fill: str = "last"
    align: str = "video"
    interpolation: str = "previous"
    tolerance: float = 1.0
    time_column: str = None
    label_columns: list = None
    skip_detection: bool = False
    image_fps: float = 30.0
    shard_size: int = 5000
    compression: str = None

    def face_pipeline(self, fps=None):
        from .faces import FacePipeline

        return FacePipeline(size=self.size, margin=self.margin, device=self.device,
                            detect_every=self.detect_every, min_face_size=self.min_face_size,
                            smoothing=self.smoothing, fill=self.fill, fps=fps,
                            detect_scale=self.detect_scale, batch_size=self.batch_size)


@dataclass
class Result:
    """What happened to one output file; one row of the manifest."""

    output: str
    inputs: list
    status: str = "written"          # "written", "skipped" or "failed"
    frames: int = 0
    faces_found: int = 0
    sequences: int = 0
    fps: float = None
    seconds: float = 0.0
    error: str = None
    warnings: list = field(default_factory=list)


# --------------------------------------------------------------------- videos
def _label_kind(values):
    return "multilabel" if np.isin(values, (0.0, 1.0)).all() else "continuous"


class _RowPlan:
    """Which output rows, with which labels, each decoded batch of frames gives.

    Unlabelled video: every decoded frame. Labelled video: the alignment's
    frame indices (a frame may give no row, or several with
    ``--align labels``). A video's header only estimates its frame count (a
    longer audio track, a truncated file), so the rows are planned for the
    estimate plus a second, planned again further if the video runs longer,
    and the labels' coverage is checked on the true count at the end.
    """

    def __init__(self, track, fps, settings, estimate):
        self.track, self.fps, self.settings = track, fps, settings
        self.pointer = 0
        self.alignment = None
        if track is not None:
            self._plan(max(estimate, 1) + int(np.ceil(fps)) + 1)

    def _plan(self, n_frames):
        s = self.settings
        self.planned = n_frames
        self.alignment = align_labels(self.track, n_frames, self.fps, s.align, s.interpolation,
                                      math.inf)

    def rows(self, start, n):
        """(frame rows within the batch, timestamps, labels or None, first output row)."""
        first = self.pointer
        if self.track is None:
            self.pointer += n
            return np.arange(n), (start + np.arange(n)) / self.fps, None, first
        if start + n > self.planned:
            self._plan(max(start + n, 2 * self.planned))
        a = self.alignment
        self.pointer = int(np.searchsorted(a.frame_indices, start + n, side="left"))
        return (a.frame_indices[first:self.pointer] - start, a.timestamps[first:self.pointer],
                a.labels[first:self.pointer], first)

    def check_coverage(self, decoded):
        """Raise InputError if the labels do not fit the ``decoded`` frames;
        returns the number of label rows after the video's end (dropped)."""
        if self.track is None:
            return 0
        s = self.settings
        return align_labels(self.track, decoded, self.fps, s.align, s.interpolation,
                            s.tolerance).dropped_rows


def _read_track(item, settings):
    """(label names, kind, LabelTrack or None) for one video item."""
    if item.label_file is None:
        return [], "none", None
    track = read_labels(item.label_file, settings.time_column, settings.label_columns)
    return track.names, _label_kind(track.values), track


def generate_video(item, out_path, settings, preview_path=None, progress=False):
    """Write one video's crops and aligned labels to ``out_path``; returns a Result."""
    from .video import iter_frame_batches, probe_video

    started = time.perf_counter()
    info = probe_video(item.raw)
    names, kind, track = _read_track(item, settings)
    out_fps = info.fps if settings.align == "video" or track is None else \
        _rate(track.times, info.fps)
    result = Result(str(out_path), [str(item.raw)] + ([str(item.label_file)] if item.label_file else []),
                    fps=out_fps, sequences=1)
    plan = _RowPlan(track, info.fps, settings, info.n_frames)
    expected = len(track.times) if track is not None and settings.align == "labels" \
        else info.n_frames
    sheet = ContactSheet(preview_path, expected)
    pipeline = settings.face_pipeline(info.fps)
    bar = tqdm(total=info.n_frames, desc=Path(item.raw).name, unit="frame",
               disable=not progress, leave=False)
    decoded = 0
    with SequenceWriter(out_path, settings.size, names, kind, asdict(settings),
                        settings.compression) as writer:
        writer.begin_sequence(item.name, item.raw, out_fps, item.label_file, item.metadata)
        for start, frames in iter_frame_batches(item.raw, settings.batch_size):
            faces = pipeline.process(frames)
            rows, times, labels, first = plan.rows(start, len(frames))
            _write_rows(writer, faces, rows, times, labels)
            for k, row in enumerate(rows):
                sheet.offer(first + k, faces.crops[row], faces.found[row], f"{times[k]:.2f}s")
            result.faces_found += int(faces.found[rows].sum())
            decoded = start + len(frames)
            bar.update(len(frames))
        bar.close()
        if decoded == 0:
            raise InputError(item.raw, "no frame could be decoded")
        dropped = plan.check_coverage(decoded)  # an InputError here discards the file
        if dropped:
            result.warnings.append(f"{dropped} label rows after the video's end dropped")
        result.frames = writer.n_frames
        writer.commit()
    sheet.save()
    result.seconds = time.perf_counter() - started
    return result


def _rate(timestamps, default):
    steps = np.diff(timestamps)
    return float(1.0 / np.median(steps)) if len(steps) and np.median(steps) > 0 else default


def _write_rows(writer, faces, rows, times, labels):
    if len(rows):
        writer.append(faces.crops[rows], times, labels, faces.found[rows], faces.boxes[rows])


# --------------------------------------------------------------------- images
def _image_frames(item, settings, pipeline):
    """(crops, found, boxes) for an image or an image-sequence item."""
    from .faces import resize_only
    from .video import read_image

    paths = [item.raw] if item.kind == "image" else list_sequence_frames(item.raw)
    frames = [read_image(p) for p in paths]
    if settings.skip_detection:
        crops = np.concatenate([resize_only(f[None], settings.size) for f in frames])
        return crops, np.ones(len(crops), bool), np.full((len(crops), 4), np.nan, np.float32)
    pipeline.reset()
    out = [pipeline.process(f[None]) for f in frames]
    return (np.concatenate([o.crops for o in out]), np.concatenate([o.found for o in out]),
            np.concatenate([o.boxes for o in out]))


def generate_image_shard(items, label_names, out_path, settings, preview_path=None):
    """Pack image / image-sequence items into one shard file; returns a Result.

    An item that cannot be read is skipped and listed in the Result's warnings.
    """
    started = time.perf_counter()
    pipeline = None if settings.skip_detection else settings.face_pipeline(settings.image_fps)
    result = Result(str(out_path), [str(i.raw) for i in items], fps=settings.image_fps)
    sheet = ContactSheet(preview_path, len(items))
    with SequenceWriter(out_path, settings.size, label_names, "multiclass", asdict(settings),
                        settings.compression) as writer:
        for k, item in enumerate(items):
            try:
                crops, found, boxes = _image_frames(item, settings, pipeline)
            except InputError as err:
                result.warnings.append(str(err))
                continue
            n = len(crops)
            writer.begin_sequence(item.name, item.raw, settings.image_fps, "", item.metadata)
            writer.append(crops, np.arange(n) / settings.image_fps,
                          np.repeat(item.label[None], n, axis=0), found, boxes)
            writer.end_sequence()
            result.faces_found += int(found.sum())
            sheet.offer(k, crops[0], found[0], item.metadata.get("class", item.name)[:10])
        result.frames, result.sequences = writer.n_frames, writer.n_sequences
        writer.commit()
    sheet.save()
    result.seconds = time.perf_counter() - started
    return result


# ---------------------------------------------------------------- the driver
@dataclass
class _Job:
    kind: str            # "video" or "shard"
    out_path: Path
    items: list
    label_names: list = None
    preview_path: Path = None


def plan_jobs(items, label_names, out_dir, settings, preview=False):
    """One job per video, one per shard of images; output names are stable."""
    out_dir = Path(out_dir)
    videos = [i for i in items if i.kind == "video"]
    images = [i for i in items if i.kind != "video"]
    jobs = [_Job("video", out_dir / f"{i.name}.h5", [i],
                 preview_path=out_dir / "previews" / f"{i.name}.png" if preview else None)
            for i in videos]
    for s, start in enumerate(range(0, len(images), settings.shard_size)):
        name = f"images-{s:05d}"
        jobs.append(_Job("shard", out_dir / f"{name}.h5", images[start:start + settings.shard_size],
                         label_names, out_dir / "previews" / f"{name}.png" if preview else None))
    return jobs


def run_job(job, settings, progress=False):
    """Run one job, turning any input problem into a failed Result (never raises InputError)."""
    try:
        if job.kind == "video":
            return generate_video(job.items[0], job.out_path, settings, job.preview_path, progress)
        return generate_image_shard(job.items, job.label_names, job.out_path, settings,
                                    job.preview_path)
    except (InputError, OSError) as err:
        return Result(str(job.out_path), [str(i.raw) for i in job.items], status="failed",
                      error=str(err))


def _run_in_worker(job, settings, threads):
    import torch

    torch.set_num_threads(threads)
    return run_job(job, settings)


def generate(source, out_dir, settings=None, layout="auto", workers=1, num_shards=1,
             shard_index=0, overwrite=False, preview=False, progress=True):
    """Generate HDF5 files for every input in ``source`` (a CSV or a folder).

    Returns the list of :class:`Result` and writes ``manifest.json`` (or
    ``manifest-shard<i>of<n>.json``) into ``out_dir``. Complete outputs are
    skipped unless ``overwrite``.
    """
    settings = settings or GenerateSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items, label_names = discover_inputs(source, layout)
    jobs = select_shard(plan_jobs(items, label_names, out_dir, settings, preview),
                        num_shards, shard_index)
    todo, results = [], []
    for job in jobs:
        if not overwrite and is_complete(job.out_path):
            results.append(Result(str(job.out_path), [str(i.raw) for i in job.items],
                                  status="skipped"))
        else:
            todo.append(job)
    results += _run_jobs(todo, settings, workers, progress)
    manifest = out_dir / (MANIFEST if num_shards == 1 else
                          f"manifest-shard{shard_index}of{num_shards}.json")
    write_manifest(manifest, results, settings, source)
    return results


def _run_jobs(jobs, settings, workers, progress):
    bar = tqdm(total=len(jobs), desc="generate", unit="file", disable=not progress)
    results = []
    if workers <= 1:
        for job in jobs:
            results.append(run_job(job, settings, progress))
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run_in_worker, job, settings, threads) for job in jobs]
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
    bar.close()
    return sorted(results, key=lambda r: r.output)


def write_manifest(path, results, settings, source):
    """Write the manifest JSON atomically: settings, totals and one row per output."""
    totals = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "failed")}
    doc = {
        "created_by": f"end2you-visual {__version__}",
        "source": str(source),
        "settings": asdict(settings),
        "totals": totals,
        "files": [asdict(r) for r in results],
    }
    atomic_write_text(path, json.dumps(doc, indent=2, default=str))
    return path
