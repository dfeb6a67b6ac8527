"""Training: both regimes end to end, losses by hand, resume, early stopping,
NaN handling, bad options, augmentation, recipes and the CLI (CPU, tiny)."""
import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from end2you_visual.data import WindowDataset, open_files
from end2you_visual.errors import InputError
from end2you_visual.models import load_checkpoint, read_checkpoint
from end2you_visual.training import (Augmenter, NonFiniteLossError, TrainConfig, Trainer,
                                     inverse_frequency_weights, make_loss, resample_windows,
                                     sequence_labels, split_sequences, train,
                                     window_label_counts)
from end2you_visual.training import preparation as preparation_module
from end2you_visual.training import steps as steps_module
from end2you_visual.training.subnormals import flush_denormals, zero_subnormals_

REPO = Path(__file__).resolve().parents[1]
SIZE = 16
TINY = dict(arch="resnet_tiny", hidden_size=8, num_layers=1, num_workers=0, progress=False,
            tensorboard=False, lr=1e-3)
EMOTIONS = ["neutral", "happy", "contempt", "surprise"]


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ data

@pytest.fixture
def write_labels(write_sequences):
    def write(path, sequences, names, kind, subjects=None, seed=0):
        """Sequences given as 0/1 label arrays (n, L); pixels tell the labels apart."""
        def rows(q, n, rng):
            labels = np.asarray(sequences[q], np.float32)
            colour = (labels @ np.linspace(40, 220, len(names)))[:, None, None, None]
            frames = np.clip(rng.integers(0, 30, (n, SIZE, SIZE, 3)) + colour, 0, 255)
            return frames.astype(np.uint8), labels

        return write_sequences(path, [len(labels) for labels in sequences], rows, names=names,
                               kind=kind, size=SIZE, seed=seed,
                               metadata=(lambda q: {"subject": subjects[q]}) if subjects else None)
    return write


def random_multilabel(n_seq, length, rng):
    seqs = []
    for _ in range(n_seq):
        lab = np.zeros((length, len(EMOTIONS)), np.float32)
        lab[:, 0] = 1
        k = rng.integers(1, 4)
        lab[rng.integers(0, length, 3), k] = 1
        seqs.append(lab)
    return seqs


@pytest.fixture
def multilabel_dir(tmp_path, write_labels):
    folder = tmp_path / "multi"
    rng = np.random.default_rng(0)
    write_labels(folder / "m.h5", random_multilabel(8, 12, rng), EMOTIONS, "multilabel",
                 subjects=[f"p{i}" for i in range(8)])
    return folder


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------- end to end

def test_pretraining_regime_end_to_end(multilabel_dir, tmp_path):
    out = tmp_path / "pre"
    result = train(train=[str(multilabel_dir)], out_dir=str(out), window=6, batch_size=2,
                   epochs=2, resample=True, rare_threshold=0.2, resample_ignore=["neutral"],
                   augment=True, **{**TINY, "num_workers": 1})
    assert result.head == "multilabel" and result.metric == "auc"
    assert result.stopped == "completed" and result.epochs_run == 2
    assert result.resample["windows_after"] > result.resample["windows_before"]
    assert set(result.resample["before"]) == set(EMOTIONS)
    rows = read_csv(out / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "valid_loss", "valid_auc", "valid_f1", "train_fps"} <= set(rows[0])
    model = load_checkpoint(out / "best.pt")
    assert model.config["head"] == "multilabel" and model.label_names == EMOTIONS
    assert (out / "train.log").read_text().count("frames/s") == 2


def test_finetuning_regime_from_a_pretrained_checkpoint(multilabel_dir, continuous_dir, tmp_path):
    pre = train(train=[str(multilabel_dir)], out_dir=str(tmp_path / "pre"), window=6,
                epochs=1, **TINY)
    pretrained = load_checkpoint(pre.best_path)
    cfg = TrainConfig(train=[str(continuous_dir)], out_dir=str(tmp_path / "ft"), window=8,
                      epochs=2, init=pre.best_path, **TINY)
    trainer = Trainer(cfg)
    try:
        assert trainer.model.config["head"] == "regression"
        assert trainer.model.label_names == ["arousal", "valence"]
        assert trainer.loss_kind == "ccc" and trainer.augment is None
        for name, value in pretrained.state_dict().items():
            if not name.startswith("head."):
                assert torch.equal(trainer.model.state_dict()[name], value), name
        result = trainer.fit()
    finally:
        trainer.close()
    assert result.metric == "ccc" and result.epochs_run == 2
    assert math.isfinite(result.best_score)
    assert {"valid_ccc_arousal", "valid_ccc_valence"} <= set(read_csv(result.log_path)[0])


