"""`generate`: raw videos or image folders + label CSVs -> HDF5 face-crop sequences.

Per video: decode at its own frame rate in batches (streaming), find and
track the main face (:mod:`end2you_visual.faces`), align the labels to the
frames by timestamp (:mod:`end2you_visual.labels`) and append the crops to an
HDF5 file (:mod:`end2you_visual.hdf5`) that is renamed into place only when
complete. Image datasets (one image = one frame) are packed into shards.

A failure in one input (unreadable video, bad labels...) is recorded in the
manifest with its reason and the other inputs go on. A re-run skips outputs
that are complete and redoes the rest.

Bad settings, an unusable device or an output folder that cannot be written
raise :class:`~end2you_visual.errors.InputError` before any work starts.
Each output is written under a lock (:mod:`end2you_visual.locks`): a second
run into the same folder waits for the outputs the first one is writing and
then records them as complete (``skipped``), never as its own or as failed.
Worker processes (``workers > 1``) end with the run: when it is stopped
(SIGTERM, Ctrl-C) or dies.
"""
from __future__ import annotations

import os
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from .audio import audio_track_found, store_audio_track
from .errors import InputError
from .face_settings import settings_record
from .files import DISK_FULL, check_name_length
from .generate_people import (check_person_value, generate_people, record_decoding,
                              wanted_person)
from .hdf5 import SequenceWriter, file_summary, is_complete
from .inputs import (InputItem, assign_subjects, discover_inputs, list_sequence_frames,
                     select_shard)
from .generate_settings import GenerateSettings
from .labels import LabelTrack, read_labels
from .locks import OutputBusy, OutputLock
from .manifest import MANIFEST, Result, warn_results, write_manifest
from .preview import ContactSheet, frame_tile
from .ranges import COUNT
from .row_plan import RowPlan
from .workers import end_workers, init_worker, sigterm_raises

if TYPE_CHECKING:
    from .faces import FaceBatch, FacePipeline

# --------------------------------------------------------------------- videos
def _label_kind(values: np.ndarray) -> str:
    return "multilabel" if np.isin(values, (0.0, 1.0)).all() else "continuous"


def _read_track(item: InputItem, settings: GenerateSettings
                ) -> Tuple[List[str], str, Optional[LabelTrack]]:
    """(label names, kind, LabelTrack or None) for one video item."""
    if item.label_file is None:
        return [], "none", None
    track = read_labels(item.label_file, settings.time_column, settings.label_columns)
    return track.names, _label_kind(track.values), track


def generate_video(item: InputItem, out_path: str | os.PathLike[str], settings: GenerateSettings,
                   preview_path: str | os.PathLike[str] | None = None, progress: bool = False) -> Result:
    """Write one video's crops and aligned labels to ``out_path``; returns a Result."""
    from .video import VideoFrames

    started = time.perf_counter()
    check_person_value(wanted_person(item), item.label_file or item.raw)
    video = VideoFrames(item.raw, settings.batch_size)
    info = video.info
    names, kind, track = _read_track(item, settings)
    out_fps = info.fps if settings.align == "video" or track is None else \
        _rate(track.times, info.fps)
    result = Result(str(out_path), [str(item.raw)] + ([str(item.label_file)] if item.label_file else []),
                    fps=out_fps, sequences=1)
    plan = RowPlan(track, info.fps, settings, info.n_frames)
    expected = len(track.times) if track is not None and settings.align == "labels" \
        else info.n_frames
    settings.check_frame_size(info.width, info.height, item.raw)  # before any decoding
    result.audio_found = audio_track_found(item.raw, settings.audio)  # before any decoding
    if settings.faces == "all" or wanted_person(item) is not None:
        return generate_people(item, out_path, settings, plan, names, kind, track, result,
                               video, preview_path, progress)
    from .faces import FacePipeline  # torch: imported when faces are detected

    sheet = ContactSheet(preview_path, expected)
    pipeline = FacePipeline.from_settings(settings, info.fps)
    bar = tqdm(total=info.n_frames, desc=Path(item.raw).name, unit="frame",
               disable=not progress, leave=False)
    with SequenceWriter(out_path, settings.size, names, kind,
                        settings_record(settings, pipeline.face_detector.name),
                        settings.compression,
                        audio_rate=settings.audio_rate if settings.audio else None) as writer:
        writer.begin_sequence(item.name, item.raw, out_fps, item.label_file, item.metadata)
        for start, frames in video:
            faces = pipeline.process(frames)
            rows, times, labels, first = plan.rows(start, len(frames))
            _write_rows(writer, faces, rows, times, labels)
            for k, row in enumerate(rows):
                if sheet.wants(first + k):  # no face: the frame itself, not the fill
                    tile = faces.crops[row] if faces.found[row] else \
                        frame_tile(frames[row], settings.size)
                    sheet.offer(first + k, tile, faces.found[row], f"{times[k]:.2f}s")
            result.faces_found += int(faces.found[rows].sum())
            bar.update(len(frames))
        bar.close()
        record_decoding(result, item, video, plan)  # an InputError discards the file
        if result.audio_found:
            store_audio_track(writer, item.raw, settings.audio_rate)
        result.frames = writer.n_frames
        writer.commit()
    sheet.save()
    result.seconds = time.perf_counter() - started
    return result


