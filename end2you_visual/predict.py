"""Per-frame predictions for your own videos: `e2y-visual predict`.

No HDF5 file is made: each video is streamed through the same face
pipeline as `generate` and straight into the model, batch after batch::

    decode a batch -> detect/track/crop faces -> model (state carried) -> rows

so memory does not grow with the video's length. The crops are cut at the
model's own input size (``model.config["input_size"]``) and, unless a
``margin`` or ``crop`` is given, framed as the model's training crops were
(:mod:`end2you_visual.framing`: e.g. margin 0 for ``resnet18-fer2013-cpu``,
trained on FER2013's tight faces; aligned crops for a model trained on
``generate --crop aligned`` files)::

    from end2you_visual.predict import predict_video
    result = predict_video("me.mp4", "resnet18-fer2013-cpu", out_dir="out")
    result.predictions        # (T, outputs), NaN where no face was found

Per video, ``out_dir`` receives ``<stem>.csv`` (``time``, one column per
output, ``face_found``, and ``top_class`` for a categorical model) and
``<stem>.png`` (the outputs over time, with gaps where no face was found).
Outputs of an earlier run for the same stems are refused before any work
unless ``overwrite=True``. Outputs are activated: values for
regression heads, probabilities for classification heads. A frame without a
face has EMPTY output cells: the model still sees it (it holds the last
good crop, as in training data, so the recurrent state runs on), but its
output is not a prediction about a face.

An audiovisual model (``train --modality audiovisual``) is also given each
frame's audio window, cut from the video's audio track as ``generate
--audio`` cuts it (:class:`VideoAudio`); a video without an audio track is
then an error naming it.
"""
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import torch

from .audio import frame_ranges, frame_windows, has_audio, read_audio, samples_per_frame
from .devices import resolve_device
from .errors import InputError
from .files import check_name_length, check_writable, expand_paths
from .face_settings import FaceSettings
from .faces import FacePipeline
from .framing import model_face_settings, resolve_face_settings
from .inference import StreamingPredictor
from .models.build import model_inputs
from .models.checkpoint import unwrap_model
from .predictions import unique_stems, write_prediction_csv
from .zoo import resolve_model

if TYPE_CHECKING:  # the video module is imported when a video is read
    from .video import VideoInfo

