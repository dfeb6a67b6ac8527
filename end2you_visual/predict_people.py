"""`predict --faces all`: per-frame predictions for every person of a video.

The video is streamed once through the face pipeline with ``faces="all"`` (its
tracker a :class:`~end2you_visual.people.PeopleTracker`);
each person's crops go through the model with their own recurrent state
(from the batch where they are first seen). Per person kept (seen for
``min_duration``), ``out_dir`` receives ``<stem>.person<id>.csv`` and
``<stem>.person<id>.png`` (as `predict` writes for one face), and per video
``<stem>.people.png``: a timeline of who is visible when. The rows of a
person are every frame of the video (empty cells where they are not in view).
"""
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from .face_settings import FaceSettings
from .faces import FacePipeline
from .inference import StreamingPredictor
from .people import PersonSeries
from .predictions import write_prediction_csv
from .video import VideoInfo

__all__ = ["person_stem", "timeline_path", "predict_people"]


def person_stem(stem: str, person_id: Union[int, str]) -> str:
    """The output stem of one person of the video ``stem`` (``person_id``
    ``"*"``: the glob pattern of every person's)."""
    return f"{stem}.person{person_id}"


def timeline_path(out_dir: Union[str, "os.PathLike[str]"], stem: str) -> Path:
    """The timeline plot of the video ``stem``."""
    return Path(out_dir) / f"{stem}.people.png"


def predict_people(model: torch.nn.Module, base: Any, settings: FaceSettings, info: VideoInfo,
                   device: Union[str, torch.device], precision: str,
                   batches: Iterable[Tuple[int, np.ndarray]], audio: Any = None,
                   progress: Optional[Callable[[int], object]] = None) -> List[dict]:
    """Predictions per person: a list of ``{"person": Person, "predictions":
    (T, outputs) float32 (NaN where not found), "face_found": (T,) bool}``,
    one per person kept, by id. ``batches`` yields the video's frame batches;
    ``audio`` (a :class:`~end2you_visual.predict.VideoAudio`) gives an
    audiovisual model its windows."""
    pipeline = FacePipeline.from_settings(settings, info.fps, faces="all")
    predictors, series = {}, PersonSeries(base.config["outputs"])
    done = 0
    for _, frames in batches:
        windows = audio.next(len(frames)) if audio is not None else None
        for pid, faces in pipeline.track(frames).items():
            if pid not in predictors:
                predictors[pid] = StreamingPredictor(model, device, precision, activate=True)
            out = predictors[pid](faces.crops, windows)
            out[~faces.found] = np.nan
            series.append(pid, done, out, faces.found)
        done += len(frames)
        if progress is not None:
            progress(len(frames))
    return [{"person": p, "predictions": series.values(p.id), "face_found": series.found(p.id)}
            for p in pipeline.people()]


def write_people(out_dir: Union[str, "os.PathLike[str]"], stem: str, times: np.ndarray,
                 people: List[dict], base: Any, plot: bool,
                 title: str) -> Dict[int, Tuple[Path, Optional[Path]]]:
    """The CSV (and plot) of each person and the video's timeline; returns
    ``{person id: (csv path, plot path or None)}``."""
    from .plots import plot_predictions, plot_timeline

    out_dir = Path(out_dir)
    written = {}
    for entry in people:
        pid = entry["person"].id
        name = person_stem(stem, pid)
        csv_path = out_dir / f"{name}.csv"
        write_prediction_csv(csv_path, times, base.label_names, entry["predictions"],
                             entry["face_found"], top_class=base.head_kind != "regression")
        plot_path = None
        if plot:
            plot_path = plot_predictions(times, entry["predictions"], None, base.label_names,
                                         out_dir / f"{name}.png",
                                         face_found=entry["face_found"],
                                         title=f"{title} · person {pid}", kind=base.head_kind)
        written[pid] = (csv_path, plot_path)
    if plot:
        plot_timeline(times, {e["person"].id: e["face_found"] for e in people},
                      timeline_path(out_dir, stem), title=f"{title} · who is visible when")
    return written
