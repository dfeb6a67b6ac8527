"""`train --teacher`: the distillation loss by hand (KL at a temperature and
its T^2 scale, BCE on soft targets, MSE), a teacher never changed by
training, unlabelled windows that learn the teacher's outputs only, the
unlabelled share per epoch, resume bit for bit, and clear refusals (CPU, tiny)."""
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner

from end2you_visual.cli.main import cli
from end2you_visual.errors import InputError
from end2you_visual.models import build_model, read_checkpoint, save_checkpoint
from end2you_visual.models.build import build_model as build_any_model
from end2you_visual.training import TrainConfig, Trainer, train
from end2you_visual.training.losses import distillation_loss, feature_loss
from end2you_visual.training.sampler import MixedWindowSampler, unlabelled_count

SIZE = 16
CLASSES = ["a", "b", "c"]
TINY = dict(arch="resnet_tiny", hidden_size=8, num_layers=1, num_workers=0, progress=False,
            tensorboard=False, lr=1e-3, window=6, seed=0)

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ data

def write_classes(write_sequences, path, n_seq, labelled=True, seed=0):
    """``n_seq`` sequences of 12 frames whose class (one-hot, or no labels at
    all: label kind ``none``) shows in their brightness; one subject each."""
    def rows(q, n, rng):
        cls = rng.integers(0, len(CLASSES), n)
        frames = rng.integers(0, 30, (n, SIZE, SIZE, 3)) + cls[:, None, None, None] * 80
        labels = np.eye(len(CLASSES), dtype=np.float32)[cls] if labelled else None
        return frames.astype(np.uint8), labels

    return write_sequences(path, [12] * n_seq, rows, names=CLASSES if labelled else [],
                           kind="multiclass" if labelled else "none", size=SIZE, seed=seed,
                           metadata=lambda q: {"subject": f"{path.stem}{q}"})


@pytest.fixture
def labelled_file(tmp_path, write_sequences):
    return write_classes(write_sequences, tmp_path / "lab.h5", 6)


@pytest.fixture
def unlabelled_file(tmp_path, write_sequences):
    return write_classes(write_sequences, tmp_path / "unl.h5", 4, labelled=False, seed=1)


def save_teacher(path, head="multiclass", outputs=3, label_names=CLASSES, seed=7, **kw):
    torch.manual_seed(seed)
    model = build_model(**{**dict(arch="resnet_tiny", head=head, outputs=outputs,
                                  label_names=label_names, hidden_size=8, num_layers=1,
                                  input_size=SIZE), **kw})
    save_checkpoint(model, path)
    return path


@pytest.fixture
def teacher_file(tmp_path):
    return save_teacher(tmp_path / "teacher.pt")


# ------------------------------------------------------------- the loss by hand