def test_multiclass_frame_level_regime(tmp_path, write_labels):
    # FER2013-like: one-frame sequences, one-hot classes, a frame-level model.
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, 40)
    write_labels(tmp_path / "fer" / "images-00000.h5", [np.eye(3)[[c]] for c in classes],
                 ["angry", "happy", "sad"], "multiclass")
    result = train(train=[str(tmp_path / "fer")], out_dir=str(tmp_path / "run"), window=1,
                   temporal="none", batch_size=8, epochs=2, valid_fraction=0.25,
                   **{**TINY, "lr": 1e-2})
    assert result.head == "multiclass" and result.metric == "accuracy"
    row = read_csv(result.log_path)[result.best_epoch - 1]
    assert "valid_uar" in row
    # The logged accuracy is that of best.pt on the 10 held-out images.
    (data,) = open_files([tmp_path / "fer"])
    held_out = split_sequences([data], split_by="sequence", fraction=0.25, seed=0).valid
    model = load_checkpoint(result.best_path).eval()
    correct = []
    with torch.no_grad():
        for info in data.sequences:
            if (str(data.path), info.index) in held_out:
                out = model(torch.from_numpy(data.read(info).frames[None]))
                correct.append(int(out[0, 0].argmax()) == classes[info.index])
    assert len(correct) == 10
    assert float(row["valid_accuracy"]) == sum(correct) / 10


def test_batched_reading_matches_collated_windows(tmp_path, write_continuous):
    from end2you_visual.training.loader import WindowBatches
    write_continuous(tmp_path / "c.h5", [5, 12, 9])
    ds = WindowDataset(tmp_path / "c.h5", window=8)
    order = [3, 0, 2]
    expected = torch.utils.data.default_collate([ds[i] for i in order])
    got = WindowBatches(ds)[order]
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


# ------------------------------------------------------------- losses

def _hand_ccc_loss(out, labels, mask):
    losses = []
    for b in range(out.shape[0]):
        if not mask[b].any():
            continue
        for d in range(out.shape[2]):
            x, y = out[b, mask[b], d], labels[b, mask[b], d]
            cov = np.mean((x - x.mean()) * (y - y.mean()))
            rho = 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
            losses.append(1 - rho)
    return float(np.mean(losses))


def test_ccc_loss_path_matches_hand_computation(tmp_path, write_continuous):
    write_continuous(tmp_path / "c.h5", [5, 12, 9])
    ds = WindowDataset(tmp_path / "c.h5", window=8)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    assert not batch["mask"].all()  # padding is part of the check
    torch.manual_seed(0)
    out = torch.randn(batch["labels"].shape, dtype=torch.float64)
    loss = make_loss("ccc")(out, batch["labels"].double(), batch["mask"])
    expected = _hand_ccc_loss(out.numpy(), batch["labels"].double().numpy(),
                              batch["mask"].numpy())
    assert float(loss) == pytest.approx(expected, rel=1e-6)  # float32 maths


def _weights_file(tmp_path, write_labels):
    # 6 neutral, 3 happy, 1 happy + contempt, 2 with no label.
    rows = [[1, 0, 0]] * 6 + [[0, 1, 0]] * 3 + [[0, 1, 1]] + [[0, 0, 0]] * 2
    return write_labels(tmp_path / "w.h5", [rows], ["neutral", "happy", "contempt"], "multilabel")


