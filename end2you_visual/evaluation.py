"""`e2y-visual evaluate` on files: fit the post-processing chain
(:mod:`end2you_visual.postprocess`) on validation prediction and label
CSVs, or apply a saved chain to test prediction CSVs::

    from end2you_visual.evaluation import fit_chain_from_csvs, apply_chain_to_csvs
    chain, before, after = fit_chain_from_csvs(["out/valid/predictions"],
                                               ["out/valid/labels"])
    chain.save("chain.json")
    apply_chain_to_csvs(chain, ["out/test/predictions"], "out/test/post",
                        ["out/test/labels"])

Prediction CSVs are those of `test` (:mod:`end2you_visual.predictions`);
label CSVs (first column the time, then one column per output, matched by
file stem) are `test`'s ``labels/`` or your own: rows at other times than
the predictions (labels every 40 ms on 30 fps video) are brought to the
prediction times with `generate`'s interpolation (``interpolation``:
``previous``, ``nearest`` or ``linear``; :func:`end2you_visual.labels.align_labels`).
Files may have different frame rates: each is processed at its own.

:func:`evaluate` is the whole command: it checks its arguments as
`e2y-visual evaluate` does, fits or applies the chain and writes the
metrics JSON::

    from end2you_visual.evaluation import evaluate
    result = evaluate(["out/valid/predictions"], "chain.json",
                      label_paths=["out/valid/labels"], metrics_path="valid.json")
    print(result.chain.table())
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union, cast

import numpy as np

from .errors import ArgumentConflict, InputError
from .files import atomic_write_text, check_writable
from .labels import INTERPOLATIONS, align_labels, read_labels
from .postprocess import Chain, fill_gaps
from .predictions import SeriesFile, csv_paths, read_prediction_csvs, write_prediction_csv
from .metrics import ContinuousReport
from .ranges import check_choice
from .scoring import FRAME_SETS, ccc_line, score

__all__ = ["FrameReports", "pair_with_labels", "fit_chain_from_csvs", "apply_chain_to_csvs",
           "check_new_file", "evaluate", "Evaluation"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class FrameReports:
    """The metrics of the same predictions over two sets of frames:
    ``face_frames`` (frames whose ``face_found`` is 1, every frame of a file
    without that column: the frames the chain is fitted and scored on) and
    ``all_frames``. ``pooled``, ``per_file``, ``names``, ``files`` and
    ``headline`` are the face-frame report's (as before both were given);
    so is :meth:`to_dict`, with the all-frame report's under ``all_frames``."""

    face_frames: ContinuousReport
    all_frames: ContinuousReport

    pooled = property(lambda self: self.face_frames.pooled)
    per_file = property(lambda self: self.face_frames.per_file)
    names = property(lambda self: self.face_frames.names)
    files = property(lambda self: self.face_frames.files)
    headline = property(lambda self: self.face_frames.headline)

    def to_dict(self) -> dict:
        """The face-frame report's ``to_dict()`` (names, files, pooled,
        per_file) with ``"frames": "face_frames"`` and the all-frame
        report's under ``"all_frames"`` (JSON types)."""
        return {**self.face_frames.to_dict(), "frames": "face_frames",
                "all_frames": self.all_frames.to_dict()}

    def lines(self, title: str) -> List[str]:
        """``title (all frames): ...`` and ``title (face frames): ...``, the
        pooled CCCs as `test` prints its own (:func:`~end2you_visual.scoring.ccc_line`)."""
        return [ccc_line(title, frames, getattr(self, frames).headline) for frames in FRAME_SETS]


def pair_with_labels(preds: Sequence[SeriesFile],
                     label_paths: Union[PathLike, Sequence[PathLike]],
                     interpolation: str = "previous", tolerance: float = 1.0) -> List[np.ndarray]:
    """Label arrays (T_i, D) for each :class:`~end2you_visual.predictions.SeriesFile`
    in ``preds``, read from the label CSV of the same stem (files and/or
    folders) with the prediction output names as label columns (first
    column = time, see :func:`end2you_visual.labels.read_labels`).

    Label rows at the prediction times (within half a frame) are taken as
    they are; other label times are aligned to the prediction times (frame
    ``i`` at ``i / fps``) with ``interpolation``, as `generate` does, and
    must cover them within ``tolerance`` seconds. Extra label files are
    ignored.
    """
    if interpolation not in INTERPOLATIONS:
        raise InputError("--interpolation", f"must be one of {list(INTERPOLATIONS)}, "
                                            f"got {interpolation!r}")
    by_stem = {p.stem: p for p in csv_paths(label_paths)}
    missing = [f.stem for f in preds if f.stem not in by_stem]
    if missing:
        raise InputError(None, f"no label CSV for prediction file(s) {missing}")
    out = []
    for f in preds:
        track = read_labels(by_stem[f.stem], label_columns=f.names)
        half = 0.5 / f.fps
        if len(track.times) == len(f.time) and np.abs(track.times - f.time).max() <= half:
            out.append(np.asarray(track.values, dtype=np.float64))
            continue
        frame_times = np.arange(len(f.time)) / f.fps
        if np.abs(frame_times - f.time).max() > half:
            raise InputError(track.path, f"label times ({len(track.times)} rows) do not match "
                                         f"the prediction times of {f.path} ({len(f.time)} "
                                         "rows), which do not start at 0 to align them to")
        aligned = align_labels(track, len(f.time), f.fps, "video", interpolation, tolerance)
        out.append(np.asarray(aligned.labels, dtype=np.float64))
    return out


