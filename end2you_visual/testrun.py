"""`e2y-visual test`: predict every sequence of HDF5 files, score the
predictions and write them (the input of `e2y-visual evaluate`)::

    from end2you_visual.testrun import run_test
    result = run_test(model, ["data/test"], "out/test", plot=True)
    result.metrics["metrics"]["pooled"]["arousal"]["ccc"]

The predictions come from the streaming engine
(:func:`end2you_visual.inference.predict_sequences`), the metrics from
:func:`end2you_visual.scoring.score`, the files' format from
:mod:`end2you_visual.predictions`.
"""
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch

from .data import SequenceFile, SequenceInfo, name_labels, open_files
from .devices import resolve_device
from .errors import InputError
from .files import check_writable
from .inference import _check_options, predict_sequences
from .choices import SPLITS
from .ranges import check_choice, check_number
from .inputs import SPLIT_NAMES
from .models.checkpoint import unwrap_model
from .predictions import SequencePrediction, unique_stems, write_prediction_csv, write_predictions_h5
from .scoring import FRAME_SETS, ccc_line, frame_cccs, label_kind_of, score
from .zoo import resolve_model

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["run_test", "TestResult", "check_model_fits", "check_test_out", "earlier_outputs",
           "format_headline", "SPLITS"]


# ---------------------------------------------------------------- checks

def check_model_fits(model: torch.nn.Module,
                     files: Sequence[SequenceFile]) -> List[Optional[np.ndarray]]:
    """Per file, the label columns matching the model's outputs (None: unlabelled).

    A labelled file must have the label kind of the model's head
    (regression -> continuous, multilabel -> multilabel, multiclass ->
    multiclass) and a label column for every output name; a multiclass
    file must have exactly the model's classes (in any order).

    Raises:
        InputError: naming the first file that does not fit.
    """
    base: Any = unwrap_model(model)
    names, head = base.label_names, base.head_kind
    kind = label_kind_of(head)
    columns: List[Optional[np.ndarray]] = []
    for f in files:
        if f.label_kind == "none" or not f.label_names:
            columns.append(None)
            continue
        what = f"the model ({head} head, outputs {names})"
        if f.label_kind != kind:
            raise InputError(f.path, f"has {f.label_kind} labels {f.label_names}, which "
                             f"{what} cannot be tested on (it needs {kind} labels)")
        missing = [n for n in names if n not in f.label_names]
        extra = [n for n in f.label_names if n not in names] if kind == "multiclass" else []
        if missing or extra:
            raise InputError(f.path, f"label names {f.label_names} do not match {what}"
                             + (f": no label for {missing}" if missing else "")
                             + (f"; classes the model does not know: {extra}" if extra else ""))
        columns.append(np.array([f.label_names.index(n) for n in names]))
    return columns