def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_multiclass_loss_is_t_squared_times_kl_at_the_temperature():
    student = torch.tensor([[[1.0, 2.0, 0.0], [0.5, -1.0, 2.0], [9.0, 9.0, 9.0]]])
    teacher = torch.tensor([[[0.0, 1.0, 3.0], [2.0, 0.0, -1.0], [-9.0, 0.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])       # the third frame does not count
    s, t = student.numpy()[0, :2], teacher.numpy()[0, :2]
    p_s, p_t = _softmax(s / 2.0), _softmax(t / 2.0)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(axis=1)   # per frame, at T = 2
    expected = 4.0 * kl.mean()                              # x T^2, mean over 2 frames
    got = distillation_loss(student, teacher, "multiclass", temperature=2.0, mask=mask)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.82643, abs=1e-5)     # the number, pinned
    same = distillation_loss(teacher, teacher, "multiclass", temperature=2.0)
    assert same.item() == pytest.approx(0.0, abs=1e-7)


def test_the_t_squared_scale_keeps_the_loss_as_the_temperature_grows():
    student = torch.tensor([[[1.0, 2.0, 0.0, -1.0]]])
    teacher = torch.tensor([[[0.0, 1.0, 3.0, 0.5]]])
    for temperature in (1.0, 3.0, 7.5):
        p_s = _softmax(student.numpy()[0, 0] / temperature)
        p_t = _softmax(teacher.numpy()[0, 0] / temperature)
        kl = float((p_t * np.log(p_t / p_s)).sum())
        got = distillation_loss(student, teacher, "multiclass", temperature=temperature)
        assert got.item() == pytest.approx(temperature ** 2 * kl, rel=1e-5)
    # As T grows, T^2 KL tends to the squared distance of the centred logits
    # over 2C (Hinton et al.): the scale stays, where KL alone would vanish as 1/T^2.
    d = (student - teacher).numpy()[0, 0]
    limit = float(((d - d.mean()) ** 2).sum() / (2 * len(d)))
    far = distillation_loss(student.double(), teacher.double(), "multiclass", temperature=1e3)
    assert far.item() == pytest.approx(limit, rel=1e-3)
    assert limit == pytest.approx(1.4609375, rel=1e-7)


def test_multilabel_loss_is_t_squared_bce_on_the_teachers_sigmoids():
    student = torch.tensor([[[1.0, -2.0], [0.0, 3.0]]])
    teacher = torch.tensor([[[2.0, 0.0], [-1.0, 1.0]]])
    s, t = student.numpy()[0] / 3.0, teacher.numpy()[0] / 3.0
    q = 1 / (1 + np.exp(-t))
    p = 1 / (1 + np.exp(-s))
    bce = -(q * np.log(p) + (1 - q) * np.log(1 - p))
    got = distillation_loss(student, teacher, "multilabel", temperature=3.0)
    assert got.item() == pytest.approx(9.0 * bce.mean(), rel=1e-6)


def test_regression_loss_is_the_mse_and_ignores_the_temperature():
    student = torch.tensor([[[0.5, 1.0], [2.0, -1.0]]])
    teacher = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    mask = torch.tensor([[True, False]])
    for temperature in (1.0, 4.0):
        got = distillation_loss(student, teacher, "regression", temperature, mask=mask)
        assert got.item() == pytest.approx((0.25 + 0.0) / 2)
    full = distillation_loss(student, teacher, "regression")
    assert full.item() == pytest.approx((0.25 + 0 + 1 + 4) / 4)


def test_no_gradient_reaches_the_teacher_outputs():
    student = torch.tensor([[[1.0, 2.0, 0.0]]], requires_grad=True)
    teacher = torch.tensor([[[0.0, 1.0, 3.0]]], requires_grad=True)
    distillation_loss(student, teacher, "multiclass", 2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


# ------------------------------------------------------------- the sampler

def test_the_unlabelled_share_sets_the_windows_drawn_per_epoch():
    assert unlabelled_count(30, 7) == 7                  # default: each one once
    assert unlabelled_count(30, 7, share=0.25) == 10     # 10 of 40 windows
    assert unlabelled_count(30, 7, share=0.0) == 0
    assert unlabelled_count(30, 0, share=0.5) == 0       # nothing to draw
    sampler = MixedWindowSampler(range(6), pool=range(100, 104), count=10, seed=3)
    epochs = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == 16
        assert sorted(i for i in order if i < 100) == list(range(6))
        drawn = sorted(i for i in order if i >= 100)
        assert len(drawn) == 10 and set(drawn) == {100, 101, 102, 103}
        # the pool is taken whole, then again: no window more than once ahead
        assert max(drawn.count(i) for i in range(100, 104)) == 3
        epochs.append(order)
    assert epochs[0] != epochs[1]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[0]                    # the same again (resume)


# ------------------------------------------------------------- training

def test_training_leaves_the_teacher_unchanged(labelled_file, unlabelled_file, teacher_file,
                                               tmp_path):
    trainer = Trainer(TrainConfig(train=[str(labelled_file), str(unlabelled_file)],
                                  out_dir=str(tmp_path / "run"), epochs=2,
                                  teacher=str(teacher_file), augment=True, dropout=0.2, **TINY))
    try:
        before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
        student_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.fit()
        assert not trainer.teacher.training
        assert not any(p.requires_grad for p in trainer.teacher.parameters())
        assert all(p.grad is None for p in trainer.teacher.parameters())
        after = trainer.teacher.state_dict()
        assert before.keys() == after.keys()
        for name, value in before.items():
            assert torch.equal(value, after[name]), name
        assert any(not torch.equal(v, trainer.model.state_dict()[k])
                   for k, v in student_before.items())              # the student did learn
    finally:
        trainer.close()
    saved = read_checkpoint(teacher_file)["state_dict"]
    for name, value in before.items():
        assert torch.equal(value, saved[name]), name
    # the exported model is the student alone, and the run names its teacher
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert set(best["state_dict"]) == set(student_before)
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["training"]["teacher"]["name"] == str(teacher_file)
    assert len(last["training"]["teacher"]["sha256"]) == 64


def test_with_distill_weight_zero_the_teacher_changes_nothing(labelled_file, teacher_file,
                                                              tmp_path):
    common = dict(train=[str(labelled_file)], epochs=2, augment=True, dropout=0.2, **TINY)
    plain = train(out_dir=str(tmp_path / "plain"), **common)
    taught = train(out_dir=str(tmp_path / "taught"), teacher=str(teacher_file),
                   distill_weight=0.0, **common)
    a = read_checkpoint(tmp_path / "plain" / "last.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "taught" / "last.pt")["state_dict"]
    for name, value in a.items():
        assert torch.equal(value, b[name]), name
    assert [r["train_loss"] for r in plain.history] == [r["train_loss"] for r in taught.history]
    half = train(out_dir=str(tmp_path / "half"), teacher=str(teacher_file), **common)
    assert [r["train_loss"] for r in half.history] != [r["train_loss"] for r in plain.history]


def _batch_of(trainer, indices):
    batch = trainer.train_loader.dataset[indices]
    return trainer._to_device(batch)


def test_an_unlabelled_window_contributes_only_the_teacher_term(labelled_file, unlabelled_file,
                                                                teacher_file, tmp_path):
    trainer = Trainer(TrainConfig(train=[str(labelled_file), str(unlabelled_file)],
                                  out_dir=str(tmp_path / "run"), epochs=1, distill_weight=0.3,
                                  teacher=str(teacher_file), temperature=2.0, **TINY))
    try:
        first = len(trainer.train_set)
        assert len(trainer.unlabelled_set) == 8                 # 4 sequences x 2 windows
        inputs, labels, mask, labelled = _batch_of(trainer, [0, first, first + 3])
        assert labelled.tolist() == [True, False, False]
        assert labels[1:].abs().sum() == 0                       # no labels read for them
        trainer.model.eval()
        with torch.no_grad():
            out = trainer.model(*inputs)
            target = trainer.teacher(*inputs)
            loss = trainer.distilled_loss(inputs, out, labels, mask, labelled)
            distill = distillation_loss(out, target, "multiclass", 2.0, mask)
            label = trainer.loss_fn(out[:1], labels[:1], mask[:1])
            assert loss.item() == pytest.approx(0.7 * label.item() + 0.3 * distill.item(),
                                                rel=1e-6)
            # Only unlabelled windows: the teacher term alone, whatever their labels hold.
            only = [t[1:] for t in (out, labels, mask, labelled)]
            alone = trainer.distilled_loss(tuple(x[1:] for x in inputs), *only)
            expected = 0.3 * distillation_loss(out[1:], target[1:], "multiclass", 2.0, mask[1:])
            assert alone.item() == pytest.approx(expected.item(), rel=1e-6)
            only[1] = torch.ones_like(only[1])                  # labels would say class a
            assert trainer.distilled_loss(tuple(x[1:] for x in inputs), *only).item() == \
                pytest.approx(expected.item(), rel=1e-6)
        trainer.config.distill_weight = 0.0                     # no teacher term: nothing
        with torch.no_grad():
            assert trainer.distilled_loss(tuple(x[1:] for x in inputs), *only).item() == 0.0
    finally:
        trainer.close()


def test_the_epoch_draws_the_unlabelled_share(labelled_file, unlabelled_file, teacher_file,
                                              tmp_path):
    trainer = Trainer(TrainConfig(train=[str(labelled_file), str(unlabelled_file)],
                                  out_dir=str(tmp_path / "run"), epochs=1, unlabelled_share=0.75,
                                  teacher=str(teacher_file), **TINY))
    try:
        labelled = len(trainer.indices)                         # 5 training subjects x 2
        assert labelled == 10 and trainer.unlabelled_count == 30
        trainer.train_sampler.set_epoch(1)
        order = list(trainer.train_sampler)
        assert len(order) == 40
        assert sum(i >= len(trainer.train_set) for i in order) == 30
    finally:
        trainer.close()



def test_resume_with_a_teacher_matches_an_uninterrupted_run(labelled_file, unlabelled_file,
                                                            teacher_file, resume_after_kill):
    resume_after_kill(("train_loss", "valid_loss", "valid_accuracy", "best_epoch"),
                      train=[str(labelled_file), str(unlabelled_file)], augment=True,
                      dropout=0.2, teacher=str(teacher_file), distill_weight=0.6,
                      temperature=3.0, unlabelled_share=0.4, **TINY)


def _ddp_worker(rank, port, config, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig(**config))
    try:
        assert isinstance(trainer.net, torch.nn.parallel.DistributedDataParallel)
        assert not isinstance(trainer.teacher, torch.nn.parallel.DistributedDataParallel)
        trainer.train_sampler.set_epoch(1)
        seen = list(trainer.train_sampler)
        teacher = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
        trainer.fit()
        projection = trainer.projection.state_dict() if trainer.projection is not None else {}
        torch.save({"state": {**trainer.model.state_dict(),
                              **{f"projection.{k}": v for k, v in projection.items()}},
                    "seen": seen, "teacher": teacher,
                    "teacher_after": trainer.teacher.state_dict()}, f"{out}/rank{rank}.pt")
    finally:
        trainer.close()


@pytest.mark.parametrize("feature_weight", [0.0, 0.2])
def test_two_processes_distil_in_step(labelled_file, unlabelled_file, teacher_file, tmp_path,
                                      feature_weight):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = dict(train=[str(labelled_file), str(unlabelled_file)], out_dir=str(tmp_path / "r"),
                  epochs=1, teacher=str(teacher_file), unlabelled_share=0.5,
                  feature_weight=feature_weight, **TINY)
    mp.spawn(_ddp_worker, args=(port, config, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert any(k.startswith("projection.") for k in ranks[0]["state"]) == (feature_weight > 0)
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    for rank in ranks:
        for name, value in rank["teacher"].items():
            assert torch.equal(value, rank["teacher_after"][name]), name
    # The two shares make up the epoch: 10 labelled windows and 10 drawn unlabelled ones.
    one = MixedWindowSampler(range(10), range(10, 18), 10, seed=0)
    one.set_epoch(1)
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == sorted(one)


# ------------------------------------------------------------- refusals

def test_resume_refuses_other_teacher_settings_and_other_teacher_weights(
        labelled_file, teacher_file, tmp_path):
    common = dict(train=[str(labelled_file)], out_dir=str(tmp_path / "run"), **TINY)
    train(epochs=1, teacher=str(teacher_file), **common)
    for change in (dict(teacher=None), dict(distill_weight=0.9), dict(temperature=1.0)):
        settings = {**dict(teacher=str(teacher_file)), **change}
        with pytest.raises(InputError, match="used other settings") as err:
            train(epochs=2, resume=True, **{**common, **settings})
        name = next(iter(change)).replace("_", "-")
        assert f"--{name}" in str(err.value)
    save_teacher(teacher_file, seed=8)                          # same file, other weights
    with pytest.raises(InputError, match="weights differ") as err:
        train(epochs=2, resume=True, teacher=str(teacher_file), **common)
    assert str(teacher_file) in str(err.value)


@pytest.mark.parametrize("teacher, problem", [
    (dict(head="multilabel"), "has a multilabel head"),
    (dict(outputs=2, label_names=["a", "b"]), r"outputs \['a', 'b'\] do not fit"),
    (dict(label_names=["a", "b", "x"]), r"missing \['c'\]"),
])
def test_a_teacher_that_does_not_fit_is_refused(labelled_file, tmp_path, teacher, problem):
    path = save_teacher(tmp_path / "t.pt", **teacher)
    with pytest.raises(InputError, match=problem) as err:
        Trainer(TrainConfig(train=[str(labelled_file)], out_dir=str(tmp_path / "run"),
                            teacher=str(path), **TINY))
    assert str(path) in str(err.value)


def test_an_audio_teacher_for_a_visual_student_is_refused(labelled_file, tmp_path):
    path = tmp_path / "t.pt"
    save_checkpoint(build_model(modality="audio", head="multiclass", outputs=3,
                                label_names=CLASSES, hidden_size=8, num_layers=1,
                                audio_rate=16000), path)
    with pytest.raises(InputError, match="is an audio model") as err:
        Trainer(TrainConfig(train=[str(labelled_file)], out_dir=str(tmp_path / "run"),
                            teacher=str(path), **TINY))
    assert str(path) in str(err.value) and "--modality is visual" in str(err.value)


def test_a_teacher_with_reordered_or_unnamed_outputs_is_matched(labelled_file, tmp_path):
    path = save_teacher(tmp_path / "t.pt", label_names=["c", "a", "b"])
    trainer = Trainer(TrainConfig(train=[str(labelled_file)], out_dir=str(tmp_path / "run"),
                                  teacher=str(path), **TINY))
    try:
        assert trainer._teacher_columns.tolist() == [1, 2, 0]
        frames = torch.randint(0, 255, (1, 6, SIZE, SIZE, 3), dtype=torch.uint8)
        with torch.no_grad():
            raw = trainer.teacher(frames)
        assert torch.equal(trainer.teacher_outputs((frames,)), raw[..., [1, 2, 0]])
    finally:
        trainer.close()
    unnamed = save_teacher(tmp_path / "u.pt", label_names=None)
    trainer = Trainer(TrainConfig(train=[str(labelled_file)], out_dir=str(tmp_path / "run2"),
                                  teacher=str(unnamed), **TINY))
    try:
        assert trainer._teacher_columns is None
        assert any("outputs are unnamed" in note for note in trainer._notes)
    finally:
        trainer.close()


def test_unlabelled_data_needs_a_teacher_and_labelled_company(labelled_file, unlabelled_file,
                                                              teacher_file, tmp_path):
    with pytest.raises(InputError, match="train on it with a --teacher") as err:
        Trainer(TrainConfig(train=[str(labelled_file), str(unlabelled_file)],
                            out_dir=str(tmp_path / "a"), **TINY))
    assert str(unlabelled_file) in str(err.value)
    with pytest.raises(InputError, match="add labelled files"):
        Trainer(TrainConfig(train=[str(unlabelled_file)], out_dir=str(tmp_path / "b"),
                            teacher=str(teacher_file), **TINY))
    with pytest.raises(InputError, match="cannot validate"):
        Trainer(TrainConfig(train=[str(labelled_file)], valid=[str(unlabelled_file)],
                            out_dir=str(tmp_path / "c"), teacher=str(teacher_file), **TINY))
    with pytest.raises(InputError, match="--unlabelled-share.*needs a --teacher"):
        TrainConfig(train=[str(labelled_file)], unlabelled_share=0.5).check()


@pytest.mark.parametrize("option, value, problem", [
    ("--distill-weight", "1.5", "1.5 is not in the range 0<=x<=1"),
    ("--temperature", "0", "0.0 is not in the range x>0"),
    ("--unlabelled-share", "1", "1.0 is not in the range 0<=x<1"),
])
def test_the_cli_refuses_values_out_of_range(labelled_file, tmp_path, option, value, problem):
    result = CliRunner().invoke(cli, ["train", str(labelled_file), "--out", str(tmp_path / "r"),
                                      option, value])
    assert result.exit_code == 2
    assert problem in result.output


def test_the_cli_trains_with_a_teacher(labelled_file, unlabelled_file, teacher_file, tmp_path):
    result = CliRunner().invoke(cli, [
        "train", str(labelled_file), str(unlabelled_file), "--out", str(tmp_path / "r"),
        "--teacher", str(teacher_file), "--distill-weight", "0.7", "--temperature", "4",
        "--unlabelled-share", "0.5", "--arch", "resnet_tiny", "--hidden-size", "8",
        "--num-layers", "1", "--window", "6", "--epochs", "1", "--num-workers", "0",
        "--no-progress", "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    config = read_checkpoint(tmp_path / "r" / "last.pt")["training"]["config"]
    assert (config["teacher"], config["distill_weight"], config["temperature"],
            config["unlabelled_share"]) == (str(teacher_file), 0.7, 4.0, 0.5)
    assert math.isfinite(read_checkpoint(tmp_path / "r" / "last.pt")["training"]["history"][0][
        "train_loss"])


# ------------------------------------------------------------- feature matching

def test_feature_loss_is_the_mean_squared_difference_over_counted_frames():
    projected = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[0.0, 4.0], [1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # frame 1: ((1 - 0)^2 + (2 - 4)^2) / 2 = 2.5; frame 2: (1 + 1) / 2 = 1
    assert feature_loss(projected, teacher, mask).item() == pytest.approx((2.5 + 1.0) / 2)
    assert feature_loss(projected, teacher).item() == pytest.approx((2.5 + 1.0 + 25.0) / 3)
    assert feature_loss(projected, teacher, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        feature_loss(projected[..., :1], teacher)


@pytest.mark.parametrize("kind", ["visual", "audio", "audiovisual"])
def test_models_return_the_features_their_head_saw(kind):
    torch.manual_seed(0)
    common = dict(head="multiclass", outputs=3, hidden_size=8, num_layers=1)
    frames = torch.randint(0, 255, (2, 4, SIZE, SIZE, 3), dtype=torch.uint8)
    audio = torch.randn(2, 4, 320)
    visual = dict(arch="resnet_tiny", input_size=SIZE)
    audible = dict(audio_channels=(4, 8, 8), audio_rate=8000)
    settings = {"visual": visual, "audio": audible, "audiovisual": {**visual, **audible}}[kind]
    model = build_any_model(modality=kind, **settings, **common)
    inputs = {"visual": (frames,), "audio": (audio,), "audiovisual": (frames, audio)}[kind]
    model.eval()
    with torch.no_grad():
        out, features = model(*inputs, return_features=True)
        out_state, state, again = model(*inputs, return_state=True, return_features=True)
        assert torch.equal(out, model(*inputs)) and torch.equal(out, out_state)
        assert torch.equal(features, model.features(*inputs)) and torch.equal(features, again)
    assert features.shape == (2, 4, model.num_features) and state is not None


def test_feature_matching_trains_a_projection_kept_out_of_the_model(labelled_file, teacher_file,
                                                                    tmp_path):
    common = dict(train=[str(labelled_file)], epochs=2, teacher=str(teacher_file), **TINY)
    trainer = Trainer(TrainConfig(out_dir=str(tmp_path / "run"), feature_weight=0.5, **common))
    try:
        projection = trainer.projection
        assert (projection.in_features, projection.out_features) == (64, 64)
        before = projection.weight.detach().clone()
        inputs, labels, mask, labelled = _batch_of(trainer, [0, 1])
        trainer.model.eval()
        with torch.no_grad():
            out, features = trainer.model(*inputs, return_features=True)
            _, target_features = trainer.teacher(*inputs, return_features=True)
            plain = trainer.distilled_loss(inputs, out, labels, mask, labelled)
            matched = trainer.distilled_loss(inputs, out, labels, mask, labelled, features)
            term = feature_loss(projection(features), target_features, mask)
        assert matched.item() == pytest.approx(plain.item() + 0.5 * term.item(), rel=1e-6)
        trainer.fit()
        assert not torch.equal(before, projection.weight)          # the projection learnt
    finally:
        trainer.close()
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert not any(k.startswith("projection") for k in best["state_dict"])
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert torch.equal(last["training"]["projection"]["weight"], projection.weight.cpu())
    # without feature matching: no projection, and the same run as before
    off = train(out_dir=str(tmp_path / "off"), **common)
    zero = train(out_dir=str(tmp_path / "zero"), feature_weight=0.0, **common)
    assert [r["train_loss"] for r in off.history] == [r["train_loss"] for r in zero.history]
    assert read_checkpoint(tmp_path / "off" / "last.pt")["training"]["projection"] is None


def test_resume_with_feature_matching_matches_an_uninterrupted_run(labelled_file, teacher_file,
                                                                   resume_after_kill):
    resume_after_kill(("train_loss", "valid_loss", "valid_accuracy", "best_epoch"),
                      train=[str(labelled_file)], augment=True, teacher=str(teacher_file),
                      feature_weight=0.3, **TINY)


def test_feature_matching_needs_a_teacher(labelled_file, tmp_path):
    with pytest.raises(InputError, match="--feature-weight.*needs a --teacher"):
        train(train=[str(labelled_file)], out_dir=str(tmp_path / "r"), feature_weight=0.5,
              **TINY)