def _masks(files: Sequence[SeriesFile]) -> List[np.ndarray]:
    return [np.ones(len(f.time), bool) if f.face_found is None else f.face_found for f in files]


def _filled(f: SeriesFile) -> np.ndarray:
    try:
        return fill_gaps(f.values)
    except InputError as error:
        raise InputError(f.path, error.problem) from None


def _report(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], names: Sequence[str],
            masks: Sequence[np.ndarray], stems: Sequence[str]) -> FrameReports:
    return FrameReports(  # a regression head's report is continuous
        face_frames=cast(ContinuousReport, score(preds, labels, "regression", masks=masks,
                                                 names=names, files=stems)),
        all_frames=cast(ContinuousReport, score(preds, labels, "regression", names=names,
                                                files=stems)))


def fit_chain_from_csvs(pred_paths: Union[PathLike, Sequence[PathLike]],
                        label_paths: Union[PathLike, Sequence[PathLike]],
                        outputs: Optional[Sequence[str]] = None, interpolation: str = "previous",
                        **fit_args: Any) -> Tuple[Chain, FrameReports, FrameReports]:
    """Fit a :class:`~end2you_visual.postprocess.Chain` on validation
    prediction and label CSVs (each file at its own frame rate).

    Frames without a face (``face_found`` 0) are left out of the statistics;
    empty prediction cells are filled by :func:`~end2you_visual.postprocess.fill_gaps`
    before filtering. Returns ``(chain, before, after)``: the chain and the
    validation metrics before and after it, each a :class:`FrameReports`
    (over the face frames and over all frames).
    """
    files = read_prediction_csvs(pred_paths, outputs)
    labels = pair_with_labels(files, label_paths, interpolation)
    rates = [f.fps for f in files]
    preds = [_filled(f) for f in files]
    masks = _masks(files)
    chain = Chain.fit(preds, labels, rates, names=files[0].names, masks=masks, **fit_args)
    stems = [f.stem for f in files]
    before = _report(preds, labels, chain.names, masks, stems)
    after = _report(chain.apply(preds, rates), labels, chain.names, masks, stems)
    return chain, before, after


def check_new_file(path: PathLike, option: str = "--out", overwrite: bool = False) -> None:
    """Refuse a file output that cannot be written, or that exists (a finished
    output is never replaced unless ``overwrite``).

    Raises:
        InputError: naming ``option``, the file and ``--overwrite``.
    """
    check_writable(path, option, folder=False)
    if Path(path).exists() and not overwrite:
        raise InputError(f"{option} {path}", "already exists; use --overwrite to replace it, "
                                             "or choose another name")


def apply_chain_to_csvs(chain: Chain, pred_paths: Union[PathLike, Sequence[PathLike]],
                        out_dir: PathLike,
                        label_paths: Union[PathLike, Sequence[PathLike], None] = None,
                        overwrite: bool = False, interpolation: str = "previous"
                        ) -> Tuple[List[Path], Optional[FrameReports], Optional[FrameReports]]:
    """Apply ``chain`` to prediction CSVs (each at its own frame rate) and
    write them, same stems, under ``out_dir``. The output columns are the
    chain's names. Returns ``(written_paths, before, after)``;
    ``before``/``after`` are :class:`FrameReports` (over the face frames and
    over all frames) when ``label_paths`` is given, else None.

    Raises:
        InputError: ``out_dir`` cannot be written, or already holds a CSV of
            one of these stems (unless ``overwrite``; never an input file).
    """
    check_writable(out_dir, "--out")
    files = read_prediction_csvs(pred_paths, chain.names)
    out_dir = Path(out_dir)
    targets = [out_dir / f"{f.stem}.csv" for f in files]
    for f, path in zip(files, targets):
        if path.resolve() == f.path.resolve():
            raise InputError(path, "output would overwrite its input; choose another folder")
    existing = [p.name for p in targets if p.exists()]
    if existing and not overwrite:
        raise InputError(f"--out {out_dir}", f"already holds {', '.join(existing[:3])}"
                         + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
                         + "; use --overwrite to replace them, or choose another folder")
    labels = None if label_paths is None else pair_with_labels(files, label_paths, interpolation)
    preds = [_filled(f) for f in files]
    posts = chain.apply(preds, [f.fps for f in files])
    for f, path, q in zip(files, targets, posts):
        write_prediction_csv(path, f.time, f.names, q, f.face_found)
    if labels is None:
        return targets, None, None
    masks, stems = _masks(files), [f.stem for f in files]
    before = _report(preds, labels, chain.names, masks, stems)
    after = _report(posts, labels, chain.names, masks, stems)
    return targets, before, after