def _rate(timestamps: np.ndarray, default: float) -> float:
    steps = np.diff(timestamps)
    return float(1.0 / np.median(steps)) if len(steps) and np.median(steps) > 0 else default


def _write_rows(writer: SequenceWriter, faces: FaceBatch, rows: np.ndarray, times: np.ndarray,
                labels: Optional[np.ndarray]) -> None:
    if len(rows):
        writer.append(faces.crops[rows], times, labels, faces.found[rows], faces.boxes[rows],
                      None if faces.landmarks is None else faces.landmarks[rows])


# --------------------------------------------------------------------- images
def _image_frames(item: InputItem, settings: GenerateSettings,
                  pipeline: Optional[FacePipeline]
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray],
                             npt.NDArray[np.uint8]]:
    """(crops, found, boxes, landmarks, first image) for an image or an
    image-sequence item (landmarks None: none known)."""
    from .faces import resize_only
    from .video import read_image

    paths = [item.raw] if item.kind == "image" else list_sequence_frames(item.raw)
    frames = [read_image(p) for p in paths]
    if settings.skip_detection:
        crops = np.concatenate([resize_only(f[None], settings.size) for f in frames])
        return (crops, np.ones(len(crops), bool), np.full((len(crops), 4), np.nan, np.float32),
                None, frames[0])
    assert pipeline is not None  # detection is not skipped
    pipeline.reset()
    out = [pipeline.process(f[None]) for f in frames]
    landmarks = None if any(o.landmarks is None for o in out) else \
        np.concatenate([o.landmarks for o in out])
    return (np.concatenate([o.crops for o in out]), np.concatenate([o.found for o in out]),
            np.concatenate([o.boxes for o in out]), landmarks, frames[0])


