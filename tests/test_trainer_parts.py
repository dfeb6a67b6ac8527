"""The Trainer's parts: early stopping by hand, each part's entries of
``last.pt`` (the flat format of every checkpoint written so far) and their
restoration on resume, the loss shared by the parts (CPU, tiny)."""
import math

import pytest
import torch

from end2you_visual.models import read_checkpoint
from end2you_visual.training import TrainConfig, Trainer
from end2you_visual.training.validation import EarlyStopping

TINY = dict(arch="resnet_tiny", hidden_size=8, num_layers=1, num_workers=0, progress=False,
            tensorboard=False, lr=1e-3, window=8)
# last.pt's "training" dict, in the order written since before the Trainer had parts
TRAINING_KEYS = ["epoch", "best_score", "best_epoch", "bad_epochs", "stopped", "metric",
                 "optimizer", "scheduler", "augment", "rng", "world_size", "history", "config",
                 "teacher", "projection"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_early_stopping_by_hand():
    higher = EarlyStopping("ccc", lower_is_better=False, patience=2)
    scores = [0.1, math.nan, 0.3, 0.2, 0.25]
    assert [higher.observe(e, s) for e, s in enumerate(scores, 1)] == \
        [True, False, True, False, False]
    assert (higher.best_score, higher.best_epoch, higher.bad_epochs) == (0.3, 3, 2)
    assert higher.should_stop and higher.stopped == "early_stopping"

    lower = EarlyStopping("loss", lower_is_better=True, patience=3)
    assert [lower.observe(e, s) for e, s in enumerate([math.nan, 0.5, 0.7, 0.4], 1)] == \
        [True, True, False, True]                       # NaN only fills the empty slot
    assert (lower.best_score, lower.best_epoch, lower.bad_epochs) == (0.4, 4, 0)
    assert not lower.should_stop and lower.stopped is None
    lower.complete()
    assert lower.state_dict() == {"best_score": 0.4, "best_epoch": 4, "bad_epochs": 0,
                                  "stopped": "completed", "metric": "loss"}


def test_early_stopping_continues_from_its_state():
    first = EarlyStopping("ccc", lower_is_better=False, patience=2)
    first.observe(1, 0.5)
    first.observe(2, 0.4)
    resumed = EarlyStopping("ccc", lower_is_better=False, patience=2)
    resumed.load_state_dict({**first.state_dict(), "epoch": 2, "history": []})
    assert resumed.state_dict() == first.state_dict()
    assert resumed.observe(3, 0.45) is False and resumed.stopped == "early_stopping"


def test_the_parts_entries_make_the_checkpoint_format(continuous_dir, tmp_path):
    config = dict(train=[str(continuous_dir)], out_dir=str(tmp_path / "r"), epochs=2, augment=True,
                  scheduler="cosine", **TINY)
    trainer = Trainer(TrainConfig(**config))
    try:
        assert list(trainer.early_stopping.state_dict()) == TRAINING_KEYS[1:6]
        assert list(trainer.steps.state_dict()) == TRAINING_KEYS[6:9]
        assert list(trainer.checkpointing.state_dict()) == TRAINING_KEYS[9:13]
        assert list(trainer.distillation.state_dict()) == TRAINING_KEYS[13:]
        assert trainer.distillation.state_dict() == {"teacher": None, "projection": None}
        trainer.train_epoch(1)
        trainer._save(1, True, trainer.validate())
    finally:
        trainer.close()
    saved = read_checkpoint(tmp_path / "r" / "last.pt")["training"]
    assert list(saved) == TRAINING_KEYS
    assert saved["epoch"] == 1 and saved["world_size"] == 1 and len(saved["rng"]) == 1

    # A resumed run's parts continue from those entries.
    resumed = Trainer(TrainConfig(**{**config, "resume": True}))
    try:
        assert resumed.start_epoch == 2
        assert resumed.early_stopping.state_dict() == {k: saved[k] for k in TRAINING_KEYS[1:6]}
        steps = resumed.steps.state_dict()
        assert steps["scheduler"] == saved["scheduler"]
        assert steps["augment"]["generator"].equal(saved["augment"]["generator"])
        for index, values in saved["optimizer"]["state"].items():
            for name, value in values.items():
                assert torch.equal(steps["optimizer"]["state"][index][name], value), name
        assert resumed.checkpointing.history == saved["history"] == []
        assert torch.equal(torch.get_rng_state(), saved["rng"][0]["torch"])
    finally:
        resumed.close()


def test_a_resume_applies_a_changed_lr_to_the_step_loop(continuous_dir, tmp_path):
    config = dict(train=[str(continuous_dir)], out_dir=str(tmp_path / "r"), epochs=1, **TINY)
    trainer = Trainer(TrainConfig(**config))
    try:
        trainer.fit()
    finally:
        trainer.close()
    resumed = Trainer(TrainConfig(**{**config, "resume": True, "epochs": 2, "lr": 0.01}))
    try:
        assert [g["lr"] for g in resumed.steps.optimizer.param_groups] == [0.01]
        assert any("lr 0.001 -> 0.01" in note for note in resumed._notes)
        assert [row["epoch"] for row in resumed.history] == [1]
    finally:
        resumed.close()


def test_the_loss_is_shared_by_the_parts_and_the_step_loop_calls_the_step(continuous_dir, tmp_path):
    trainer = Trainer(TrainConfig(train=[str(continuous_dir)], out_dir=str(tmp_path / "r"), epochs=1,
                                  **TINY))
    try:
        calls = []

        def loss_fn(out, labels, mask):
            calls.append(trainer.model.training)
            return out.float().pow(2).mean()

        trainer.loss_fn = loss_fn
        assert trainer.steps.loss_fn is trainer.validation.loss_fn is loss_fn
        assert trainer.distillation.loss_fn is loss_fn
        steps = []
        stats = trainer.steps.run_epoch(1, lambda batch: steps.append(batch) or
                                        trainer.steps.step(batch))
        assert stats["steps"] == len(steps) == len(trainer.train_loader)
        assert calls == [True] * len(steps)
        trainer.validate()
        assert calls[len(steps):] and not any(calls[len(steps):])  # eval mode
    finally:
        trainer.close()
    assert trainer.train_loader is None and trainer.valid_loader is None