__all__ = ["PredictionResult", "predict_video", "predict_videos", "find_videos"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class PredictionResult:
    """Predictions for one video.

    Attributes:
        video: the video file.
        label_names: output names (the CSV's columns).
        fps: frame rate the video was sampled at (frame i is at i / fps s).
        time: (T,) seconds.
        predictions: float32 (T, outputs), activated; NaN where no face.
        face_found: bool (T,).
        csv_path, plot_path: the files written (None when not written).
        seconds: wall time of the whole video (decode, faces, model).
        face_settings: the :class:`~end2you_visual.faces.FaceSettings` the
            face pipeline ran with (its ``margin`` the model's framing unless
            one was given); None when a ``pipeline`` was passed.
        person: with ``faces="all"``, in each of ``people``: the person
            (:meth:`~end2you_visual.people.Person.to_dict`).
        people: with ``faces="all"``: one PredictionResult per person kept
            (its own predictions, CSV and plot); the video's own
            ``predictions`` are then all NaN and ``face_found`` says where
            anyone was found.
        timeline_path: with ``faces="all"`` and a plot: who is visible when.
    """

    video: Path
    label_names: list
    fps: float
    time: np.ndarray
    predictions: np.ndarray
    face_found: np.ndarray
    csv_path: Optional[Path] = None
    plot_path: Optional[Path] = None
    seconds: float = 0.0
    face_settings: Optional[FaceSettings] = None
    person: Optional[dict] = None
    people: Optional[List["PredictionResult"]] = None
    timeline_path: Optional[Path] = None

    @property
    def n_frames(self) -> int:
        return len(self.time)

    @property
    def faces_found(self) -> int:
        return int(self.face_found.sum())


def _outputs(out_dir: PathLike, stem: str) -> List[Path]:
    return [Path(out_dir) / f"{stem}.csv", Path(out_dir) / f"{stem}.png"]


def _people_outputs(out_dir: PathLike, stem: str) -> List[Path]:
    """The per-person outputs of an earlier ``faces="all"`` run for ``stem``."""
    from .predict_people import person_stem, timeline_path

    folder = Path(out_dir)
    found = [p for p in folder.glob(f"{person_stem(stem, '*')}.*")
             if p.suffix in (".csv", ".png")] if folder.is_dir() else []
    return sorted(found) + [p for p in [timeline_path(out_dir, stem)] if p.exists()]


def check_predict_out(out_dir: PathLike, stems: Sequence[str], overwrite: bool = False,
                      videos: Optional[Sequence[PathLike]] = None) -> List[Path]:
    """Refuse an ``out_dir`` that cannot be written, or that holds outputs
    (``<stem>.csv``, ``<stem>.png``) of these ``stems`` unless ``overwrite``,
    or output names longer than the file system takes (with their temporary
    files' additions: :func:`~end2you_visual.files.check_name_length`).

    Returns:
        The existing outputs of ``stems`` (those ``overwrite`` replaces).

    Raises:
        InputError: naming the folder (and ``--overwrite``), or the video
            (one of ``videos``, matching ``stems``) whose name is too long.
    """
    check_writable(out_dir, "--out")
    for stem, video in zip(stems, videos or stems):
        for path in _outputs(out_dir, stem):
            check_name_length(path, video, stem)
    old = [p for s in stems for p in _outputs(out_dir, s) if p.exists()] + \
        [p for s in stems for p in _people_outputs(out_dir, s)]
    if old and not overwrite:
        shown = ", ".join(p.name for p in old[:3]) + (f" and {len(old) - 3} more"
                                                      if len(old) > 3 else "")
        raise InputError(out_dir, f"already holds predictions for these videos ({shown}); "
                         "use --overwrite to replace them, or choose another --out")
    return old


def _input_size(model: torch.nn.Module) -> Tuple[int, Any]:
    """The model's input size and the model inside a ``torch.compile``
    wrapper (Any: a VisualModel... whose ``config`` nn.Module does not declare)."""
    base: Any = unwrap_model(model)
    if "frames" not in model_inputs(base):
        raise InputError(None, "an audio model predicts from generated files (e2y-visual "
                               "test); predict is for models that see the face")
    size = base.config.get("input_size")
    if not size:
        raise ValueError("the model's config has no input_size")
    return int(size), base


class VideoAudio:
    """The audio windows of a video's frames, in order: ``next(n)`` gives the
    next ``n`` frames' windows (n, samples) at ``rate`` Hz (frame i owns
    ``[i / fps, (i + 1) / fps)``, as in ``generate --audio``). The track is
    decoded once, whole (about 230 MB per hour at 16 kHz)."""

    def __init__(self, path: PathLike, fps: float, rate: float) -> None:
        if not has_audio(path):
            raise InputError(path, "has no audio track, which this model needs (it was "
                                   "trained on audio)")
        self.waveform = read_audio(path, int(rate))
        self.fps, self.rate, self.done = float(fps), int(rate), 0
        self.samples = samples_per_frame(self.fps, self.rate)

    def next(self, n: int) -> np.ndarray:
        times = (self.done + np.arange(n)) / self.fps
        self.done += n
        return frame_windows(self.waveform, frame_ranges(times, self.fps, self.rate),
                             self.samples)


def predict_video(video_path: PathLike, model: Union[PathLike, torch.nn.Module],
                  out_dir: Optional[PathLike] = None, device: Union[str, torch.device] = "auto",
                  precision: str = "auto", plot: bool = True, pipeline: Any = None,
                  stem: Optional[str] = None, progress: bool = False, overwrite: bool = False,
                  model_name: Optional[str] = None,
                  announce: Optional[Callable[[str], object]] = None,
                  **faces: Any) -> PredictionResult:
    """Per-frame predictions of ``model`` for one video.

    Args:
        video_path: a video file ffmpeg can read.
        model: a VisualModel, or a registered name / checkpoint path.
        out_dir: where ``<stem>.csv`` and ``<stem>.png`` go; None: write nothing.
        device: for the face detector and the model (``"auto"``: CUDA if any).
        precision: ``"auto"`` (bf16 on CUDA, fp32 on CPU), ``"bf16"``, ``"fp32"``.
        plot: write the PNG too.
        pipeline: a FacePipeline to reuse (its size must be the model's
            input size); the face settings are then ignored.
        stem: file name stem of the outputs (default the video's).
        progress: show a progress bar (tqdm).
        overwrite: replace this stem's outputs of an earlier run in
            ``out_dir`` (else refused before any work).
        model_name: the model's name in the plot's title (default: the
            name or path given as ``model``, else its architecture).
        announce: a callable (e.g. ``print``) given one line when the
            model's framing sets the margin or crop kind (or a given one
            differs from it).
        **faces: the face pipeline's settings, as for ``generate``
            (:class:`~end2you_visual.faces.FaceSettings`: ``batch_size``, the
            frames decoded, detected and predicted together, ``detect_every``,
            ``detect_scale``, ``margin``, ``crop``, ``min_face_size``,
            ``smoothing``, ``fill``); the crop size is the model's input
            size. ``margin`` / ``crop`` None or not given: the model's
            framing (:func:`~end2you_visual.framing.model_framing`), else
            0.2 / ``"box"``.

    Returns:
        :class:`PredictionResult`.

    Raises:
        InputError: a bad device, an ``out_dir`` that cannot be written or
            holds this stem's outputs (without ``overwrite``), a video that
            cannot be read.
    """
    from .video import iter_frame_batches, probe_video

    resolve_face_settings(faces, None)  # settings out of range: refused before any work
    started = time.perf_counter()
    device = resolve_device(device)
    stem = stem or Path(video_path).stem
    if out_dir is not None:
        check_predict_out(out_dir, [stem], overwrite, [video_path])
    resolved = resolve_model(model, device)
    title = f"{Path(video_path).name} · model {model_name or resolved.title}"
    model = resolved.model
    size, base = _input_size(model)
    settings = model_face_settings(faces, resolved.framing, size, device,
                                   announce if pipeline is None else None)
    # What the pipeline runs with (a pipeline given has its own settings).
    ran_with = settings if pipeline is None else None
    info = probe_video(video_path)
    if pipeline is None:
        settings.check_frame_size(info.width, info.height, video_path)  # before any decoding
        if settings.faces == "all":
            return _predict_people(video_path, model, base, settings, info, device, precision,
                                   out_dir, stem, overwrite, plot, title, progress, started)
        pipeline = FacePipeline.from_settings(settings, info.fps)
    elif pipeline.size != size:
        raise ValueError(f"the pipeline crops {pipeline.size} px faces, the model expects {size}")
    pipeline.reset()
    predictor = StreamingPredictor(model, device, precision, activate=True)
    audio = VideoAudio(video_path, info.fps, base.config["audio_rate"]) if (
        "audio" in predictor.inputs) else None
    bar = _bar(progress, info, video_path)
    preds: List[np.ndarray] = []
    found: List[np.ndarray] = []
    try:
        for _, frames in iter_frame_batches(video_path, settings.batch_size):
            batch = pipeline.process(frames)
            out = predictor(batch.crops, audio.next(len(frames)) if audio else None)
            out[~batch.found] = np.nan  # no face: no prediction
            preds.append(out)
            found.append(batch.found.copy())
            if bar is not None:
                bar.update(len(frames))
    finally:
        if bar is not None:
            bar.close()
        pipeline.reset()
    predictions = np.concatenate(preds).astype(np.float32)
    face_found = np.concatenate(found)
    times = np.arange(len(face_found)) / info.fps
    result = PredictionResult(Path(video_path), base.label_names, info.fps, times, predictions,
                              face_found, face_settings=ran_with)
    if out_dir is not None:
        out_dir = Path(out_dir)
        for old in check_predict_out(out_dir, [stem], overwrite):
            old.unlink()  # with overwrite only: no stale plot beside a new CSV
        result.csv_path = out_dir / f"{stem}.csv"
        write_prediction_csv(result.csv_path, times, base.label_names, predictions,
                             face_found, top_class=base.head_kind != "regression")
        if plot:
            from .plots import plot_predictions

            result.plot_path = plot_predictions(times, predictions, None, base.label_names,
                                                out_dir / f"{stem}.png", face_found=face_found,
                                                title=title, kind=base.head_kind)
    result.seconds = time.perf_counter() - started
    return result


def _predict_people(video_path: PathLike, model: torch.nn.Module, base: Any,
                    settings: FaceSettings, info: "VideoInfo", device: torch.device,
                    precision: str, out_dir: Optional[PathLike], stem: str, overwrite: bool,
                    plot: bool, title: str, progress: bool, started: float
                    ) -> PredictionResult:
    """:func:`predict_video` with ``faces="all"`` (:mod:`end2you_visual.predict_people`)."""
    from .predict_people import predict_people, timeline_path, write_people
    from .video import iter_frame_batches

    audio = VideoAudio(video_path, info.fps, base.config["audio_rate"]) if (
        "audio" in model_inputs(base)) else None
    bar = _bar(progress, info, video_path)
    try:
        people = predict_people(model, base, settings, info, device, precision,
                                iter_frame_batches(video_path, settings.batch_size), audio,
                                bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    n = info.n_frames if not people else len(people[0]["face_found"])
    times = np.arange(n) / info.fps
    anyone = np.zeros(n, bool)
    for entry in people:
        anyone |= entry["face_found"]
    kept: List[PredictionResult] = []  # result.people
    result = PredictionResult(Path(video_path), base.label_names, info.fps, times,
                              np.full((n, base.config["outputs"]), np.nan, np.float32), anyone,
                              face_settings=settings, people=kept)
    written: Dict[int, Tuple[Path, Optional[Path]]] = {}
    if out_dir is not None:
        for old in check_predict_out(out_dir, [stem], overwrite):
            old.unlink()
        written = write_people(out_dir, stem, times, people, base, plot, title)
        if plot:
            result.timeline_path = timeline_path(out_dir, stem)
    for entry in people:
        pid = entry["person"].id
        csv_path, plot_path = written.get(pid, (None, None))
        kept.append(PredictionResult(
            Path(video_path), base.label_names, info.fps, times, entry["predictions"],
            entry["face_found"], csv_path, plot_path, face_settings=settings,
            person=entry["person"].to_dict()))
    result.seconds = time.perf_counter() - started
    return result


def _bar(progress: bool, info: "VideoInfo", path: PathLike) -> Any:
    """A tqdm bar over the video's frames (tqdm has no type hints), or None."""
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=info.n_frames, desc=Path(path).name, unit="frame", leave=False)


def find_videos(paths: Union[PathLike, Iterable[PathLike]]) -> List[Path]:
    """Video files among ``paths`` (files, and folders searched recursively;
    hidden files skipped)."""
    from .inputs import VIDEO_EXTENSIONS

    return expand_paths(paths, VIDEO_EXTENSIONS, "video files")


def predict_videos(videos: Union[PathLike, Iterable[PathLike]],
                   model: Union[PathLike, torch.nn.Module], out_dir: PathLike,
                   device: Union[str, torch.device] = "auto", overwrite: bool = False,
                   announce: Optional[Callable[[str], object]] = None,
                   **options: Any) -> List[PredictionResult]:
    """:func:`predict_video` for each of ``videos`` (files or folders) into ``out_dir``.

    The device, ``out_dir`` (writable; no outputs of these videos' stems
    unless ``overwrite``) and every video (probed: an unreadable one raises
    InputError) are checked before any work; the model is loaded once;
    outputs of videos sharing a stem get ``__2``, ``__3``... ``announce``
    gets the line about the model's framing once (see :func:`predict_video`).
    Returns one :class:`PredictionResult` per video.
    """
    from .video import probe_video

    device = resolve_device(device)
    paths = find_videos(videos)
    stems = unique_stems([p.stem for p in paths])
    check_predict_out(out_dir, stems, overwrite, paths)
    for p in paths:  # an unreadable video stops the run before any work
        probe_video(p)
    resolved = resolve_model(model, device)
    results = []
    for i, (p, s) in enumerate(zip(paths, stems)):
        results.append(predict_video(p, resolved.model, out_dir, device=device, stem=s,
                                     overwrite=overwrite, model_name=resolved.title,
                                     announce=announce if i == 0 else None, **options))
    return results
