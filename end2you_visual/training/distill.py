"""Knowledge distillation: a teacher model's outputs as the student's extra
targets, and unlabelled training files learnt from them alone
(``docs/distillation.md``); a part of :class:`~end2you_visual.training.Trainer`.

The teacher (``teacher``: a zoo name or a checkpoint) must see what the
student sees and say what it says: the same modality, head kind and outputs
(by name; a teacher with unnamed outputs ``output_0``... is taken in order).
It runs on the student's augmented inputs, in eval mode, without gradient and
under the run's autocast, and is never trained. Its loading leaves the
global random state as it was, so a run with ``distill_weight=0`` is the run
without a teacher.

The loss of a batch is ``(1 - w) * label_loss + w * distillation_loss``
(:func:`~end2you_visual.training.losses.distillation_loss`): the label loss
over the labelled windows' frames, the distillation loss over every window's
frames, so an unlabelled window contributes to the second term only. With
``feature_weight`` ``f > 0``, ``f * feature_loss`` is added
(:func:`~end2you_visual.training.losses.feature_loss`, over every window's
frames): the student's per-frame embeddings, mapped by a learned linear
projection (``projection``, trained with the student, kept in ``last.pt``
for resume, not part of the model), against the teacher's.

The checkpoint records the teacher's name and the SHA-256 of its weights; a
resumed run refuses a teacher whose weights differ.

The data side (which training files are unlabelled, their windows, the
sampler that mixes them in) is :func:`split_unlabelled`,
:func:`unlabelled_windows` and :func:`training_sampler`, used by
:mod:`.preparation`; the run's part is :class:`Distillation` (the teacher,
the projection, the loss; its entries of ``last.pt``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from ..data import WindowDataset
from ..errors import InputError
from ..inputs import TEST_NAMES
from ..models.checkpoint import state_dict_sha256
from ..models.temporal_head import default_label_names
from .losses import distillation_loss, feature_loss
from .sampler import MixedWindowSampler, WindowSampler

if TYPE_CHECKING:
    from ..data import SequenceFile
    from .config import TrainConfig
    from .parts import LossFn, RunModel

__all__ = ["Distillation", "split_unlabelled", "unlabelled_windows", "training_sampler",
           "UNLABELLED"]

UNLABELLED = "none"  # the label_kind of files generated without labels


# -------------------------------------------------------------------- data

def split_unlabelled(train_files: Sequence[SequenceFile], valid_files: Sequence[SequenceFile],
                     teacher: str | None) -> tuple[list[SequenceFile], list[SequenceFile]]:
    """``(labelled training files, unlabelled ones)``; unlabelled files
    need a ``teacher``, cannot validate and cannot be all the training data."""
    for f in valid_files:
        if f.label_kind == UNLABELLED:
            raise InputError(f.path, "holds no labels, so it cannot validate (--valid "
                                     "files need labels)")
    unlabelled = [f for f in train_files if f.label_kind == UNLABELLED]
    labelled = [f for f in train_files if f.label_kind != UNLABELLED]
    if unlabelled and not teacher:
        raise InputError(unlabelled[0].path, "holds no labels (label kind none): train on "
                                             "it with a --teacher, whose outputs are then "
                                             "its targets (docs/distillation.md), or "
                                             "generate it with label files")
    if unlabelled and not labelled:
        raise InputError(unlabelled[0].path, "holds no labels, and neither does any other "
                                             "training file: unlabelled sequences are "
                                             "mixed with labelled ones, which define the "
                                             "labels and validate; add labelled files")
    return labelled, unlabelled


def unlabelled_windows(files: Sequence[SequenceFile], window: int, stride: int | None,
                       audio: bool) -> WindowDataset | None:
    """The windows of the unlabelled training ``files`` (None without any),
    their test sequences left out."""
    if not files:
        return None
    return WindowDataset(list(files), window, stride,
                         sequence_filter=lambda s: str(s.metadata.get("split", "")).strip()
                         .lower() not in TEST_NAMES, audio=audio)


def training_sampler(indices: Sequence[int], first_unlabelled: int,
                     unlabelled: WindowDataset | None, count: int,
                     **kwargs: Any) -> WindowSampler:
    """The training WindowSampler over the labelled window ``indices``,
    drawing ``count`` of the ``unlabelled`` windows (numbered from
    ``first_unlabelled`` on) into each epoch."""
    if unlabelled is None:
        return WindowSampler(indices, **kwargs)
    pool = range(first_unlabelled, first_unlabelled + len(unlabelled))
    return MixedWindowSampler(indices, pool, count, **kwargs)


# -------------------------------------------------------------------- part

class Distillation:
    """The teacher's part of a run: its outputs on the student's inputs,
    the loss that mixes them with the labels, and the feature projection.

    Without a teacher (``teacher`` None) it does nothing and the step loop
    uses the label loss alone. ``config``: its ``teacher`` (name),
    ``distill_weight``, ``temperature``, ``feature_weight`` and ``out_dir``
    are read when used; ``head``: the run's head kind; ``loss_fn``: the
    label loss; ``autocast``: the teacher runs under the run's precision;
    ``record``: ``{name, sha256}`` of the teacher, kept in ``last.pt``;
    ``columns``: the teacher's outputs for the run's labels (None: all,
    in order); ``projection``: the learned map of the student's embeddings
    to the teacher's (None without feature matching). Build one with
    :meth:`load`.
    """

    def __init__(self, config: TrainConfig, *, head: str, loss_fn: LossFn,
                 autocast: AbstractContextManager[Any], teacher: RunModel | None = None,
                 record: dict[str, str] | None = None, columns: torch.Tensor | None = None,
                 projection: torch.nn.Linear | None = None) -> None:
        self.config, self.head, self.loss_fn, self.autocast = config, head, loss_fn, autocast
        self.teacher, self.record, self.columns = teacher, record, columns
        self.projection = projection
        # what runs the projection in the step: itself, or its DDP wrapper
        self.projection_net: torch.nn.Module | None = projection

    @classmethod
    def load(cls, config: TrainConfig, *, student: RunModel, head: str,
             label_names: Sequence[str], frame_size: int, audio_rate: float | None,
             device: torch.device, loss_fn: LossFn, autocast: AbstractContextManager[Any],
             notes: list[str]) -> Distillation:
        """The part for ``config.teacher`` (a zoo name or checkpoint; none:
        a part without a teacher): the teacher loaded and checked against
        the run (``head``, ``label_names``, the data's ``frame_size`` and
        ``audio_rate``), on ``device`` in eval mode without gradient, and
        the projection from ``student``'s embeddings when
        ``config.feature_weight``; what it did is added to ``notes``. The
        global random state is left as it was."""
        if not config.teacher:
            return cls(config, head=head, loss_fn=loss_fn, autocast=autocast)
        from ..zoo import resolve_model  # the zoo reads its registry: only when asked

        with torch.random.fork_rng(devices=[]):  # building it draws no numbers of the run
            teacher = resolve_model(config.teacher).model  # on the CPU until checked
        columns = _check_teacher(teacher, config, head, label_names, frame_size, audio_rate,
                                 device, notes)
        record = {"name": str(config.teacher), "sha256": state_dict_sha256(teacher)}
        teacher = teacher.to(device).eval().requires_grad_(False)
        if config.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
        notes.append(f"distilling from {config.teacher} ({teacher.head_kind} head "
                     f"{teacher.label_names}): loss = {1 - config.distill_weight:g} x label "
                     f"loss + {config.distill_weight:g} x distillation loss, temperature "
                     f"{config.temperature:g}")
        projection = _make_projection(config, student, teacher, device, notes)
        return cls(config, head=head, loss_fn=loss_fn, autocast=autocast, teacher=teacher,
                   record=record, columns=columns, projection=projection)

    def parameters(self) -> list[torch.nn.Parameter]:
        """What the optimiser trains besides the student: the projection's parameters."""
        return list(self.projection.parameters()) if self.projection is not None else []

    def distribute(self, device_ids: list[int] | None) -> None:
        """Run the projection under DistributedDataParallel (multi-process runs)."""
        if self.projection is not None:
            self.projection_net = torch.nn.parallel.DistributedDataParallel(
                self.projection, device_ids=device_ids)

    # ----------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """``teacher`` (``{name, sha256}`` or None) and ``projection`` (its
        state dict, or None)."""
        return {"teacher": self.record,
                "projection": (self.projection.state_dict() if self.projection is not None
                               else None)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's ``training`` dict: an InputError when
        the run was trained with a teacher whose weights differ."""
        before = state.get("teacher")
        if self.record is not None and before and before.get("sha256") != self.record["sha256"]:
            raise InputError(self.config.teacher, f"its weights differ from those of the "
                                                  f"teacher the run in "
                                                  f"{Path(self.config.out_dir)} was "
                                                  f"trained with (SHA-256 "
                                                  f"{before.get('sha256', '')[:12]}..., now "
                                                  f"{self.record['sha256'][:12]}...)")
        if self.projection is not None:
            self.projection.load_state_dict(state["projection"])

    # ------------------------------------------------------------------ loss

    @torch.no_grad()
    def teacher_outputs(self, inputs: tuple[torch.Tensor, ...], features: bool = False
                        ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The teacher's raw outputs (B, T, L) on the (augmented) ``inputs``;
        with ``features``, ``(outputs, embeddings (B, T, F))``."""
        if self.teacher is None:
            raise RuntimeError("this run has no teacher")
        with self.autocast:
            result = self.teacher(*inputs, return_features=features)
        if not features:
            return self._run_columns(result)
        out, feats = result
        return self._run_columns(out), feats

    def _run_columns(self, out: torch.Tensor) -> torch.Tensor:
        """The teacher's outputs ``out`` (B, T, L') for the run's labels (B, T, L)."""
        return out if self.columns is None else out.index_select(-1, self.columns)

    def loss(self, inputs: tuple[torch.Tensor, ...], out: torch.Tensor, labels: torch.Tensor,
             mask: torch.Tensor, labelled: torch.Tensor | None = None,
             features: torch.Tensor | None = None) -> torch.Tensor:
        """``(1 - w) * label loss + w * distillation loss`` of the student's
        outputs ``out`` (module doc), plus ``f * feature loss`` of its
        per-frame embeddings ``features`` (B, T, F) when given (feature
        matching); ``labelled`` (B,): False for the windows of unlabelled
        files (None: all labelled)."""
        cfg = self.config
        if features is None:
            target = cast(torch.Tensor, self.teacher_outputs(inputs))  # no features: outputs
        else:
            target, teacher_features = self.teacher_outputs(inputs, features=True)
        label_mask = mask if labelled is None else mask & labelled[:, None]
        distill = distillation_loss(out, target, self.head, cfg.temperature, mask)
        w = cfg.distill_weight
        loss = (1 - w) * self.loss_fn(out, labels, label_mask) + w * distill
        if features is not None:
            assert self.projection is not None and self.projection_net is not None
            projected = self.projection_net(features.to(self.projection.weight.dtype))
            loss = loss + cfg.feature_weight * feature_loss(projected, teacher_features, mask)
        return loss


