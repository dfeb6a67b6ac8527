"""Per-frame predictions for your own videos: `e2y-visual predict`.

No HDF5 file is made: each video is streamed through the same face
pipeline as `generate` and straight into the model, batch after batch::

    decode a batch -> detect/track/crop faces -> model (state carried) -> rows

so memory does not grow with the video's length. The crops are cut at the
model's own input size (``model.config["input_size"]``)::

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
"""
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .devices import resolve_device
from .errors import InputError
from .files import check_writable, expand_paths
from .inference import StreamingPredictor, load_model, model_title
from .models.checkpoint import unwrap_model
from .predictions import unique_stems, write_prediction_csv

__all__ = ["PredictionResult", "predict_video", "predict_videos", "find_videos"]


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
    """

    video: Path
    label_names: list
    fps: float
    time: np.ndarray
    predictions: np.ndarray
    face_found: np.ndarray
    csv_path: Path = None
    plot_path: Path = None
    seconds: float = 0.0

    @property
    def n_frames(self):
        return len(self.time)

    @property
    def faces_found(self):
        return int(self.face_found.sum())


def _outputs(out_dir, stem):
    return [Path(out_dir) / f"{stem}.csv", Path(out_dir) / f"{stem}.png"]


def check_predict_out(out_dir, stems, overwrite=False):
    """Refuse an ``out_dir`` that cannot be written, or that holds outputs
    (``<stem>.csv``, ``<stem>.png``) of these ``stems`` unless ``overwrite``.

    Returns:
        The existing outputs of ``stems`` (those ``overwrite`` replaces).

    Raises:
        InputError: naming the folder (and ``--overwrite``).
    """
    check_writable(out_dir, "--out")
    old = [p for s in stems for p in _outputs(out_dir, s) if p.exists()]
    if old and not overwrite:
        shown = ", ".join(p.name for p in old[:3]) + (f" and {len(old) - 3} more"
                                                      if len(old) > 3 else "")
        raise InputError(out_dir, f"already holds predictions for these videos ({shown}); "
                         "use --overwrite to replace them, or choose another --out")
    return old


def _input_size(model):
    base = unwrap_model(model)
    size = base.config.get("input_size")
    if not size:
        raise ValueError("the model's config has no input_size")
    return int(size), base


def predict_video(video_path, model, out_dir=None, device="auto", precision="auto",
                  plot=True, pipeline=None, stem=None, progress=False, overwrite=False,
                  model_name=None, **faces):
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
        **faces: the face pipeline's settings, as for ``generate``
            (:class:`~end2you_visual.faces.FaceSettings`: ``batch_size``, the
            frames decoded, detected and predicted together, ``detect_every``,
            ``detect_scale``, ``margin``, ``min_face_size``, ``smoothing``,
            ``fill``); the crop size is the model's input size.

    Returns:
        :class:`PredictionResult`.

    Raises:
        InputError: a bad device, an ``out_dir`` that cannot be written or
            holds this stem's outputs (without ``overwrite``), a video that
            cannot be read.
    """
    from .faces import FaceSettings
    from .video import iter_frame_batches, probe_video

    settings = FaceSettings(**faces)
    started = time.perf_counter()
    device = resolve_device(device)
    stem = stem or Path(video_path).stem
    if out_dir is not None:
        check_predict_out(out_dir, [stem], overwrite)
    title = f"{Path(video_path).name} · model {model_name or model_title(model)}"
    model = load_model(model, device)
    size, base = _input_size(model)
    info = probe_video(video_path)
    if pipeline is None:
        pipeline = settings.pipeline(info.fps, size=size, device=device)
    elif pipeline.size != size:
        raise ValueError(f"the pipeline crops {pipeline.size} px faces, the model expects {size}")
    pipeline.reset()
    predictor = StreamingPredictor(model, device, precision, activate=True)
    bar = _bar(progress, info, video_path)
    preds, found = [], []
    try:
        for _, frames in iter_frame_batches(video_path, settings.batch_size):
            faces = pipeline.process(frames)
            out = predictor(faces.crops)
            out[~faces.found] = np.nan  # no face: no prediction
            preds.append(out)
            found.append(faces.found.copy())
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
                              face_found)
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


def _bar(progress, info, path):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=info.n_frames, desc=Path(path).name, unit="frame", leave=False)


def find_videos(paths):
    """Video files among ``paths`` (files, and folders searched recursively;
    hidden files skipped)."""
    from .inputs import VIDEO_EXTENSIONS

    return expand_paths(paths, VIDEO_EXTENSIONS, "video files")


def predict_videos(videos, model, out_dir, device="auto", overwrite=False, **options):
    """:func:`predict_video` for each of ``videos`` (files or folders) into ``out_dir``.

    The device, ``out_dir`` (writable; no outputs of these videos' stems
    unless ``overwrite``) and every video (probed: an unreadable one raises
    InputError) are checked before any work; the model is loaded once;
    outputs of videos sharing a stem get ``__2``, ``__3``... Returns one
    :class:`PredictionResult` per video.
    """
    from .video import probe_video

    device = resolve_device(device)
    paths = find_videos(videos)
    stems = unique_stems([p.stem for p in paths])
    check_predict_out(out_dir, stems, overwrite)
    for p in paths:  # an unreadable video stops the run before any work
        probe_video(p)
    name = model_title(model)
    model = load_model(model, device)
    return [predict_video(p, model, out_dir, device=device, stem=s, overwrite=overwrite,
                          model_name=name, **options)
            for p, s in zip(paths, stems)]
