"""The set-up of a training run: the data (files, labels, the split,
re-sampling, frame weights, loaders) and the model (new, fine-tuned or
resumed; loss, optimiser, schedule); a part of
:class:`~end2you_visual.training.Trainer`.
"""
import os
from contextlib import nullcontext

import torch

from ..data import WindowDataset, check_label_names, open_files, require_audio
from ..errors import InputError
from ..framing import data_framing, with_model
from ..models import build_model
from ..models.build import model_inputs
from ..models.checkpoint import model_from_checkpoint
from .augment import Augmenter
from .config import metric_is_lower_better, resolve_auto
from .loader import WindowBatches
from .losses import FrameWeights, inverse_frequency_weights, make_loss
from .sampler import WindowSampler, resample_windows, sequence_labels, window_label_counts
from .split import split_sequences
from .state import seed_everything

__all__ = ['RunSetup']


class RunSetup:
    """The set-up of :class:`~end2you_visual.training.Trainer` (a mixin):
    data (checks, split, resampling, frame weights, loaders) and model
    (new, fine-tuned or resumed; loss, optimiser, schedule)."""

    def _prepare_data(self):
        cfg = self.config
        valid_files = open_files(cfg.valid) if cfg.valid else []
        train_files, self.unlabelled_files = self._split_unlabelled(open_files(cfg.train),
                                                                    valid_files)
        files = train_files + valid_files
        kinds = {f.label_kind for f in files}
        if len(kinds) != 1:
            raise InputError(None, "files of different label kinds: " + ", ".join(
                f"{f.path} ({f.label_kind})" for f in files))
        self.label_kind = kinds.pop()
        sizes = {f.frame_size for f in files + self.unlabelled_files}
        if len(sizes) != 1:
            raise InputError(None, f"files of different frame sizes {sorted(sizes)}")
        self.frame_size = sizes.pop()
        # How the training crops were cut (generate's settings in the files),
        # recorded in the checkpoint for predict and extract to cut the same.
        self.framing, framing_note = data_framing(train_files + self.unlabelled_files)
        if cfg.modality != "audio":  # an audio model sees no crops
            self._notes.append(framing_note or f"training crops framed with "
                                               f"{self.framing.describe()} (recorded in the "
                                               "checkpoints)")
        self.uses_audio = cfg.modality != "visual"
        self.audio_rate = (self._audio_rate(files + self.unlabelled_files) if self.uses_audio
                           else None)
        data_names = check_label_names(files)
        self.auto = resolve_auto(cfg, self.label_kind, self.device.type, files[0].path)
        self.head, self.loss_kind, self.metric = (self.auto["head"], self.auto["loss"],
                                                  self.auto["metric"])
        self.lower_is_better = metric_is_lower_better(self.metric)
        self.label_names, self.columns = self._select_labels(data_names, files[0].path)
        if self.columns is not None:
            self._columns_on_device = torch.tensor(self.columns, device=self.device)

        split = split_sequences(train_files, valid_files, cfg.split_by, cfg.valid_fraction,
                                cfg.seed)
        self.split = split
        self.train_set = WindowDataset(train_files, cfg.window, cfg.stride,
                                       sequence_filter=lambda s: (s.path, s.index) in split.train,
                                       audio=self.uses_audio)
        self.valid_set = WindowDataset(files, cfg.window,
                                       sequence_filter=lambda s: (s.path, s.index) in split.valid,
                                       audio=self.uses_audio)
        if self.uses_audio:
            self._check_audio_windows(self.train_set, self.valid_set)
        seq_labels = sequence_labels(self.train_set, cfg.skip_no_face)
        self.indices = list(range(len(self.train_set)))
        self.resample_report = None
        if cfg.resample:
            if self.head == "regression":
                raise InputError(None, "resample is for categorical labels, not continuous ones")
            counts, frames = window_label_counts(self.train_set, seq_labels, self.columns)
            self.indices, self.resample_report = resample_windows(
                counts, frames, self.label_names, cfg.rare_threshold, cfg.resample_repeats,
                cfg.resample_ignore)
        self._prepare_unlabelled()
        per_epoch = len(self.indices) + self.unlabelled_count
        per_process = per_epoch // self.dist.world_size
        if cfg.batch_size > per_process:
            raise InputError(None, f"batch size {cfg.batch_size} is larger than the data: "
                                   f"{per_epoch} training windows of {cfg.window} frames"
                                   + (f" over {self.dist.world_size} processes"
                                      if self.dist.enabled else ""))
        self.frame_weights = self._frame_weights(seq_labels)

    def _audio_rate(self, files):
        """The one audio sample rate of ``files`` (an InputError naming a file
        without audio, or files of different rates)."""
        require_audio(files, f"--modality {self.config.modality}")
        rates = {round(float(f.audio_rate), 3) for f in files}
        if len(rates) != 1:
            raise InputError(None, "files of different audio rates: " + ", ".join(
                f"{f.path} ({f.audio_rate:g} Hz)" for f in files))
        return rates.pop()

    @staticmethod
    def _check_audio_windows(*datasets):
        """Every sequence of ``datasets`` has audio windows of one length."""
        sizes = {ds.files[fi].audio_samples(info) for ds in datasets for fi, info in ds.sequences}
        if len(sizes) > 1:
            raise InputError(None, f"audio windows of different lengths {sorted(sizes)} "
                                   "samples: the files' frame rates differ (the audio model "
                                   "takes one window length)")

    def _select_labels(self, data_names, path):
        cfg = self.config
        if cfg.label_names is None:
            return list(data_names), None
        unknown = [n for n in cfg.label_names if n not in data_names]
        if unknown or not cfg.label_names:
            raise InputError(path, f"label names {cfg.label_names} do not match the data's "
                                   f"{data_names}" + (f" (unknown: {unknown})" if unknown else ""))
        if len(set(cfg.label_names)) != len(cfg.label_names):
            raise InputError(None, f"label names repeat: {cfg.label_names}")
        columns = [data_names.index(n) for n in cfg.label_names]
        return list(cfg.label_names), (None if columns == list(range(len(data_names)))
                                       else columns)

    def _frame_weights(self, seq_labels):
        cfg = self.config
        if cfg.class_weights is not None:
            if len(cfg.class_weights) != len(self.label_names):
                raise InputError(None, f"{len(cfg.class_weights)} class weights for "
                                       f"{len(self.label_names)} labels {self.label_names}")
            if self.loss_kind not in ("bce", "ce"):
                raise InputError(None, "class_weights need a bce or ce loss")
            return FrameWeights([float(w) for w in cfg.class_weights], 1.0, 1.0)
        if self.auto["weighting"] == "inverse":
            return inverse_frequency_weights(seq_labels, self.train_set, self.indices,
                                             self.columns)
        return None

    # ----------------------------------------------------------------- model

    def _prepare_model(self):
        cfg = self.config
        self.history, self.start_epoch = [], 1
        self._next_epoch = {}  # epoch -> loader iterator already reading it
        self.best_score, self.best_epoch, self.bad_epochs = None, 0, 0
        self.stopped = None
        resume_ckpt = self._resume_ckpt
        seed_everything(cfg.seed)
        if resume_ckpt is not None:
            model = model_from_checkpoint(resume_ckpt, self.last_path)
        elif cfg.init:
            model = self._load_init()
        else:
            model = self._new_model()
        self._record_input_size(model)
        # The data's framing, as its input size: not the init model's (None when
        # the files do not say: predict then keeps its default face settings).
        model.framing = with_model(self.framing, model.config)
        self._check_model(model)
        self.model = model.to(self.device)
        self.input_keys = model_inputs(model)  # what a batch gives the model
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.teacher = self._load_teacher()
        self.projection = self.projection_net = self._make_projection(self.model)
        trained = list(self.model.parameters())
        if self.projection is not None:
            trained += list(self.projection.parameters())
        self.optimizer = torch.optim.Adam(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, cfg.epochs)
                          if cfg.scheduler == "cosine" else None)
        self.augment = (Augmenter(self.frame_size, cfg.resize, cfg.brightness, cfg.saturation,
                                  seed=cfg.seed + 1, hflip=cfg.hflip)
                        if self.auto["augment"] else None)
        self.loss_fn = make_loss(self.loss_kind, self.frame_weights)
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                         if self.auto["precision"] == "bf16" else nullcontext())
        if resume_ckpt is not None:
            self._restore(resume_ckpt["training"])
        self.net = self.model
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.eval_net = self.net  # no DDP wrapper: ranks validate different numbers of batches
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
            if self.projection is not None:
                self.projection_net = torch.nn.parallel.DistributedDataParallel(
                    self.projection, device_ids=ids)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.train_sampler = self._train_sampler(shuffle=True, seed=cfg.seed,
                                                 rank=self.dist.rank,
                                                 world_size=self.dist.world_size)
        self.valid_sampler = WindowSampler(range(len(self.valid_set)), shuffle=False,
                                           rank=self.dist.rank, world_size=self.dist.world_size,
                                           pad=False)
        self.train_loader = self._loader(self.train_set, self.train_sampler, cfg.batch_size,
                                         unlabelled=self.unlabelled_set)
        self.valid_loader = self._loader(self.valid_set, self.valid_sampler,
                                         cfg.valid_batch_size or cfg.batch_size)

    def _new_model(self, **changes):
        """A new model of the run's modality, sized for the data."""
        cfg = self.config
        settings = dict(head=self.head, outputs=len(self.label_names), temporal=cfg.temporal,
                        hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                        label_names=self.label_names, dropout=cfg.dropout)
        if cfg.modality != "audio":
            settings.update(arch=cfg.arch, input_size=self.frame_size, grey=cfg.grey,
                            stem=cfg.stem)
        if cfg.modality != "visual":
            settings.update(modality=cfg.modality, audio_rate=int(round(self.audio_rate)))
        if cfg.modality == "audiovisual":
            settings.update(projection=cfg.projection, freeze_visual=cfg.freeze_visual)
        return build_model(**{**settings, **changes})

    def _load_init(self):
        from ..zoo import load_pretrained  # the zoo reads its registry: only when asked

        cfg = self.config
        model = load_pretrained(cfg.init, outputs=len(self.label_names), head=self.head,
                                label_names=self.label_names)
        init_modality = model.config.get("modality", "visual")
        if init_modality != cfg.modality:
            return self._init_branch(model, init_modality)
        if not cfg.keep_head:
            model.replace_head(head=self.head, outputs=len(self.label_names),
                               label_names=self.label_names)
        if model.config["temporal"] == "none" and cfg.temporal != "none" and cfg.window != 1:
            model = self._add_recurrence(model)
        self._notes.append(f"initialised from {cfg.init} (arch {model.config.get('arch', 'audio')}, "
                           f"temporal {model.config['temporal']}), new {self.head} head with "
                           f"{len(self.label_names)} outputs")
        return model

    def _init_branch(self, source, source_modality):
        """An audiovisual model whose visual branch starts from the visual
        model ``source`` (``--init`` of a visual zoo entry or checkpoint)."""
        cfg = self.config
        if not (cfg.modality == "audiovisual" and source_modality == "visual"):
            raise InputError(cfg.init, f"is a {source_modality} model; a {cfg.modality} run "
                                       f"can start from a {cfg.modality} model"
                                       + (" or a visual one (its visual branch)"
                                          if cfg.modality == "audiovisual" else ""))
        sc = source.config
        model = self._new_model(arch=sc["arch"], grey=sc.get("grey", False),
                                stem=sc.get("stem", "imagenet"), mean=sc["mean"], std=sc["std"])
        report = model.init_visual(source)
        self._notes.append(f"visual branch initialised from {cfg.init} (arch {sc['arch']}, "
                           f"{len(report.loaded)} tensors); audio, fusion and head new"
                           + (", visual CNN frozen" if cfg.freeze_visual else ""))
        return model

    def _add_recurrence(self, frame_model):
        """The paper's pretrain -> fine-tune step for a frame-level extractor
        (e.g. trained on images): its CNN under new recurrent layers."""
        cfg = self.config
        model = build_model(**{**frame_model.config, "temporal": cfg.temporal,
                               "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
                               "head": self.head, "outputs": len(self.label_names),
                               "label_names": self.label_names})
        model.extractor.load_state_dict(frame_model.extractor.state_dict())
        self._notes.append(f"frame-level {cfg.init}: its CNN under a new {cfg.num_layers}-layer "
                           f"{cfg.temporal}")
        return model

    def _record_input_size(self, model):
        """The model is trained on the data's crops: its config says their size
        (``test`` checks it, ``predict`` crops at it), not its origin's."""
        if "input_size" not in model.config:  # an audio model sees no frames
            return
        before = model.config.get("input_size")
        if before != self.frame_size:
            if self.config.init and self._resume_ckpt is None:
                self._notes.append(f"{self.config.init} was trained on {before}x{before} crops; "
                                   f"this run trains it on the data's {self.frame_size}x"
                                   f"{self.frame_size} (recorded as its input_size)")
            model.config["input_size"] = int(self.frame_size)

    def _check_model(self, model):
        cfg = model.config
        if cfg["head"] != self.head or cfg["outputs"] != len(self.label_names):
            raise InputError(self.last_path if self.config.resume else self.config.init,
                             f"the model has a {cfg['head']} head with {cfg['outputs']} outputs; "
                             f"the data needs {self.head} with {len(self.label_names)}")

    def _loader(self, dataset, sampler, batch_size, unlabelled=None):
        workers = min(self.config.num_workers, os.cpu_count() or 1)
        batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
        return torch.utils.data.DataLoader(
            WindowBatches(dataset, unlabelled), batch_size=None, sampler=batches,
            num_workers=workers, pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
            drop_last=False,
            generator=torch.Generator().manual_seed(self.config.seed))