# --------------------------------------------------------------- teacher checks

def _check_teacher(teacher: RunModel, config: TrainConfig, head: str,
                   label_names: Sequence[str], frame_size: int, audio_rate: float | None,
                   device: torch.device, notes: list[str]) -> torch.Tensor | None:
    """An InputError unless ``teacher`` sees what the student sees and says
    what it says; returns the teacher's output columns of the run's labels
    on ``device`` (None: its outputs in order)."""
    c = teacher.config
    modality = c.get("modality", "visual")  # visual, audio, audiovisual: "an"
    if modality != config.modality:
        raise InputError(config.teacher, f"is an {modality} model, but the teacher sees the "
                                         f"student's inputs: this run's --modality is "
                                         f"{config.modality}")
    if teacher.head_kind != head:
        raise InputError(config.teacher, f"has a {teacher.head_kind} head; its outputs are the "
                                         f"targets of this run's {head} head")
    if (modality != "visual" and audio_rate is not None
            and int(c["audio_rate"]) != int(round(audio_rate))):
        raise InputError(config.teacher, f"hears {c['audio_rate']} Hz audio; the data's is "
                                         f"{audio_rate:g} Hz")
    columns = _teacher_output_columns(teacher, config.teacher, head, label_names, notes)
    if "input_size" in c and c["input_size"] != frame_size:
        notes.append(f"teacher {config.teacher} was trained on {c['input_size']}x"
                     f"{c['input_size']} crops; it sees the data's {frame_size}x"
                     f"{frame_size}")
    return torch.tensor(columns, device=device) if columns is not None else None