def test_inverse_frequency_weights_by_hand(tmp_path, write_labels):
    ds = WindowDataset(_weights_file(tmp_path, write_labels), window=12)
    fw = inverse_frequency_weights(sequence_labels(ds), ds, range(len(ds)))
    # counts: neutral 6, happy 4, contempt 1, none 2 -> raw 1/6, 1/4, 1, 1/2;
    # raw sum = 6/6 + 3/4 + max(1/4, 1) + 2/2 = 3.75 over 12 frames -> scale 3.2.
    assert fw.label_weights == pytest.approx([1 / 6, 1 / 4, 1.0])
    assert fw.none_weight == pytest.approx(0.5) and fw.scale == pytest.approx(3.2)
    labels = torch.from_numpy(sequence_labels(ds)[0][0])[None]
    w = fw(labels)[0]
    assert w.tolist() == pytest.approx([3.2 / 6] * 6 + [0.8] * 3 + [3.2] + [1.6] * 2)
    assert float(w.mean()) == pytest.approx(1.0)
    # Weighted BCE = sum_t w_t sum_e bce_te / (frames x labels).
    torch.manual_seed(1)
    out = torch.randn(1, 12, 3)
    mask = torch.ones(1, 12, dtype=torch.bool)
    loss = make_loss("bce", fw)(out, labels, mask)
    x, y = out[0].double().numpy(), labels[0].double().numpy()
    bce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    expected = (bce.sum(axis=1) * w.double().numpy()).sum() / (12 * 3)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_with_class_weights_by_hand():
    labels = torch.tensor([[[1, 0], [0, 1], [0, 1], [0, 0]]], dtype=torch.float32)
    out = torch.tensor([[[2.0, 0.0], [0.5, 0.5], [0.0, 1.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, True, True]])
    from end2you_visual.training import FrameWeights
    loss = make_loss("ce", FrameWeights([2.0, 0.5]))(out, labels, mask)
    ce = [math.log1p(math.exp(-2.0)), math.log(2.0), math.log1p(math.exp(-1.0))]
    # The last frame carries no class: left out of the sum and the count.
    assert float(loss) == pytest.approx((2.0 * ce[0] + 0.5 * ce[1] + 0.5 * ce[2]) / 3)


# ------------------------------------------------------------ sampler

def test_resampling_counts_on_a_constructed_case(tmp_path, write_labels):
    n, h, c, s = ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1])
    nc = [1, 0, 1, 0]
    seqs = [[n, n, n, n, n, n, h, h],   # w0: neutral only; w1: neutral + happy
            [n, nc, c, n, h, h, s, n],  # w2: neutral + contempt; w3: happy + surprise
            [s, n, n, n]]               # w4: surprise + neutral
    path = write_labels(tmp_path / "s.h5", seqs, EMOTIONS, "multilabel")
    ds = WindowDataset(path, window=4)
    counts, frames = window_label_counts(ds, sequence_labels(ds))
    assert counts.sum(axis=0).tolist() == [13, 4, 2, 2] and frames.sum() == 20
    indices, report = resample_windows(counts, frames, EMOTIONS, rare_threshold=0.15,
                                       repeats=2, ignore=["neutral"])
    # threshold 0.15 x 20 = 3 frames: contempt (2) and surprise (2) are rare,
    # happy (4) frequent; w2 and w4 qualify (w3 also holds happy).
    assert report.rare == ["contempt", "surprise"] and report.frequent == ["happy"]
    assert report.threshold == pytest.approx(3.0)
    assert sorted(indices) == [0, 1, 2, 2, 2, 3, 4, 4, 4]
    assert report.before == {"neutral": 13, "happy": 4, "contempt": 2, "surprise": 2}
    assert report.after == {"neutral": 25, "happy": 4, "contempt": 6, "surprise": 4}
    assert report.windows_before == 5 and report.windows_after == 9
    table = report.table()
    assert "contempt" in table and "6" in table and "rare" in table