def generate_image_shard(items: Sequence[InputItem], label_names: Sequence[str],
                         out_path: str | os.PathLike[str], settings: GenerateSettings,
                         preview_path: str | os.PathLike[str] | None = None) -> Result:
    """Pack image / image-sequence items into one shard file; returns a Result.

    An item that cannot be read is skipped and listed in the Result's warnings.
    """
    from .faces import FacePipeline  # torch: imported when faces are detected

    started = time.perf_counter()
    pipeline = None if settings.skip_detection else \
        FacePipeline.from_settings(settings, settings.image_fps)
    result = Result(str(out_path), [str(i.raw) for i in items], fps=settings.image_fps)
    sheet = ContactSheet(preview_path, len(items))
    detector = None if pipeline is None else pipeline.face_detector.name
    with SequenceWriter(out_path, settings.size, label_names, "multiclass",
                        settings_record(settings, detector),
                        settings.compression) as writer:
        for k, item in enumerate(items):
            try:
                crops, found, boxes, landmarks, image = _image_frames(item, settings, pipeline)
            except InputError as err:
                result.warnings.append(str(err))
                continue
            n = len(crops)
            assert item.label is not None  # an image's: its class
            writer.begin_sequence(item.name, item.raw, settings.image_fps, "", item.metadata)
            writer.append(crops, np.arange(n) / settings.image_fps,
                          np.repeat(item.label[None], n, axis=0), found, boxes, landmarks)
            writer.end_sequence()
            result.faces_found += int(found.sum())
            if sheet.wants(k):
                tile = crops[0] if found[0] else frame_tile(image, settings.size)
                sheet.offer(k, tile, found[0], item.metadata.get("class", item.name)[:10])
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
    items: List[InputItem]
    label_names: Optional[List[str]] = None
    preview_path: Optional[Path] = None


def plan_jobs(items: Sequence[InputItem], label_names: Optional[List[str]], out_dir: str | os.PathLike[str],
              settings: GenerateSettings, preview: bool = False) -> List[_Job]:
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


def run_job(job: _Job, settings: GenerateSettings, progress: bool = False,
            overwrite: bool = False, wait: bool = True) -> Result:
    """Run one job under its output's lock; returns its Result, never raises InputError.

    An input problem (or an OSError: a full disk...) gives a failed Result.
    An output that another process is writing is waited for (``wait``) or
    reported with status "busy" (``wait=False``; :func:`generate` comes back
    to it). An output found complete under the lock (another run finished
    it) is "skipped" unless ``overwrite``.
    """
    try:
        # A name too long for the file system fails this input before any work.
        check_name_length(job.out_path, job.items[0].raw if job.kind == "video" else None,
                          job.out_path.stem)
        with OutputLock(job.out_path, wait=wait):
            if not overwrite and is_complete(job.out_path):
                return _skipped(job)
            if job.kind == "video":
                return generate_video(job.items[0], job.out_path, settings, job.preview_path,
                                      progress)
            assert job.label_names is not None  # a shard's: its class names
            return generate_image_shard(job.items, job.label_names, job.out_path, settings,
                                        job.preview_path)
    except OutputBusy as busy:
        return _failed(job, str(busy), status="busy")
    except (InputError, OSError) as err:
        return _failed(job, _error_text(err, job.out_path))


def _failed(job: _Job, error: str, status: str = "failed") -> Result:
    return Result(str(job.out_path), [str(i.raw) for i in job.items], status=status, error=error)


def _skipped(job: _Job) -> Result:
    """The Result of an output that is complete on disk, with what it holds."""
    result = Result(str(job.out_path), [str(i.raw) for i in job.items], status="skipped")
    for key, value in file_summary(job.out_path).items():
        setattr(result, key, value)
    return result


def _error_text(err: Exception, out_path: Path) -> str:
    """The manifest's error for a failed job: an output that could not be
    written (full disk, quota, size limit) is named, with the reason alone
    (HDF5's own message is a page long)."""
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        return (f"{out_path}: cannot be written: {os.strerror(err.errno)} (the partial file "
                "was removed; free some space and run again)")
    return str(err)


# ------------------------------------------------------------- worker processes
def _run_in_worker(job: _Job, settings: GenerateSettings, threads: int, overwrite: bool,
                   wait: bool) -> Result:
    import torch

    torch.set_num_threads(threads)
    return run_job(job, settings, overwrite=overwrite, wait=wait)