@dataclass
class Evaluation:
    """What :func:`evaluate` did.

    Attributes:
        chain: the chain fitted (and saved to ``out``) or applied.
        fitted: True when the chain was fitted, False when applied.
        written: the files written: the chain JSON (fitted), or the
            processed prediction CSVs (applied); not the metrics file.
        before, after: the metrics before and after the chain
            (:class:`FrameReports`), None without labels.
        metrics_path: the metrics JSON written, or None.
    """

    chain: Chain
    fitted: bool
    written: List[Path] = field(default_factory=list)
    before: Optional[FrameReports] = None
    after: Optional[FrameReports] = None
    metrics_path: Optional[Path] = None

    def ccc_lines(self) -> List[str]:
        """The pooled CCCs before and after the chain, over all frames and
        over the face frames, one line each, as `evaluate` prints them
        (none without labels)."""
        if self.before is None or self.after is None:
            return []
        return self.before.lines("CCC before") + self.after.lines("CCC after")

    def metrics_dict(self) -> Optional[dict]:
        """The content of the metrics JSON: ``{"before": ..., "after": ...}``
        (:meth:`FrameReports.to_dict`), or None without labels."""
        if self.before is None or self.after is None:
            return None
        return {"before": self.before.to_dict(), "after": self.after.to_dict()}


def _path_list(paths: Union[PathLike, Sequence[PathLike], None]) -> List[PathLike]:
    if paths is None:
        return []
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def evaluate(pred_paths: Union[PathLike, Sequence[PathLike]], out: PathLike,
             label_paths: Union[PathLike, Sequence[PathLike], None] = None, *,
             chain: Union[Chain, PathLike, None] = None,
             outputs: Optional[Sequence[str]] = None, interpolation: str = "previous",
             metrics_path: Optional[PathLike] = None, overwrite: bool = False) -> Evaluation:
    """`e2y-visual evaluate`: fit the post-processing chain on validation
    predictions and labels and save it to ``out`` (``chain`` None), or apply
    ``chain`` (a :class:`~end2you_visual.postprocess.Chain` or its saved
    JSON: the CLI's ``--apply``) to test predictions, writing the processed
    CSVs into the folder ``out`` (:func:`apply_chain_to_csvs`).

    Args:
        pred_paths: prediction CSVs and/or folders of them (``--pred``).
        out: the chain JSON to write (fit), or the output folder (apply).
        label_paths: label CSVs and/or folders (``--labels``), matched by
            stem; needed to fit, optional to apply (then no metrics).
        chain: the chain to apply (None: fit one).
        outputs: the output columns to fit on (default: all but
            time/face_found/top_class); the chain's own when applying.
        interpolation: label value at a prediction's time (see
            :func:`pair_with_labels`).
        metrics_path: also write the metrics before/after the chain as JSON
            there, atomically (:meth:`Evaluation.metrics_dict`); needs labels.
        overwrite: replace an existing chain file, processed CSVs or
            metrics file.

    Every output is checked before any work: it can be written, and no
    finished one is replaced unless ``overwrite``.

    Raises:
        ArgumentConflict: arguments that do not go together (fitting
            without labels, ``outputs`` with a chain to apply,
            ``metrics_path`` without labels); an InputError.
        InputError: an output that cannot be written or exists, a bad file.
    """
    pred_paths, label_paths = _path_list(pred_paths), _path_list(label_paths)
    if chain is None and not label_paths:
        raise ArgumentConflict("fitting a chain needs --labels (or use --apply)")
    if chain is not None and outputs:
        raise ArgumentConflict("--outputs is taken from the chain with --apply")
    if metrics_path is not None and not label_paths:
        raise ArgumentConflict("--metrics needs --labels")
    check_choice("--interpolation", interpolation, INTERPOLATIONS)
    if chain is None:
        check_new_file(out, "--out", overwrite)
    else:
        check_writable(out, "--out")
    if metrics_path is not None:
        check_new_file(metrics_path, "--metrics", overwrite)
    if chain is None:
        fitted, fit_before, fit_after = fit_chain_from_csvs(
            pred_paths, label_paths, list(outputs) if outputs else None, interpolation)
        fitted.save(out)
        result = Evaluation(fitted, True, [Path(out)], fit_before, fit_after)
    else:
        if not isinstance(chain, Chain):
            chain = Chain.load(chain)
        written, before, after = apply_chain_to_csvs(
            chain, pred_paths, out, label_paths or None, overwrite=overwrite,
            interpolation=interpolation)
        result = Evaluation(chain, False, list(written), before, after)
    if metrics_path is not None:
        atomic_write_text(metrics_path, json.dumps(result.metrics_dict(), indent=2) + "\n")
        result.metrics_path = Path(metrics_path)
    return result