def _teacher_output_columns(teacher: RunModel, name: str | None, head: str,
                            label_names: Sequence[str], notes: list[str]) -> list[int] | None:
    """The teacher's outputs for the run's labels, by name: None when
    they are its outputs in order, else their indices."""
    names, wanted = teacher.label_names, list(label_names)
    if names == wanted:
        return None
    if names == default_label_names(len(names)) and len(names) == len(wanted):
        notes.append(f"teacher {name}'s outputs are unnamed: taken to be {wanted}, in order")
        return None
    missing = [n for n in wanted if n not in names]
    if missing or (head == "multiclass" and len(names) != len(wanted)):
        raise InputError(name,
                         f"its outputs {names} do not fit this run's labels {wanted}"
                         + (f" (missing {missing})" if missing else
                            " (a multiclass teacher needs the run's classes, no others)"))
    return [names.index(n) for n in wanted]


def _make_projection(config: TrainConfig, student: RunModel, teacher: RunModel,
                     device: torch.device, notes: list[str]) -> torch.nn.Linear | None:
    """The learned map from the student's per-frame embeddings to the
    teacher's (``nn.Linear``) on ``device``, or None without feature
    matching. Its initialisation draws from its own seeded generator, so
    the run's random numbers are those of a run without it."""
    if not config.feature_weight:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        projection = torch.nn.Linear(student.num_features, teacher.num_features)
    notes.append(f"matching the teacher's {teacher.num_features} features per "
                 f"frame from the student's {student.num_features} through a learned "
                 f"projection, weight {config.feature_weight:g}")
    return projection.to(device)