def test_window_sampler_partitions_and_reshuffles():
    from end2you_visual.training import WindowSampler
    ranks = [WindowSampler(range(10), seed=3, rank=r, world_size=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(1)
    first = [list(s) for s in ranks]
    assert sorted(first[0] + first[1]) == list(range(10)) and len(first[0]) == len(ranks[0])
    for s in ranks:
        s.set_epoch(2)
    assert [list(s) for s in ranks] != first
    padded = WindowSampler(range(5), rank=1, world_size=2)
    assert len(list(padded)) == len(padded) == 3
    valid = WindowSampler(range(5), shuffle=False, rank=1, world_size=2, pad=False)
    assert list(valid) == [1, 3] and len(valid) == 2


# --------------------------------------------------------------- split

def test_split_by_subject_split_column_and_files(tmp_path, write_continuous):
    from end2you_visual.data import open_files
    a = write_continuous(tmp_path / "a.h5", [5] * 10, subjects=[f"p{i // 2}" for i in range(10)])
    split = split_sequences(open_files(a), fraction=0.2, seed=0)
    assert split.how == "subject" and len(split.valid) == 2 and len(split.train) == 8
    subjects = {q: f"p{q // 2}" for q in range(10)}
    assert not {subjects[i] for _, i in split.train} & {subjects[i] for _, i in split.valid}
    assert split_sequences(open_files(a), seed=0).valid == split.valid  # seeded
    b = write_continuous(tmp_path / "b.h5", [5] * 4, splits=["train", "valid", "test", "train"])
    split = split_sequences(open_files(b))
    assert split.how == "split" and {i for _, i in split.valid} == {1}
    assert {i for _, i in split.train} == {0, 3}
    split = split_sequences(open_files(a), open_files(b))
    assert split.how == "files" and len(split.valid) == 4 and len(split.train) == 10


# ------------------------------------------------------------- resume


def test_resume_after_a_kill_matches_an_uninterrupted_run(multilabel_dir, resume_after_kill):
    full, resumed, _ = resume_after_kill(
        ("train_loss", "valid_loss", "valid_auc", "best_epoch"), train=[str(multilabel_dir)],
        window=6, augment=True, dropout=0.2, resample=True, rare_threshold=0.2,
        resample_ignore=["neutral"], **TINY)
    assert resumed.best_epoch == full.best_epoch


def test_flush_denormals_zeroes_subnormals_inside_only():
    subnormal = torch.tensor([1e-39])                     # below float32's smallest normal
    assert (subnormal * 1.0).item() != 0.0
    with flush_denormals():
        assert (subnormal * 1.0).item() == 0.0
    assert (subnormal * 1.0).item() != 0.0
    with flush_denormals(enabled=False):
        assert (subnormal * 1.0).item() != 0.0


def test_zero_subnormals_in_weights_and_optimiser_state():
    weight = torch.nn.Parameter(torch.tensor([1e-39, 1.0, -1e-40, 0.0, -2e-38]))
    optimizer = torch.optim.Adam([weight], lr=0.1)
    weight.grad = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
    optimizer.step()
    state = optimizer.state[weight]
    weight.data.copy_(torch.tensor([1e-39, 1.0, -1e-40, 0.0, -2e-38]))
    state["exp_avg"].copy_(torch.tensor([3e-39, 0.5, 0.0, -1e-45, 1.0]))
    zero_subnormals_([weight], optimizer)
    assert weight.tolist() == [0.0, 1.0, 0.0, 0.0, pytest.approx(-2e-38)]  # -2e-38 is normal
    assert state["exp_avg"].tolist() == [0.0, 0.5, 0.0, 0.0, 1.0]
    assert int(state["step"]) == 1                                          # not a float tensor


def test_cpu_training_flushes_and_zeroes_subnormals(continuous_dir, tmp_path, monkeypatch):
    flushed, zeroed = [], []
    real_step = Trainer.train_step

    def step(self, batch):
        flushed.append((torch.tensor([1e-39]) * 1.0).item())
        return real_step(self, batch)

    def zero(parameters, optimizer):
        zeroed.append(optimizer)
        zero_subnormals_(parameters, optimizer)

    monkeypatch.setattr(Trainer, "train_step", step)
    monkeypatch.setattr(steps_module, "zero_subnormals_", zero)
    result = train(train=[str(continuous_dir)], out_dir=str(tmp_path / "r"), window=8,
                   epochs=2, **TINY)
    assert flushed and set(flushed) == {0.0}
    assert len(zeroed) == result.epochs_run and all(isinstance(o, torch.optim.Adam)
                                                    for o in zeroed)
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0   # switched off again afterwards


def test_checkpoints_load_weights_only(continuous_dir, tmp_path):
    result = train(train=[str(continuous_dir)], out_dir=str(tmp_path / "r"), window=8,
                   epochs=1, **TINY)
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(Path(result.out_dir) / name, weights_only=True)
        assert ckpt["format"] == "end2you-visual-model"
    state = torch.load(result.last_path, weights_only=True)["training"]
    assert {"optimizer", "rng", "epoch", "best_score", "bad_epochs"} <= set(state)
    from end2you_visual.zoo import load_pretrained
    assert load_pretrained(result.best_path).config["arch"] == "resnet_tiny"


# ------------------------------------------------ early stopping, best

def _scripted(monkeypatch, metric, scores):
    """validate() returns ``scores`` in turn; train_epoch sets the head bias to
    the epoch number, so best.pt tells which epoch it was saved at."""
    seq = iter(scores)

    def train_epoch(self, epoch):
        with torch.no_grad():
            self.model.head.bias.fill_(float(epoch))
        return {"train_loss": 0.0, "train_fps": 1.0, "train_seconds": 0.0, "steps": 0}

    def validate(self):
        value = next(seq)
        return {"loss": value, metric: value}

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    monkeypatch.setattr(Trainer, "validate", validate)


@pytest.mark.parametrize("metric, scores, best, last", [
    ("ccc", [0.1, 0.3, 0.2, 0.25, 0.1, 0.9], 2, 4),     # higher is better
    ("loss", [1.0, 0.5, 0.7, 0.4, 0.6, 0.8, 0.1], 4, 6),  # lower is better
    ("rmse", [0.5, 0.4, 0.3, 0.2, 0.1, 0.05], 6, 6),     # keeps improving: runs out
    ("ccc", [math.nan, 0.2, math.nan, 0.1, 0.3, 0.4], 2, 4),  # undefined scores never win
])
def test_early_stopping_and_best_model(continuous_dir, tmp_path, monkeypatch, metric, scores,
                                       best, last):
    _scripted(monkeypatch, metric, scores)
    result = train(train=[str(continuous_dir)], out_dir=str(tmp_path / "r"), window=8,
                   epochs=6, patience=2, metric=metric, **TINY)
    assert result.best_epoch == best and result.epochs_run == last
    assert result.best_score == scores[best - 1]
    assert result.stopped == ("completed" if last == 6 and best == 6 else "early_stopping")
    ckpt = read_checkpoint(result.best_path)
    assert ckpt["epoch"] == best and ckpt["score"] == scores[best - 1]
    assert torch.all(ckpt["state_dict"]["head.bias"] == best)


# ------------------------------------------------------------ NaN loss

def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(continuous_dir, tmp_path):
    cfg = TrainConfig(train=[str(continuous_dir)], out_dir=str(tmp_path / "r"), window=8,
                      epochs=4, **TINY)
    trainer = Trainer(cfg)
    steps = len(trainer.train_loader)
    real, calls = trainer.loss_fn, {"n": 0}

    def loss_fn(out, labels, mask):
        loss = real(out, labels, mask)
        if trainer.model.training:
            calls["n"] += 1
            if calls["n"] > steps:  # from the first step of epoch 2
                return loss * float("nan")
        return loss

    trainer.loss_fn = loss_fn
    try:
        with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
            trainer.fit()
    finally:
        trainer.close()
    ckpt = read_checkpoint(tmp_path / "r" / "last.pt")
    assert ckpt["training"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
               if v.is_floating_point())
    assert len(read_csv(tmp_path / "r" / "log.csv")) == 1


# -------------------------------------------------------- bad options

@pytest.mark.parametrize("change, message", [
    ({"metric": "bleu"}, "unknown metric"),
    ({"metric": "accuracy"}, "not reported for a regression head"),
    ({"batch_size": 50}, "larger than the data"),
    ({"label_names": ["arousal", "dominance"]}, "do not match"),
    ({"split_by": "split"}, "no validation data"),
    ({"loss": "bce"}, "does not fit"),
    ({"resample": True}, "categorical"),
    ({"lr": 0}, "--lr: must be > 0, got 0"),
])
def test_bad_options_fail_before_any_work(continuous_dir, tmp_path, monkeypatch, change, message):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the options were checked")

    monkeypatch.setattr(preparation_module, "build_model", no_model)
    cfg = dict(train=[str(continuous_dir)], out_dir=str(tmp_path / "r"), window=8, **TINY)
    with pytest.raises(InputError, match=message):
        train(**{**cfg, **change})
    assert not (tmp_path / "r").exists()


def test_no_validation_data_with_a_single_sequence(tmp_path, write_continuous):
    path = write_continuous(tmp_path / "one.h5", [30])
    with pytest.raises(InputError, match="no validation data"):
        train(train=[str(path)], out_dir=str(tmp_path / "r"), window=8, **TINY)


def test_unknown_setting_in_a_recipe(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[optimisation]\nlearning_rate = 0.1\n")
    with pytest.raises(InputError, match="unknown training settings"):
        TrainConfig.from_toml(recipe)


# -------------------------------------------------------- augmentation

def test_augmenter_crops_and_colours_per_window():
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (3, 4, SIZE, SIZE, 3), dtype=torch.uint8)
    plain = Augmenter(SIZE, resize=SIZE, brightness=0.0, saturation=0.0)(frames)
    assert plain.shape == (3, 4, 3, SIZE, SIZE)
    assert torch.allclose(plain, frames.permute(0, 1, 4, 2, 3).float() / 255)
    aug = Augmenter(SIZE, seed=1)
    assert aug.resize == 18  # round(16 * 170 / 150)
    x = aug(frames)
    assert x.shape == (3, 4, 3, SIZE, SIZE) and 0 <= x.min() and x.max() <= 1
    # A constant window stays constant in space and over time (one crop, one colour).
    const = torch.full((2, 3, SIZE, SIZE, 3), 100, dtype=torch.uint8)
    y = Augmenter(SIZE, seed=2)(const)
    assert torch.allclose(y, y[:, :1, :, :1, :1].expand_as(y), atol=1e-6)
    # The generator's state round-trips (resume).
    state = aug.state_dict()
    again = aug(frames)
    aug.load_state_dict(state)
    assert torch.equal(aug(frames), again)


def test_augmenter_mirrors_whole_windows_with_probability_hflip():
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (64, 3, SIZE, SIZE, 3), dtype=torch.uint8)
    plain = frames.permute(0, 1, 4, 2, 3).float() / 255
    always = Augmenter(SIZE, resize=SIZE, brightness=0.0, saturation=0.0, hflip=1.0)(frames)
    assert torch.allclose(always, plain.flip(-1), atol=1e-6)  # the colour steps round
    half = Augmenter(SIZE, resize=SIZE, brightness=0.0, saturation=0.0, hflip=0.5, seed=3)
    x = half(frames)
    mirrored = torch.tensor([torch.allclose(x[i], plain[i].flip(-1), atol=1e-6) for i in range(64)])
    kept = torch.tensor([torch.allclose(x[i], plain[i], atol=1e-6) for i in range(64)])
    assert bool((mirrored ^ kept).all())          # each window whole: all frames or none
    assert 20 <= int(mirrored.sum()) <= 44          # about half of 64 (binomial, 3 sd)
    # Without mirroring the random draws are those of earlier versions (4 per window).
    a, b = Augmenter(SIZE, seed=5), Augmenter(SIZE, seed=5, hflip=0.0)
    assert torch.equal(a(frames), b(frames))
    with pytest.raises(ValueError, match="hflip"):
        Augmenter(SIZE, hflip=1.5)


# ----------------------------------------------------- recipes and CLI

@pytest.mark.parametrize("name", ["pretrain.toml", "finetune.toml"])
def test_recipes_are_valid(name):
    cfg = TrainConfig.from_toml(REPO / "pretrained" / "recipes" / name, train=["data/"])
    cfg.check()
    assert cfg.lr == 4e-5 and cfg.batch_size == 2 and cfg.window == 150
    assert cfg.epochs == 300 and cfg.patience == 20
    if name == "pretrain.toml":
        assert cfg.resample and cfg.augment and cfg.label_weighting == "inverse"
    else:
        assert cfg.loss == "ccc" and cfg.augment is False and cfg.metric == "ccc"


def test_cli_options_override_the_recipe(continuous_dir, tmp_path):
    from end2you_visual.cli.train import train as train_command
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nwindow = 8\n[model]\narch = "resnet_tiny"\nhidden_size = 8\n'
                      'num_layers = 1\n[optimisation]\nepochs = 5\nnum_workers = 0\n')
    out = tmp_path / "run"
    res = CliRunner().invoke(train_command, [str(continuous_dir), "--config", str(recipe),
                                             "--epochs", "1", "--out", str(out),
                                             "--no-progress", "--no-tensorboard"])
    assert res.exit_code == 0, res.output
    assert "best validation ccc" in res.output
    state = read_checkpoint(out / "last.pt")["training"]
    assert state["config"]["epochs"] == 1 and state["config"]["window"] == 8
    assert len(read_csv(out / "log.csv")) == 1
    from end2you_visual.cli.main import cli
    bad = CliRunner().invoke(cli, ["train", str(continuous_dir), "--config", str(recipe),
                                   "--metric", "bleu", "--out", str(out)])
    assert bad.exit_code == 1 and "--metric: unknown metric 'bleu'" in bad.output