def _read_rows(seqfile: SequenceFile, info: SequenceInfo, cols: Optional[np.ndarray], kind: str
               ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Timestamps, face_found and targets (or None) of one sequence; checks labels."""
    clip = seqfile.read(info, 0, info.length, frames=False)
    targets = None
    if cols is not None:
        targets = np.asarray(clip.labels, np.float32)[:, cols]
        bad = ~np.isfinite(targets).all(axis=1)
        if bad.any():
            raise InputError(seqfile.path, f"sequence {info.name!r}: labels hold NaN or "
                             f"infinity at row {int(np.argmax(bad))} (of the sequence)")
        if kind != "continuous" and not np.isin(targets, (0.0, 1.0)).all():
            raise InputError(seqfile.path, f"sequence {info.name!r}: {kind} labels must be 0/1")
        if kind == "multiclass" and not (targets.sum(axis=1) == 1).all():
            row = int(np.argmax(targets.sum(axis=1) != 1))
            raise InputError(seqfile.path, f"sequence {info.name!r}: multiclass labels must be "
                             f"one-hot (row {row} is not)")
    return (np.asarray(clip.timestamps, np.float64), np.asarray(clip.face_found, bool), targets)


# ------------------------------------------------------------------- run_test

@dataclass
class TestResult:
    """What :func:`run_test` wrote and measured."""

    __test__ = False  # not a pytest test class

    out_dir: Path
    label_names: list
    sequences: list                   # SequencePrediction per sequence
    csv_paths: list
    predictions_path: Path
    label_paths: list = field(default_factory=list)  # labels/<sequence>.csv
    metrics_path: Optional[Path] = None  # None when no file has labels
    metrics: Optional[dict] = None    # the content of metrics.json
    plot_paths: list = field(default_factory=list)
    seconds: float = 0.0              # model time (reading + inference)
    warnings: list = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(len(s.time) for s in self.sequences)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def headline(self) -> str:
        """The lines `test` prints of the metrics (:func:`format_headline`)."""
        return format_headline(self.metrics)


def earlier_outputs(out_dir: PathLike) -> List[Path]:
    """The files of an earlier :func:`run_test` in ``out_dir`` (the only
    files ``overwrite=True`` removes): ``predictions/*.csv``,
    ``labels/*.csv``, ``predictions.h5``, ``metrics.json``, ``plots/*.png``."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [out_dir / n for n in ("predictions.h5", "metrics.json")]
    found = [p for p in found if p.is_file()]
    for sub, pattern in (("predictions", "*.csv"), ("labels", "*.csv"), ("plots", "*.png")):
        if (out_dir / sub).is_dir():
            found += sorted(p for p in (out_dir / sub).glob(pattern) if p.is_file())
    return found


def check_test_out(out_dir: PathLike, overwrite: bool = False) -> List[Path]:
    """Refuse an ``out_dir`` that cannot be written, or that holds an earlier
    test run's outputs (unless ``overwrite``): a finished run is never
    replaced, nor mixed with a new one, unless asked.

    Raises:
        InputError: naming the folder (and ``--overwrite``).
    """
    check_writable(out_dir, "--out")
    old = earlier_outputs(out_dir)
    if old and not overwrite:
        shown = ", ".join(str(p.relative_to(out_dir)) for p in old[:3])
        more = f" and {len(old) - 3} more" if len(old) > 3 else ""
        raise InputError(out_dir, f"already holds the outputs of a test run ({shown}{more}); "
                         "use --overwrite to replace them, or choose another --out")
    return old


def run_test(model: Union[PathLike, torch.nn.Module],
             data_paths: Union[PathLike, Iterable[PathLike]], out_dir: PathLike,
             window: Optional[int] = 150, device: Union[str, torch.device] = "auto",
             include_no_face: bool = True, plot: bool = False, lanes: int = 8,
             precision: str = "auto", max_plots: int = 100,
             end2you_fps: Optional[float] = None, workers: Optional[int] = None,
             static_shapes: bool = False,
             progress: Union[bool, Callable[[int], object], None] = None,
             overwrite: bool = False, split: str = "all",
             label_names: Optional[Sequence[str]] = None) -> TestResult:
    """Predict every sequence of HDF5 files and score the predictions.

    Writes into ``out_dir``:

    * ``predictions/<sequence>.csv``: ``time``, one column per output
      (named by ``model.label_names``, activated: values or probabilities),
      ``face_found`` (1/0): the format ``e2y-visual evaluate`` reads
      (:mod:`end2you_visual.predictions`);
    * ``labels/<sequence>.csv`` for each labelled sequence: ``time`` and
      one column per output, the labels of the very frames predicted (the
      ``--labels`` of ``e2y-visual evaluate``);
    * ``predictions.h5``: everything for programs
      (:func:`~end2you_visual.predictions.load_predictions`);
    * ``metrics.json`` when some file has labels: the head's metrics
      (:func:`~end2you_visual.scoring.score`) under the key ``metrics``
      and, for continuous labels, the pooled CCC per output over all
      frames and over the face frames under ``ccc`` (``{"all_frames":
      {...}, "face_frames": {...}}``, :func:`~end2you_visual.scoring.frame_cccs`);
    * with ``plot``: ``plots/<sequence>.png`` (predictions against the
      labels, at most ``max_plots`` sequences; a one-frame sequence as
      single points) and, for multiclass data, ``plots/confusion.png``.

    Nothing is written before all predictions and metrics are computed;
    then the files go to a hidden staging folder in ``out_dir`` and are
    moved into place (``os.replace``) only when all of them are complete:
    an error leaves nothing half-written. An ``out_dir`` holding an earlier
    run's outputs is refused before any work unless ``overwrite``; then
    those files (:func:`earlier_outputs`, nothing else) are removed just
    before the new ones move in, so runs are never mixed.

    Args:
        model: a VisualModel, or a registered name / checkpoint path.
        data_paths: HDF5 files and/or folders.
        out_dir: output folder (created).
        window: frames per forward pass (state carried across windows);
            None or 0 (the CLI's ``--window 0``): whole sequences.
        include_no_face: score frames without a face too (False: only
            frames with ``face_found``).
        lanes: sequences predicted side by side (see :func:`predict_sequences`).
        end2you_fps: frame rate for End2You files (they store none).
        label_names: names of the label columns of End2You files, which
            call them ``label_0``, ``label_1``... (e.g. ``["arousal",
            "valence"]``, in column order), so that they match the model's
            outputs; files that name their labels must name them so
            (:func:`~end2you_visual.data.name_labels`).
        workers, static_shapes: see :func:`predict_sequences`.
        progress: ``progress(frames)`` after each step (see
            :func:`predict_sequences`), or True: a tqdm bar over all the
            frames to predict.
        overwrite: replace the outputs of an earlier run in ``out_dir``.
        split: ``"all"``, or only the sequences of this split (``train``,
            ``valid``, ``test``: the ``split`` column of `generate`'s input
            CSV, kept in each sequence's metadata).

    Raises:
        InputError: a bad device, an ``out_dir`` that cannot be written or
            holds an earlier run (without ``overwrite``), unreadable data,
            labels that do not fit the model's outputs (naming the file,
            before any prediction), NaN labels.
    """
    window, lanes = _check_options(window, lanes, precision, workers=workers)[:2]
    max_plots = check_number("max_plots", max_plots, 0, integer=True)
    check_choice("--split", split, SPLITS)
    if end2you_fps is not None:
        end2you_fps = check_number("--end2you-fps", end2you_fps, 0, min_open=True)
    device = resolve_device(device)
    out_dir = Path(out_dir)
    check_test_out(out_dir, overwrite)
    resolved = resolve_model(model, device)
    model, title = resolved.model, resolved.title
    base: Any = resolved.base
    files = open_files(data_paths, end2you_fps=end2you_fps)
    if label_names is not None:
        name_labels(files, label_names)
    columns = check_model_fits(base, files)
    kind = label_kind_of(base.head_kind)
    sequences = _select(files, split)
    cols_of = {id(f): c for f, c in zip(files, columns)}
    rows = [_read_rows(f, info, cols_of[id(f)], kind) for f, info in sequences]
    warned = _warnings(base, files, sequences)

    bar = _bar(sum(info.length for _, info in sequences)) if progress is True else None
    started = time.perf_counter()
    preds: List[Any] = [None] * len(sequences)
    try:
        for size in sorted({f.frame_size for f, _ in sequences}):
            index = [q for q, (f, _) in enumerate(sequences) if f.frame_size == size]
            out = predict_sequences(model, [sequences[q] for q in index], window=window,
                                    lanes=lanes, device=device, precision=precision,
                                    workers=workers, static_shapes=static_shapes,
                                    progress=bar.update if bar is not None else
                                    (progress if callable(progress) else None))
            for q, p in zip(index, out):
                preds[q] = p
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started

    stems = unique_stems([info.name for _, info in sequences],
                         [f.path.stem for f, _ in sequences])
    results = [SequencePrediction(stem, str(f.path), info.name, info.fps, t, p, face, y,
                                  str(info.metadata.get("split", "")))
               for stem, (f, info), p, (t, face, y) in zip(stems, sequences, preds, rows)]
    metrics = _metrics(results, base, kind, include_no_face, window)
    return _write_outputs(out_dir, results, base, metrics, plot, max_plots, seconds,
                          warned, kind, window, title, overwrite)


def _select(files: Sequence[SequenceFile], split: str
            ) -> List[Tuple[SequenceFile, SequenceInfo]]:
    """The ``(file, sequence)`` pairs of ``split`` (one of SPLITS, checked by
    :func:`run_test`; ``"all"``: every one)."""
    sequences = [(f, info) for f in files for info in f.sequences]
    if split == "all":
        return sequences
    names = SPLIT_NAMES[split]
    chosen = [(f, info) for f, info in sequences
              if str(info.metadata.get("split", "")).strip().lower() in names]
    if not chosen:
        found = sorted({str(info.metadata["split"]) for _, info in sequences
                        if "split" in info.metadata})
        raise InputError("--split", f"no sequence of split {split!r} ({', '.join(names)}) in "
                         "the data "
                         + (f"(its splits: {found})" if found else
                            "(it records no split: give generate an input CSV with a "
                            "split column)"))
    return chosen


def _bar(total: int) -> Any:
    """The progress bar of :func:`run_test`: frames to predict, ends at 100 %
    (a ``tqdm``, which has no type hints)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="test", leave=False)


def _warnings(base: Any, files: Sequence[SequenceFile],
              sequences: Sequence[Tuple[SequenceFile, SequenceInfo]]) -> List[str]:
    out = []
    size = base.config.get("input_size")
    for f in files:
        if size and f.frame_size != size:
            out.append(f"{f.path}: frames are {f.frame_size}x{f.frame_size} but the model "
                       f"expects {size}x{size}")
    for f, info in sequences:
        if info.length == 0:
            out.append(f"{f.path}: sequence {info.name!r} has no frames")
    for message in out:
        warnings.warn(message, stacklevel=3)
    return out


def _metrics(results: Sequence[SequencePrediction], base: Any, kind: str,
             include_no_face: bool, window: Optional[int]) -> Optional[Dict[str, Any]]:
    labelled = [r for r in results if r.labels is not None and len(r.time)]
    if not labelled:
        return None
    names = base.label_names
    keep = [np.ones(len(r.time), bool) if include_no_face else r.face_found for r in labelled]
    summary: Dict[str, Any] = {
        "label_kind": kind, "head": base.head_kind, "outputs": names,
        "include_no_face": bool(include_no_face), "window": window,
        "files": [r.name for r in labelled],
        "unlabelled": [r.name for r in results if r.labels is None],
        "frames": int(sum(k.sum() for k in keep)),
        "frames_total": int(sum(len(r.time) for r in labelled))}
    if summary["frames"] == 0:
        summary["metrics"] = None
        summary["error"] = "every labelled frame is excluded (no face found)"
        return summary
    report = score([r.predictions for r in labelled],
                   [cast(np.ndarray, r.labels) for r in labelled],  # labelled: not None
                   base.head_kind, masks=keep, names=names, files=[r.name for r in labelled])
    summary["metrics"] = report.to_dict()
    if kind == "continuous":  # both pooled CCCs, whichever frames `metrics` scores
        summary["ccc"] = frame_cccs([r.predictions for r in labelled],
                                    [cast(np.ndarray, r.labels) for r in labelled],
                                    [r.face_found for r in labelled], names)
    return summary


def format_headline(metrics: Optional[Dict[str, Any]]) -> str:
    """The few lines `test` prints of a run's metrics (the content of its
    ``metrics.json``, :attr:`TestResult.metrics`):

    * continuous labels: the pooled CCC per output over all frames and over
      the face frames, one :func:`~end2you_visual.scoring.ccc_line` each
      (``CCC (all frames): arousal 0.5000, valence 0.2500``);
    * multiclass: ``accuracy 0.7500, UAR 0.6667, macro F1 0.6000``;
    * multilabel: ``macro AUC 0.8, macro F1 0.5`` (JSON numbers: ``null``
      where undefined);
    * no scored frame: the reason (``metrics["error"]``), else ``no metrics``.
    """
    metrics = metrics or {}
    report = metrics.get("metrics")
    if not report:
        return metrics.get("error", "no metrics")
    if metrics["label_kind"] == "continuous":
        return "\n".join(ccc_line("CCC", frames, metrics["ccc"][frames]) for frames in FRAME_SETS)
    if metrics["label_kind"] == "multiclass":
        return (f"accuracy {report['accuracy']:.4f}, UAR {report['uar']:.4f}, "
                f"macro F1 {report['macro_f1']:.4f}")
    return (f"macro AUC {json.dumps(report['macro_auc'])}, "
            f"macro F1 {json.dumps(report['macro_f1'])}")


def _write_outputs(out_dir: Path, results: List[SequencePrediction], base: Any,
                   metrics: Optional[Dict[str, Any]], plot: bool, max_plots: int,
                   seconds: float, warned: List[str], kind: str, window: Optional[int],
                   title: str, overwrite: bool) -> TestResult:
    """Write everything into a hidden staging folder, then move it into ``out_dir``
    (with ``overwrite``, the earlier run's files are removed first)."""
    names = base.label_names
    created = not out_dir.exists()
    stage = out_dir / f".partial-{os.getpid()}"
    try:
        (stage / "predictions").mkdir(parents=True, exist_ok=True)
        for r in results:
            write_prediction_csv(stage / "predictions" / f"{r.name}.csv", r.time, names,
                                 r.predictions, r.face_found, top_class=kind != "continuous")
        for r in results:
            if r.labels is not None:
                write_prediction_csv(stage / "labels" / f"{r.name}.csv", r.time, names, r.labels)
        write_predictions_h5(stage / "predictions.h5", results, names, base.head_kind, kind,
                             window, base.config)
        if metrics is not None:
            (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n",
                                                encoding="utf-8")
        if plot:
            _plots(stage / "plots", results, names, metrics, kind, max_plots, title)
        for old in check_test_out(out_dir, overwrite):  # still refused without overwrite
            old.unlink()
        moved = _move_into(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    csv_paths = [out_dir / "predictions" / f"{r.name}.csv" for r in results]
    plots = sorted(p for p in moved if p.parent.name == "plots")
    order = {f"{r.name}.png": i for i, r in enumerate(results)}
    plots.sort(key=lambda p: order.get(p.name, len(order)))
    return TestResult(out_dir=out_dir, label_names=names, sequences=results,
                      csv_paths=csv_paths, predictions_path=out_dir / "predictions.h5",
                      label_paths=[out_dir / "labels" / f"{r.name}.csv" for r in results
                                   if r.labels is not None],
                      metrics_path=out_dir / "metrics.json" if metrics is not None else None,
                      metrics=metrics, plot_paths=plots, seconds=seconds, warnings=warned)


def _move_into(stage: Path, out_dir: Path) -> List[Path]:
    """``os.replace`` every file of ``stage`` to the same place under ``out_dir``."""
    moved = []
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        target = out_dir / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved.append(target)
    return moved


def _plots(folder: Path, results: Sequence[SequencePrediction], names: List[str],
           metrics: Optional[Dict[str, Any]], kind: str, max_plots: int,
           title: str) -> List[Path]:
    from .plots import plot_confusion, plot_predictions

    paths = []
    for r in [r for r in results if len(r.time)][:max_plots]:
        paths.append(plot_predictions(r.time, r.predictions, r.labels, names,
                                      folder / f"{r.name}.png", face_found=r.face_found,
                                      title=f"{r.name} · model {title}", kind=kind))
    if kind == "multiclass" and metrics is not None and metrics.get("metrics"):
        paths.append(plot_confusion(metrics["metrics"]["confusion"], names,
                                    folder / "confusion.png"))
    return paths