def generate(source: str | os.PathLike[str], out_dir: str | os.PathLike[str], settings: Optional[GenerateSettings] = None,
             layout: str = "auto", workers: int = 1, num_shards: int = 1, shard_index: int = 0,
             overwrite: bool = False, preview: bool = False, progress: bool = True
             ) -> List[Result]:
    """Generate HDF5 files for every input in ``source`` (a CSV or a folder).

    Returns the list of :class:`Result` and writes ``manifest.json`` (or
    ``manifest-shard<i>of<n>.json``) into ``out_dir``. Complete outputs are
    skipped unless ``overwrite``. The warnings of the results (a video that
    ends early, dropped label rows...) are also issued as Python warnings.

    Raises:
        InputError: before any work, for settings out of range, an unusable
            ``settings.device``, ``workers < 1``, a bad shard, an unreadable
            ``source`` (empty CSV, no ``raw_file`` column...) or an
            ``out_dir`` that cannot be created or written.
    """
    from .devices import resolve_device

    settings = (settings or GenerateSettings()).check()
    resolve_device(settings.device)
    workers = int(COUNT.check("--workers", workers))
    out_dir = Path(out_dir)
    items, label_names = discover_inputs(source, layout)
    subjects = assign_subjects(items, settings.subject_pattern,
                               source if Path(source).is_dir() else Path(source).parent)
    jobs = select_shard(plan_jobs(items, label_names, out_dir, settings, preview),
                        num_shards, shard_index)
    _check_out_dir(out_dir)
    todo: List[_Job] = []
    results: List[Result] = []
    for job in jobs:
        if not overwrite and is_complete(job.out_path):
            results.append(_skipped(job))
        else:
            todo.append(job)
    done = _run_jobs(todo, settings, workers, progress, overwrite, wait=False)
    busy = {r.output for r in done if r.status == "busy"}
    for r in done:
        if r.status == "busy":
            warnings.warn(f"{r.error}; waiting for it to finish", stacklevel=2)
    if busy:  # written by another run meanwhile: wait for it, then skip or redo
        done = [r for r in done if r.status != "busy"] + _run_jobs(
            [j for j in todo if str(j.out_path) in busy], settings, workers, progress,
            overwrite, wait=True)
    results = sorted(results + done, key=lambda r: r.output)
    manifest = out_dir / (MANIFEST if num_shards == 1 else
                          f"manifest-shard{shard_index}of{num_shards}.json")
    _write_manifest(manifest, results, settings, source, subjects)
    warn_results(results, manifest)
    return results


def _write_manifest(manifest: Path, results: Sequence[Result], settings: GenerateSettings,
                    source: str | os.PathLike[str], subjects: Dict[str, Any]) -> None:
    """The manifest, or an InputError saying what the disk holds when it
    cannot be written (a full disk): the outputs complete there are kept and
    a re-run skips them."""
    try:
        write_manifest(manifest, results, settings, source, subjects)
    except OSError as err:
        done = sum(r.status in ("written", "skipped") for r in results)
        raise InputError(manifest, (
            f"cannot be written: {err.strerror or err}; {done} of {len(results)} outputs are "
            "complete on disk and kept, the others were removed; free some space and run "
            "again (complete outputs are skipped)")) from None


def _check_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and check that files can be written into it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "the output folder (--out) is a file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise InputError(out_dir, f"the output folder (--out) cannot be written: "
                                  f"{err.strerror or err}") from None


def _run_jobs(jobs: Sequence[_Job], settings: GenerateSettings, workers: int, progress: bool,
              overwrite: bool = False, wait: bool = True) -> List[Result]:
    bar = tqdm(total=len(jobs), desc="generate", unit="file", disable=not progress or not jobs)
    results: List[Result] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(run_job(job, settings, progress, overwrite, wait))
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with sigterm_raises():
            pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn"),
                                       initializer=init_worker, initargs=(os.getpid(),))
            try:
                futures = [pool.submit(_run_in_worker, job, settings, threads, overwrite, wait)
                           for job in jobs]
                for future in as_completed(futures):
                    results.append(future.result())
                    bar.update()
            except BaseException:
                end_workers(pool)  # SIGTERM, Ctrl-C, a broken worker: none outlives the run
                raise
            pool.shutdown()
    bar.close()
    return sorted(results, key=lambda r: r.output)
