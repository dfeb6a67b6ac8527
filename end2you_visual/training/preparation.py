"""The set-up of a training run: the data (files, labels, the split,
re-sampling, frame weights: :func:`prepare_data` -> :class:`RunData`), the
model (new, fine-tuned or resumed: :func:`prepare_model`) and the loaders
(:func:`make_loader`); used by :class:`~end2you_visual.training.Trainer`
to build its parts.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..data import SequenceFile, WindowDataset, check_label_names, open_files, require_audio
from ..errors import InputError
from ..framing import Framing, data_framing, with_model
from ..models import build_model
from ..models.checkpoint import model_from_checkpoint
from .config import metric_is_lower_better, resolve_auto
from .distill import split_unlabelled, unlabelled_windows
from .distributed import DistInfo
from .loader import WindowBatches
from .losses import FrameWeights, inverse_frequency_weights
from .parts import RunModel
from .sampler import (ResampleReport, WindowSampler, resample_windows, sequence_labels,
                      unlabelled_count, window_label_counts)
from .split import Split, split_sequences

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ['RunData', 'prepare_data', 'prepare_model', 'make_loader', 'check_audio_windows']


@dataclass
class RunData:
    """The data of a run, as :func:`prepare_data` found and checked it.

    ``label_kind`` of the files; ``frame_size`` of their crops and their
    ``framing`` (how they were cut); ``uses_audio`` / ``audio_rate`` (Hz,
    None without audio); ``auto``: the ``auto`` settings decided
    (:func:`~.config.resolve_auto`), among them ``head``, ``loss_kind``,
    ``metric`` (``lower_is_better`` or not); ``label_names`` trained on,
    their ``columns`` in the files (None: all, in order); ``split``;
    ``train_set`` / ``valid_set`` (WindowDatasets) and the training window
    ``indices`` of an epoch (re-sampled: ``resample_report``);
    ``frame_weights`` (None: all 1); the ``unlabelled_files`` of
    distillation, their windows ``unlabelled_set`` (None without any) and
    how many of them each epoch draws (``unlabelled_count``).
    """

    label_kind: str
    frame_size: int
    framing: Framing | None
    uses_audio: bool
    audio_rate: float | None
    auto: dict[str, Any]
    head: str
    loss_kind: str
    metric: str
    lower_is_better: bool
    label_names: list[str]
    columns: list[int] | None
    split: Split
    train_set: WindowDataset
    valid_set: WindowDataset
    indices: list[int]
    resample_report: ResampleReport | None
    frame_weights: FrameWeights | None
    unlabelled_files: list[SequenceFile]
    unlabelled_set: WindowDataset | None
    unlabelled_count: int


def prepare_data(config: TrainConfig, device: torch.device, dist: DistInfo,
                 notes: list[str]) -> RunData:
    """Open and check the data of ``config`` for a run on ``device`` in
    ``dist``'s processes: an InputError naming the file and the problem for
    data that does not fit; what was decided is added to ``notes``."""
    cfg = config
    valid_files = open_files(cfg.valid) if cfg.valid else []
    train_files, unlabelled_files = split_unlabelled(open_files(cfg.train), valid_files,
                                                     cfg.teacher)
    files = train_files + valid_files
    kinds = {f.label_kind for f in files}
    if len(kinds) != 1:
        raise InputError(None, "files of different label kinds: " + ", ".join(
            f"{f.path} ({f.label_kind})" for f in files))
    label_kind = kinds.pop()
    sizes = {f.frame_size for f in files + unlabelled_files}
    if len(sizes) != 1:
        raise InputError(None, f"files of different frame sizes {sorted(sizes)}")
    frame_size = sizes.pop()
    # How the training crops were cut (generate's settings in the files),
    # recorded in the checkpoint for predict and extract to cut the same.
    framing, framing_note = data_framing(train_files + unlabelled_files)
    if cfg.modality != "audio":  # an audio model sees no crops
        notes.append(framing_note or f"training crops framed with "
                                     f"{framing.describe() if framing else None} (recorded in "
                                     "the checkpoints)")
    uses_audio = cfg.modality != "visual"
    audio_rate = _audio_rate(files + unlabelled_files, cfg.modality) if uses_audio else None
    data_names = check_label_names(files)
    auto = resolve_auto(cfg, label_kind, device.type, files[0].path)
    head, loss_kind, metric = auto["head"], auto["loss"], auto["metric"]
    label_names, columns = _select_labels(cfg.label_names, data_names, files[0].path)

    split = split_sequences(train_files, valid_files, cfg.split_by, cfg.valid_fraction,
                            cfg.seed)
    train_set = WindowDataset(train_files, cfg.window, cfg.stride,
                              sequence_filter=lambda s: (s.path, s.index) in split.train,
                              audio=uses_audio)
    valid_set = WindowDataset(files, cfg.window,
                              sequence_filter=lambda s: (s.path, s.index) in split.valid,
                              audio=uses_audio)
    if uses_audio:
        check_audio_windows(train_set, valid_set)
    seq_labels = sequence_labels(train_set, cfg.skip_no_face)
    indices = list(range(len(train_set)))
    resample_report = None
    if cfg.resample:  # a regression head with resample was refused by resolve_auto
        counts, frames = window_label_counts(train_set, seq_labels, columns)
        indices, resample_report = resample_windows(
            counts, frames, label_names, cfg.rare_threshold, cfg.resample_repeats,
            cfg.resample_ignore)
    unlabelled_set, n_unlabelled = _unlabelled(cfg, unlabelled_files, train_set, valid_set,
                                               len(indices), uses_audio, notes)
    per_epoch = len(indices) + n_unlabelled
    per_process = per_epoch // dist.world_size
    if cfg.batch_size > per_process:
        raise InputError(None, f"batch size {cfg.batch_size} is larger than the data: "
                               f"{per_epoch} training windows of {cfg.window} frames"
                               + (f" over {dist.world_size} processes"
                                  if dist.enabled else ""))
    frame_weights = _frame_weights(cfg, auto, loss_kind, label_names, columns, seq_labels,
                                   train_set, indices)
    return RunData(label_kind=label_kind, frame_size=frame_size, framing=framing,
                   uses_audio=uses_audio, audio_rate=audio_rate, auto=auto, head=head,
                   loss_kind=loss_kind, metric=metric,
                   lower_is_better=metric_is_lower_better(metric), label_names=label_names,
                   columns=columns, split=split, train_set=train_set, valid_set=valid_set,
                   indices=indices, resample_report=resample_report,
                   frame_weights=frame_weights, unlabelled_files=unlabelled_files,
                   unlabelled_set=unlabelled_set, unlabelled_count=n_unlabelled)


def _unlabelled(cfg: TrainConfig, files: list[SequenceFile], train_set: WindowDataset,
                valid_set: WindowDataset, n_labelled: int, uses_audio: bool,
                notes: list[str]) -> tuple[WindowDataset | None, int]:
    """The unlabelled windows (distillation) and how many of them each
    epoch draws beside its ``n_labelled`` labelled ones."""
    ds = unlabelled_windows(files, cfg.window, cfg.stride, uses_audio)
    if ds is None:
        return None, 0
    if uses_audio:
        check_audio_windows(train_set, valid_set, ds)
    count = unlabelled_count(n_labelled, len(ds), cfg.unlabelled_share)
    notes.append(f"{len(ds)} unlabelled windows in {len(files)} file(s): {count} per epoch "
                 f"beside {n_labelled} labelled ones, learning the teacher's outputs only")
    return ds, count


def _audio_rate(files: Sequence[SequenceFile], modality: str) -> float:
    """The one audio sample rate of ``files`` (an InputError naming a file
    without audio, or files of different rates)."""
    require_audio(files, f"--modality {modality}")
    rates = {round(float(f.audio_rate or 0), 3) for f in files}  # all have audio
    if len(rates) != 1:
        raise InputError(None, "files of different audio rates: " + ", ".join(
            f"{f.path} ({f.audio_rate:g} Hz)" for f in files))
    return rates.pop()


def check_audio_windows(*datasets: WindowDataset) -> None:
    """Every sequence of ``datasets`` has audio windows of one length."""
    sizes = {ds.files[fi].audio_samples(info) or 0 for ds in datasets
             for fi, info in ds.sequences}
    if len(sizes) > 1:
        raise InputError(None, f"audio windows of different lengths {sorted(sizes)} "
                               "samples: the files' frame rates differ (the audio model "
                               "takes one window length)")


def _select_labels(wanted: list[str] | None, data_names: list[str], path: Any
                   ) -> tuple[list[str], list[int] | None]:
    """The label names trained on (``wanted``, default the data's) and
    their columns in the data (None: all, in order)."""
    if wanted is None:
        return list(data_names), None
    unknown = [n for n in wanted if n not in data_names]
    if unknown or not wanted:
        raise InputError(path, f"label names {wanted} do not match the data's "
                               f"{data_names}" + (f" (unknown: {unknown})" if unknown else ""))
    if len(set(wanted)) != len(wanted):
        raise InputError(None, f"label names repeat: {wanted}")
    columns = [data_names.index(n) for n in wanted]
    return list(wanted), (None if columns == list(range(len(data_names))) else columns)


def _frame_weights(cfg: TrainConfig, auto: dict[str, Any], loss_kind: str,
                   label_names: list[str], columns: list[int] | None, seq_labels: Any,
                   train_set: WindowDataset, indices: list[int]) -> FrameWeights | None:
    if cfg.class_weights is not None:
        if len(cfg.class_weights) != len(label_names):
            raise InputError(None, f"{len(cfg.class_weights)} class weights for "
                                   f"{len(label_names)} labels {label_names}")
        if loss_kind not in ("bce", "ce"):
            raise InputError(None, "class_weights need a bce or ce loss")
        return FrameWeights([float(w) for w in cfg.class_weights], 1.0, 1.0)
    if auto["weighting"] == "inverse":
        return inverse_frequency_weights(seq_labels, train_set, indices, columns)
    return None


# ------------------------------------------------------------------- model

def prepare_model(config: TrainConfig, data: RunData, resume: dict[str, Any] | None,
                  last_path: Path, notes: list[str]) -> RunModel:
    """The run's model (on the CPU): resumed from the checkpoint ``resume``
    (read from ``last_path``), initialised from ``config.init`` or new;
    sized for ``data`` and recording its framing. An InputError when it
    does not fit the data; what was done is added to ``notes``."""
    model: RunModel
    if resume is not None:
        model = model_from_checkpoint(resume, last_path)
    elif config.init:
        model = _load_init(config, config.init, data, notes)
    else:
        model = _new_model(config, data)
    _record_input_size(model, config, data.frame_size, resume is not None, notes)
    # The data's framing, as its input size: not the init model's (None when
    # the files do not say: predict then keeps its default face settings).
    model.framing = with_model(data.framing, model.config)
    _check_model(model, data, last_path if config.resume else config.init)
    return model


def _new_model(cfg: TrainConfig, data: RunData, **changes: Any) -> RunModel:
    """A new model of the run's modality, sized for the data."""
    settings = dict(head=data.head, outputs=len(data.label_names), temporal=cfg.temporal,
                    hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                    label_names=data.label_names, dropout=cfg.dropout)
    if cfg.modality != "audio":
        settings.update(arch=cfg.arch, input_size=data.frame_size, grey=cfg.grey,
                        stem=cfg.stem)
    if cfg.modality != "visual":
        settings.update(modality=cfg.modality, audio_rate=int(round(data.audio_rate or 0)))
    if cfg.modality == "audiovisual":
        settings.update(projection=cfg.projection, freeze_visual=cfg.freeze_visual)
    return build_model(**{**settings, **changes})


def _load_init(cfg: TrainConfig, init: str, data: RunData, notes: list[str]) -> RunModel:
    """The model of ``init`` (``cfg.init``: a zoo name or checkpoint) made ready for
    the data: a new head, recurrent layers over a frame-level model, or an
    audiovisual model around a visual one."""
    from ..zoo import load_pretrained  # the zoo reads its registry: only when asked

    model: RunModel = load_pretrained(init, outputs=len(data.label_names), head=data.head,
                                      label_names=data.label_names)
    init_modality = model.config.get("modality", "visual")
    if init_modality != cfg.modality:
        return _init_branch(cfg, data, model, init_modality, notes)
    if not cfg.keep_head:
        model.replace_head(head=data.head, outputs=len(data.label_names),
                           label_names=data.label_names)
    if model.config["temporal"] == "none" and cfg.temporal != "none" and cfg.window != 1:
        model = _add_recurrence(cfg, data, model, notes)
    notes.append(f"initialised from {cfg.init} (arch {model.config.get('arch', 'audio')}, "
                 f"temporal {model.config['temporal']}), new {data.head} head with "
                 f"{len(data.label_names)} outputs")
    return model


def _init_branch(cfg: TrainConfig, data: RunData, source: RunModel,
                 source_modality: str, notes: list[str]) -> RunModel:
    """An audiovisual model whose visual branch starts from the visual
    model ``source`` (``--init`` of a visual zoo entry or checkpoint)."""
    if not (cfg.modality == "audiovisual" and source_modality == "visual"):
        raise InputError(cfg.init, f"is a {source_modality} model; a {cfg.modality} run "
                                   f"can start from a {cfg.modality} model"
                                   + (" or a visual one (its visual branch)"
                                      if cfg.modality == "audiovisual" else ""))
    sc = source.config
    model = _new_model(cfg, data, arch=sc["arch"], grey=sc.get("grey", False),
                       stem=sc.get("stem", "imagenet"), mean=sc["mean"], std=sc["std"])
    report = model.init_visual(source)
    notes.append(f"visual branch initialised from {cfg.init} (arch {sc['arch']}, "
                 f"{len(report.loaded)} tensors); audio, fusion and head new"
                 + (", visual CNN frozen" if cfg.freeze_visual else ""))
    return model


def _add_recurrence(cfg: TrainConfig, data: RunData, frame_model: RunModel,
                    notes: list[str]) -> RunModel:
    """The paper's pretrain -> fine-tune step for a frame-level extractor
    (e.g. trained on images): its CNN under new recurrent layers."""
    model: RunModel = build_model(**{**frame_model.config, "temporal": cfg.temporal,
                                     "hidden_size": cfg.hidden_size,
                                     "num_layers": cfg.num_layers, "head": data.head,
                                     "outputs": len(data.label_names),
                                     "label_names": data.label_names})
    model.extractor.load_state_dict(frame_model.extractor.state_dict())
    notes.append(f"frame-level {cfg.init}: its CNN under a new {cfg.num_layers}-layer "
                 f"{cfg.temporal}")
    return model


def _record_input_size(model: RunModel, cfg: TrainConfig, frame_size: int,
                       resumed: bool, notes: list[str]) -> None:
    """The model is trained on the data's crops: its config says their size
    (``test`` checks it, ``predict`` crops at it), not its origin's."""
    if "input_size" not in model.config:  # an audio model sees no frames
        return
    before = model.config.get("input_size")
    if before != frame_size:
        if cfg.init and not resumed:
            notes.append(f"{cfg.init} was trained on {before}x{before} crops; this run "
                         f"trains it on the data's {frame_size}x{frame_size} (recorded as "
                         "its input_size)")
        model.config["input_size"] = int(frame_size)


def _check_model(model: RunModel, data: RunData, source: Any) -> None:
    """An InputError naming ``source`` unless the model's head fits the data."""
    cfg = model.config
    if cfg["head"] != data.head or cfg["outputs"] != len(data.label_names):
        raise InputError(source,
                         f"the model has a {cfg['head']} head with {cfg['outputs']} outputs; "
                         f"the data needs {data.head} with {len(data.label_names)}")


# ----------------------------------------------------------------- loaders

def make_loader(dataset: WindowDataset, sampler: WindowSampler, batch_size: int, *,
                num_workers: int, device: torch.device, seed: int,
                unlabelled: WindowDataset | None = None) -> torch.utils.data.DataLoader:
    """Batches of ``dataset``'s windows (and ``unlabelled``'s, numbered after
    them) in ``sampler``'s order, read by up to ``num_workers`` processes
    (pinned memory on CUDA)."""
    workers = min(num_workers, os.cpu_count() or 1)
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
    return torch.utils.data.DataLoader(
        WindowBatches(dataset, unlabelled), batch_size=None, sampler=batches,
        num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        drop_last=False,
        generator=torch.Generator().manual_seed(seed))