def test_sequence_split_does_not_depend_on_where_the_files_are(tmp_path, write_continuous):
    # The same two files in two folders (x/b.h5, y/a.h5: path order b < a) and
    # copied side by side (a < b): the same images must be held out.
    (tmp_path / "x").mkdir(), (tmp_path / "y").mkdir(), (tmp_path / "flat").mkdir()
    write_continuous(tmp_path / "x" / "b.h5", [4] * 5)
    write_continuous(tmp_path / "y" / "a.h5", [4] * 5, seed=1)
    for f in ("x/b.h5", "y/a.h5"):
        shutil.copy(tmp_path / f, tmp_path / "flat")
    held_out = []
    for paths in ([tmp_path / "x", tmp_path / "y"], [tmp_path / "flat"]):
        files = open_files(paths)
        split = split_sequences(files, split_by="sequence", fraction=0.3, seed=0)
        by_path = {f.path.as_posix(): f for f in files}
        held_out.append(sorted((Path(p).name, by_path[Path(p).as_posix()].sequences[i].name)
                               for p, i in split.valid))
    assert held_out[0] == held_out[1] and len(held_out[0]) == 3


def test_finetuning_a_frame_level_zoo_model_adds_the_lstm(continuous_dir, tmp_path, monkeypatch):
    # The issue-7 flow in small: a frame-level, grey, 7-emotion extractor in
    # the zoo (stored compact, int8), fine-tuned by name on arousal/valence.
    from end2you_visual import load_pretrained, zoo
    from end2you_visual.models import build_model, save_checkpoint

    monkeypatch.setenv("E2Y_VISUAL_PRETRAINED", str(tmp_path / "pretrained"))
    torch.manual_seed(0)
    names = ["angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised"]
    fer = build_model("resnet_tiny", head="multiclass", outputs=7, temporal="none",
                      label_names=names, input_size=SIZE, grey=True)
    path = save_checkpoint(fer, tmp_path / "pretrained" / "tiny_fer.pt", compact=True)
    zoo.register_weights("tiny_fer", path, training_data="synthetic", licence="CC0")
    stored = load_pretrained("tiny_fer")
    # From Python: the same extractor with a regression head.
    av = load_pretrained("tiny_fer", head="regression", outputs=2)
    assert av.config["head"] == "regression" and av.config["grey"]
    for name, value in stored.extractor.state_dict().items():
        assert torch.equal(av.extractor.state_dict()[name], value), name
    # With `train`: windows of 8 frames, so the CNN goes under a new LSTM.
    trainer = Trainer(TrainConfig(train=[str(continuous_dir)], out_dir=str(tmp_path / "ft"),
                                  window=8, epochs=1, init="tiny_fer", **TINY))
    try:
        model = trainer.model
        assert model.config["temporal"] == "lstm" and model.config["grey"]
        assert model.label_names == ["arousal", "valence"]
        for name, value in stored.extractor.state_dict().items():
            assert torch.equal(model.extractor.state_dict()[name].cpu(), value), name
        result = trainer.fit()
    finally:
        trainer.close()
    assert math.isfinite(result.best_score)
