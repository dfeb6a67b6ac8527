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
"""
import torch

from ..data import WindowDataset
from ..errors import InputError
from ..inputs import TEST_NAMES
from ..models.checkpoint import state_dict_sha256
from ..models.temporal_head import default_label_names
from .losses import distillation_loss, feature_loss
from .sampler import MixedWindowSampler, WindowSampler, unlabelled_count

__all__ = ["Distillation"]

UNLABELLED = "none"  # the label_kind of files generated without labels


class Distillation:
    """Distillation in :class:`~end2you_visual.training.Trainer` (a mixin):
    the unlabelled training files and their windows, the teacher, the loss."""

    # ------------------------------------------------------------------ data

    def _split_unlabelled(self, train_files, valid_files):
        """``(labelled training files, unlabelled ones)``; unlabelled files
        need a teacher, cannot validate and cannot be all the training data."""
        for f in valid_files:
            if f.label_kind == UNLABELLED:
                raise InputError(f.path, "holds no labels, so it cannot validate (--valid "
                                         "files need labels)")
        unlabelled = [f for f in train_files if f.label_kind == UNLABELLED]
        labelled = [f for f in train_files if f.label_kind != UNLABELLED]
        if unlabelled and not self.config.teacher:
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

    def _prepare_unlabelled(self):
        """The unlabelled windows (``unlabelled_set``) and how many of them
        each epoch draws (``unlabelled_count``); after the labelled ones."""
        cfg = self.config
        self.unlabelled_set, self.unlabelled_count = None, 0
        if not self.unlabelled_files:
            return
        ds = WindowDataset(self.unlabelled_files, cfg.window, cfg.stride,
                           sequence_filter=lambda s: str(s.metadata.get("split", "")).strip()
                           .lower() not in TEST_NAMES, audio=self.uses_audio)
        if self.uses_audio:
            self._check_audio_windows(self.train_set, self.valid_set, ds)
        self.unlabelled_set = ds
        self.unlabelled_count = unlabelled_count(len(self.indices), len(ds),
                                                 cfg.unlabelled_share)
        self._notes.append(f"{len(ds)} unlabelled windows in {len(self.unlabelled_files)} "
                           f"file(s): {self.unlabelled_count} per epoch beside "
                           f"{len(self.indices)} labelled ones, learning the teacher's outputs "
                           "only")

    def _train_sampler(self, **kwargs):
        """The training WindowSampler, drawing the unlabelled windows in."""
        if self.unlabelled_set is None:
            return WindowSampler(self.indices, **kwargs)
        first = len(self.train_set)
        pool = range(first, first + len(self.unlabelled_set))
        return MixedWindowSampler(self.indices, pool, self.unlabelled_count, **kwargs)

    # --------------------------------------------------------------- teacher

    def _load_teacher(self):
        """The teacher on the device (eval, no gradient), or None; sets
        ``teacher_record`` ({name, sha256}) for the checkpoint."""
        from ..zoo import load_pretrained  # the zoo reads its registry: only when asked

        cfg = self.config
        self.teacher_record, self._teacher_columns = None, None
        if not cfg.teacher:
            return None
        with torch.random.fork_rng(devices=[]):  # building it draws no numbers of the run
            teacher = load_pretrained(cfg.teacher)
        self._check_teacher(teacher)
        self.teacher_record = {"name": str(cfg.teacher), "sha256": state_dict_sha256(teacher)}
        self._check_resumed_teacher()
        teacher = teacher.to(self.device).eval().requires_grad_(False)
        if cfg.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
        self._notes.append(f"distilling from {cfg.teacher} ({teacher.head_kind} head "
                           f"{teacher.label_names}): loss = {1 - cfg.distill_weight:g} x label "
                           f"loss + {cfg.distill_weight:g} x distillation loss, temperature "
                           f"{cfg.temperature:g}")
        return teacher

    def _check_teacher(self, teacher):
        cfg, c = self.config, teacher.config
        modality = c.get("modality", "visual")  # visual, audio, audiovisual: "an"
        if modality != cfg.modality:
            raise InputError(cfg.teacher, f"is an {modality} model, but the teacher sees the "
                                          f"student's inputs: this run's --modality is "
                                          f"{cfg.modality}")
        if teacher.head_kind != self.head:
            raise InputError(cfg.teacher, f"has a {teacher.head_kind} head; its outputs are the "
                                          f"targets of this run's {self.head} head")
        if modality != "visual" and int(c["audio_rate"]) != int(round(self.audio_rate)):
            raise InputError(cfg.teacher, f"hears {c['audio_rate']} Hz audio; the data's is "
                                          f"{self.audio_rate:g} Hz")
        columns = self._teacher_output_columns(teacher)
        if columns is not None:
            self._teacher_columns = torch.tensor(columns, device=self.device)
        if "input_size" in c and c["input_size"] != self.frame_size:
            self._notes.append(f"teacher {cfg.teacher} was trained on {c['input_size']}x"
                               f"{c['input_size']} crops; it sees the data's {self.frame_size}x"
                               f"{self.frame_size}")

    def _teacher_output_columns(self, teacher):
        """The teacher's outputs for the run's labels, by name: None when
        they are its outputs in order, else their indices."""
        names, wanted = teacher.label_names, list(self.label_names)
        if names == wanted:
            return None
        if names == default_label_names(len(names)) and len(names) == len(wanted):
            self._notes.append(f"teacher {self.config.teacher}'s outputs are unnamed: taken to "
                               f"be {wanted}, in order")
            return None
        missing = [n for n in wanted if n not in names]
        if missing or (self.head == "multiclass" and len(names) != len(wanted)):
            raise InputError(self.config.teacher,
                             f"its outputs {names} do not fit this run's labels {wanted}"
                             + (f" (missing {missing})" if missing else
                                " (a multiclass teacher needs the run's classes, no others)"))
        return [names.index(n) for n in wanted]

    def _check_resumed_teacher(self):
        ckpt = self._resume_ckpt
        before = (ckpt or {}).get("training", {}).get("teacher")
        if before and before.get("sha256") != self.teacher_record["sha256"]:
            raise InputError(self.config.teacher, f"its weights differ from those of the "
                                                  f"teacher the run in {self.out_dir} was "
                                                  f"trained with (SHA-256 "
                                                  f"{before.get('sha256', '')[:12]}..., now "
                                                  f"{self.teacher_record['sha256'][:12]}...)")

    # ------------------------------------------------------------------ loss

    def _make_projection(self, student):
        """The learned map from the student's per-frame embeddings to the
        teacher's (``nn.Linear``) on the device, or None without feature
        matching. Its initialisation draws from its own seeded generator,
        so the run's random numbers are those of a run without it."""
        cfg = self.config
        if self.teacher is None or not cfg.feature_weight:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            projection = torch.nn.Linear(student.num_features, self.teacher.num_features)
        self._notes.append(f"matching the teacher's {self.teacher.num_features} features per "
                           f"frame from the student's {student.num_features} through a learned "
                           f"projection, weight {cfg.feature_weight:g}")
        return projection.to(self.device)

    @torch.no_grad()
    def teacher_outputs(self, inputs, features=False):
        """The teacher's raw outputs (B, T, L) on the (augmented) ``inputs``;
        with ``features``, ``(outputs, embeddings (B, T, F))``."""
        with self.autocast:
            out = self.teacher(*inputs, return_features=features)
        out, feats = out if features else (out, None)
        if self._teacher_columns is not None:
            out = out.index_select(-1, self._teacher_columns)
        return (out, feats) if features else out

    def distilled_loss(self, inputs, out, labels, mask, labelled=None, features=None):
        """``(1 - w) * label loss + w * distillation loss`` of the student's
        outputs ``out`` (module doc), plus ``f * feature loss`` of its
        per-frame embeddings ``features`` (B, T, F) when given (feature
        matching); ``labelled`` (B,): False for the windows of unlabelled
        files (None: all labelled)."""
        cfg = self.config
        if features is None:
            target = self.teacher_outputs(inputs)
        else:
            target, teacher_features = self.teacher_outputs(inputs, features=True)
        label_mask = mask if labelled is None else mask & labelled[:, None]
        distill = distillation_loss(out, target, self.head, cfg.temperature, mask)
        w = cfg.distill_weight
        loss = (1 - w) * self.loss_fn(out, labels, label_mask) + w * distill
        if features is not None:
            projected = self.projection_net(features.to(self.projection.weight.dtype))
            loss = loss + cfg.feature_weight * feature_loss(projected, teacher_features, mask)
        return loss
