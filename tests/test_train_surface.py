"""What a user of `train` touches (issue 11): the input size a fine-tuned model
records, runs never silently replaced, resume with changed settings, recipes
checked for syntax, types and ranges, --arch, --device, an unwritable --out,
the progress bar and Ctrl-C. All on the CPU, tiny."""
import csv
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from end2you_visual.cli.main import cli
from end2you_visual.data import SequenceFile
from end2you_visual.errors import InputError
from end2you_visual.framing import Framing, data_framing
from end2you_visual.models import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from end2you_visual.training import TrainConfig, Trainer, read_toml, train
from end2you_visual.training import checkpoints as checkpoints_module
from end2you_visual.training import preparation as preparation_module
from end2you_visual.training import steps as steps_module

from test_training import TINY

DATA = Path(__file__).parent / "data"
SINGLE = DATA / "single_face.mp4"   # one face, 72 frames at 30 fps
# Face settings shared by `generate` and `predict` below (fast on a CPU).
FACES = dict(detect_every=8, detect_scale=0.25, batch_size=24, min_face_size=40)
# The clip's training crops are cut with this margin (not the default 0.2):
# a model trained on them must predict with it too (issue 16).
CLIP_MARGIN = 0.1

pytestmark = pytest.mark.usefixtures("one_thread")


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


@pytest.fixture
def data(tmp_path, write_continuous):
    return write_continuous(tmp_path / "d.h5", [20, 17, 30], subjects=["p1", "p2", "p3"])


def base(data, out, **changes):
    return {**dict(train=[str(data)], out_dir=str(out), window=8, epochs=1, **TINY), **changes}


def cli_args(data, out, *extra):
    return ["train", str(data), "--window", "8", "--arch", "resnet_tiny", "--hidden-size", "8",
            "--num-layers", "1", "--num-workers", "0", "--no-progress", "--no-tensorboard",
            "--out", str(out), *extra]


def no_work(monkeypatch):
    """Fail the test if training reads any data (checks must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("data were read before the settings were checked")

    monkeypatch.setattr(preparation_module, "open_files", refuse)


# ----------------------------------------- 1. fine-tuning records its input size

@pytest.fixture(scope="module")
def clip_h5(tmp_path_factory):
    """single_face.mp4 as 32 px crops of margin CLIP_MARGIN with arousal/valence labels
    (train + a copy to validate)."""
    from end2you_visual.generate import GenerateSettings, generate

    root = tmp_path_factory.mktemp("clip")
    times = np.arange(0, 2.4 + 1e-9, 0.04)
    (root / "labels.csv").write_text("time,arousal,valence\n" + "".join(
        f"{t:.2f},{np.sin(4 * t):.3f},{np.cos(3 * t):.3f}\n" for t in times))
    (root / "input.csv").write_text(f"raw_file,label_file\n{SINGLE},{root / 'labels.csv'}\n")
    generate(root / "input.csv", root / "train",
             GenerateSettings(size=32, margin=CLIP_MARGIN, **FACES), progress=False)
    (root / "valid").mkdir()
    shutil.copy(root / "train" / "single_face.h5", root / "valid" / "single_face.h5")
    return root


def test_finetuned_model_records_the_data_size_and_predict_equals_test(clip_h5, tmp_path):
    from end2you_visual.testrun import run_test
    from end2you_visual.predict import predict_video

    torch.manual_seed(0)
    zoo_like = build_model("resnet_tiny", outputs=2, hidden_size=8, num_layers=1,
                           label_names=["arousal", "valence"], input_size=24)
    init = save_checkpoint(zoo_like, tmp_path / "zoo" / "tiny24.pt", compact=True)
    result = train(train=[str(clip_h5 / "train")], valid=[str(clip_h5 / "valid")],
                   out_dir=str(tmp_path / "ft"), init=str(init), window=8, batch_size=2,
                   epochs=1, max_steps_per_epoch=2, **TINY)
    for name in ("best.pt", "last.pt"):
        ckpt = read_checkpoint(tmp_path / "ft" / name)
        assert ckpt["config"]["input_size"] == 32, name
        # ... and the framing of its crops (the zoo-like init recorded none)
        assert ckpt["framing"] == {"margin": CLIP_MARGIN, "square": "max-side", "size": 32,
                                   "grey": False, "source": "detected"}, name

    tested = run_test(result.best_path, [clip_h5 / "valid"], tmp_path / "test", window=8,
                      device="cpu")
    assert tested.warnings == []  # the model was trained on exactly these crops
    # No margin given: the model's framing, so the crops it was tested on.
    predicted = predict_video(SINGLE, result.best_path, device="cpu", plot=False, **FACES)
    assert predicted.face_settings.margin == CLIP_MARGIN
    (seq,) = tested.sequences
    found = predicted.face_found
    assert len(found) == 72 and found.sum() >= 60
    assert found.tolist() == seq.face_found.tolist()
    # The same crops through the same model: equal but for float summation order
    # (cropped at the zoo model's 24 px instead, they differ by up to 0.07).
    np.testing.assert_allclose(predicted.predictions[found], seq.predictions[found],
                               rtol=1e-3, atol=1e-4)
    # Told otherwise, it crops otherwise (and predicts otherwise).
    wider = predict_video(SINGLE, result.best_path, device="cpu", plot=False, margin=0.2,
                          **FACES)
    assert wider.face_settings.margin == 0.2 and wider.face_found.tolist() == found.tolist()
    assert np.abs(wider.predictions[found] - seq.predictions[found]).max() > 1e-3


def test_training_records_the_framing_its_files_state(data, tmp_path, write_sequences):
    # Images packed whole (generate --skip-detection, as FER2013): tight faces, margin 0.
    pack = write_sequences(
        tmp_path / "pack.h5", [12, 12], lambda q, n, rng: (
            rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), rng.uniform(0, 1, (n, 2))),
        names=["arousal", "valence"], kind="continuous", size=16,
        settings={"skip_detection": True, "margin": 0.2, "size": 16})
    train(**base(pack, tmp_path / "pack", grey=True))
    assert read_checkpoint(tmp_path / "pack" / "best.pt")["framing"] == {
        "margin": 0.0, "square": "max-side", "size": 16, "grey": True,
        "source": "whole-image"}
    # Files that do not say how their crops were cut (End2You's, other tools'):
    # none recorded, and predict keeps its default margin.
    train(**base(data, tmp_path / "unknown"))
    model = load_checkpoint(tmp_path / "unknown" / "best.pt")
    assert "framing" not in read_checkpoint(tmp_path / "unknown" / "best.pt")
    assert model.framing is None
    assert f"no face framing recorded (not in {data})" in (
        tmp_path / "unknown" / "train.log").read_text()
    # Files framed differently: none recorded either.
    wide = write_sequences(
        tmp_path / "wide.h5", [12], lambda q, n, rng: (
            rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), rng.uniform(0, 1, (n, 2))),
        names=["arousal", "valence"], kind="continuous", size=16, settings={"margin": 0.3})
    assert data_framing([SequenceFile(pack), SequenceFile(wide)]) == (None, (
        f"no face framing recorded: {pack} holds crops of margin 0.0 (whole face images packed "
        f"with generate --skip-detection, taken as tight faces), {wide} of margin 0.3 (MTCNN "
        "face boxes plus the margin)"))
    assert data_framing([SequenceFile(wide)] * 2)[0] == Framing(margin=0.3, size=16)


# ----------------------------------------------- 3. a finished run is never lost

def test_train_over_an_existing_run_is_refused(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(**base(data, out))
    before = snapshot(out)
    with monkeypatch.context() as m:
        no_work(m)
        with pytest.raises(InputError) as err:
            train(**base(data, out))
    assert str(err.value) == (f"{out}: already holds a training run (best.pt, last.pt, "
                              "log.csv); use --resume to continue it or --overwrite to replace "
                              "it (or choose another --out)")
    assert snapshot(out) == before
    # A folder with only the log of a run, too.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "log.csv").write_text("epoch\n1\n")
    with pytest.raises(InputError, match="already holds a training run \\(log.csv\\)"):
        train(**base(data, partial))
    # --resume needs last.pt; best.pt alone cannot be continued.
    (out / "last.pt").rename(tmp_path / "kept.pt")
    with pytest.raises(InputError, match="no last.pt to resume from; use --overwrite"):
        train(**base(data, out, resume=True))
    (tmp_path / "kept.pt").rename(out / "last.pt")
    # Through the CLI: exit 1 and the message, the run untouched.
    res = CliRunner().invoke(cli, cli_args(data, out, "--epochs", "1"))
    assert res.exit_code == 1 and "use --resume to continue it or --overwrite" in res.output
    assert "Traceback" not in res.output and snapshot(out) == before
    res = CliRunner().invoke(cli, cli_args(data, out, "--resume", "--overwrite"))
    assert res.exit_code == 1 and "--resume: and --overwrite contradict" in res.output


def test_overwrite_replaces_the_run(data, tmp_path):
    out = tmp_path / "run"
    train(**base(data, out, epochs=2))
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "old.events").write_text("x")
    result = train(**base(data, out, overwrite=True, seed=3))
    assert [r["epoch"] for r in read_csv(out / "log.csv")] == ["1"]
    assert read_checkpoint(out / "last.pt")["training"]["config"]["seed"] == 3
    assert result.epochs_run == 1 and not (out / "tensorboard").exists()
    assert (out / "train.log").read_text().count("frames/s") == 1  # the old log is gone


# ------------------------------------------------- 4. resume with changed settings

def test_resume_applies_a_changed_lr_for_real(data, tmp_path):
    out = tmp_path / "run"
    train(**base(data, out, lr=1e-3))
    result = train(**base(data, out, lr=1e-2, epochs=2, resume=True))
    assert [float(r["lr"]) for r in read_csv(out / "log.csv")] == [1e-3, 1e-2]
    assert result.history[-1]["lr"] == 1e-2
    state = read_checkpoint(out / "last.pt")["training"]
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [1e-2]
    assert state["config"]["lr"] == 1e-2
    assert "lr 0.001 -> 0.01" in (out / "train.log").read_text()


@pytest.mark.parametrize("change, shown", [
    ({"window": 4}, "--window 8 -> 4"),
    ({"batch_size": 3}, "--batch-size (batch_size) 2 -> 3"),
    ({"arch": "resnet18"}, "--arch 'resnet_tiny' -> 'resnet18'"),
    ({"scheduler": "cosine"}, "--scheduler 'none' -> 'cosine'"),
])
def test_resume_refuses_settings_that_define_the_run(data, tmp_path, monkeypatch, change,
                                                     shown):
    out = tmp_path / "run"
    train(**base(data, out))
    before = snapshot(out)
    no_work(monkeypatch)
    with pytest.raises(InputError) as err:
        train(**base(data, out, epochs=2, resume=True, **change))
    message = str(err.value)
    assert message.startswith(f"{out / 'last.pt'}: the run being resumed used other settings: ")
    assert shown in message and "--overwrite" in message
    assert snapshot(out) == before


def test_resume_with_a_cosine_schedule_refuses_a_new_lr(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(**base(data, out, scheduler="cosine", epochs=2, max_steps_per_epoch=1))
    no_work(monkeypatch)
    with pytest.raises(InputError, match="--lr 0.001 -> 0.01; --epochs 2 -> 3"):
        train(**base(data, out, scheduler="cosine", lr=1e-2, epochs=3, resume=True))


# --------------------------------------------------------------- 4. recipes

@pytest.mark.parametrize("text, problem", [
    ('window = 8\nepochs = \n', "not valid TOML: line 2, column 10: Invalid value"),
    ('window = 8\n[model]\narch = "a"\narch = "b"\n',
     "not valid TOML: line 4, column 11: Cannot overwrite a value (a key or table given twice)"),
    ('[data]\nwindow = 8\n[optimisation]\nwindow = 4\n',
     "setting 'window' is given twice ([data] and [optimisation])"),
])
def test_recipe_syntax_errors_name_the_file_and_line(tmp_path, text, problem):
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    with pytest.raises(InputError) as err:
        read_toml(recipe)
    assert str(err.value) == f"{recipe}: {problem}"


@pytest.mark.parametrize("line, problem", [
    ("window = true", "window: expected an integer, got true"),
    ('epochs = "1"', 'epochs: expected an integer, got "1"'),
    ("lr = true", "lr: expected a number, got true"),
    ("augment = 1", "augment: expected true or false, got 1"),
    ('arch = 18', "arch: expected a string, got 18"),
    ('class_weights = [1, "2"]', 'class_weights: expected a list of numbers, got [1, "2"]'),
    ('resample_ignore = [1]', "resample_ignore: expected a list of strings, got [1]"),
])
def test_recipe_values_are_type_checked(data, tmp_path, line, problem):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"[data]\n{line}\n")
    with pytest.raises(InputError) as err:
        TrainConfig.from_toml(recipe, train=[str(data)])
    assert str(err.value) == f"{recipe}: {problem}"
    res = CliRunner().invoke(cli, ["train", str(data), "--config", str(recipe),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and f"Error: {recipe}: {problem}" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


def test_unknown_recipe_keys_are_named_with_the_setting_meant(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nlabels = "arousal"\nout = "runs/x"\n[o]\nlearning_rate = 0.1\n')
    with pytest.raises(InputError) as err:
        TrainConfig.from_toml(recipe)
    assert str(err.value).startswith(
        f"{recipe}: unknown training settings ['labels', 'learning_rate', 'out'] (for 'labels' "
        "use 'label_names'; for 'out' use 'out_dir'); known: train, valid, out_dir, ")


def test_recipe_values_of_the_right_type_pass(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('train = "data/"\nlr = 1\nclass_weights = [1, 2.5]\n'
                      'label_names = "a,b"\n')
    cfg = TrainConfig.from_toml(recipe)
    assert cfg.train == ["data/"] and cfg.lr == 1 and cfg.class_weights == [1, 2.5]
    assert cfg.label_names == ["a", "b"]
    cfg.check()


def test_from_toml_without_a_recipe_is_the_defaults_and_the_overrides():
    cfg = TrainConfig.from_toml(None, train=["d.h5"], epochs=3, lr=None)
    assert cfg == TrainConfig(train=["d.h5"], epochs=3)  # lr None: not given
    with pytest.raises(InputError) as err:
        TrainConfig.from_toml(None, epochs="3")
    assert str(err.value) == 'epochs: expected an integer, got "3"'


def test_the_cli_reads_its_recipe_through_from_toml(tmp_path, monkeypatch):
    recipe = tmp_path / "r.toml"
    recipe.write_text("epochs = 7\nlr = 0.5\n")
    calls = []

    def record(path, **overrides):
        calls.append((path, overrides))
        raise InputError(path, "stop here")

    monkeypatch.setattr(TrainConfig, "from_toml", record)
    res = CliRunner().invoke(cli, ["train", str(tmp_path), "--config", str(recipe),
                                   "--lr", "0.25", "--valid", str(tmp_path)])
    assert res.exit_code == 1 and f"Error: {recipe}: stop here" in res.output
    assert calls == [(recipe, {"lr": 0.25, "valid": [str(tmp_path)],
                               "train": [str(tmp_path)]})]


# ------------------------------------------------------------- 5. ranges

@pytest.mark.parametrize("change, message", [
    ({"grad_clip": -1.0}, "--grad-clip (grad_clip): must be >= 0, got -1.0"),
    ({"hidden_size": 0}, "--hidden-size (hidden_size): must be >= 1, got 0"),
    ({"num_layers": 0}, "--num-layers (num_layers): must be >= 1, got 0"),
    ({"dropout": 1.0}, "--dropout: must be in [0, 1), got 1.0"),
    ({"dropout": -0.1}, "--dropout: must be in [0, 1), got -0.1"),
    ({"window": 0}, "--window: must be >= 1, got 0"),
    ({"stride": 0}, "--stride: must be >= 1, got 0"),
    ({"num_workers": -1}, "--num-workers (num_workers): must be >= 0, got -1"),
    ({"batch_size": 0}, "--batch-size (batch_size): must be >= 1, got 0"),
    ({"valid_batch_size": 0}, "--valid-batch-size (valid_batch_size): must be >= 1, got 0"),
    ({"epochs": 0}, "--epochs: must be >= 1, got 0"),
    ({"patience": 0}, "--patience: must be >= 1, got 0"),
    ({"lr": 0.0}, "--lr: must be > 0, got 0.0"),
    ({"lr": float("nan")}, "--lr: must be > 0, got nan"),
    ({"weight_decay": -1e-4}, "--weight-decay (weight_decay): must be >= 0, got -0.0001"),
    ({"valid_fraction": 1.0}, "--valid-fraction (valid_fraction): must be in (0, 1), got 1.0"),
    ({"hflip": 1.5}, "--hflip: must be in [0, 1], got 1.5"),
    ({"brightness": -0.1}, "--brightness: must be in [0, 1), got -0.1"),
    ({"saturation": 1.0}, "--saturation: must be in [0, 1), got 1.0"),
    ({"resize": 0}, "--resize: must be >= 1, got 0"),
    ({"rare_threshold": 0.0}, "--rare-threshold (rare_threshold): must be > 0, got 0.0"),
    ({"resample_repeats": -1}, "--resample-repeats (resample_repeats): must be >= 0, got -1"),
    ({"max_steps_per_epoch": 0},
     "--max-steps-per-epoch (max_steps_per_epoch): must be >= 1, got 0"),
    ({"seed": -1}, "--seed: must be >= 0, got -1"),
    ({"class_weights": [1.0, -2.0]},
     "--class-weights (class_weights): weights must be >= 0, got -2.0"),
    ({"window": True}, "--window: expected an integer, got true"),
    ({"temporal": "rnn"}, "--temporal: must be one of lstm, gru, none; got 'rnn'"),
])
def test_every_numeric_setting_has_a_range(data, tmp_path, monkeypatch, change, message):
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", None)  # never reached
    no_work(monkeypatch)
    with pytest.raises(InputError) as err:
        train(**base(data, tmp_path / "r", **change))
    assert str(err.value) == message
    assert not (tmp_path / "r").exists()


def test_ranges_through_the_cli_and_a_recipe(data, tmp_path):
    # On the command line click checks the same ranges (a usage error, status 2) ...
    res = CliRunner().invoke(cli, cli_args(data, tmp_path / "r", "--grad-clip", "-1"))
    assert res.exit_code == 2, res.output
    assert "Invalid value for '--grad-clip': -1.0 is not in the range x>=0." in res.output
    res = CliRunner().invoke(cli, cli_args(data, tmp_path / "r", "--dropout", "1"))
    assert res.exit_code == 2 and "'--dropout': 1.0 is not in the range 0<=x<1." in res.output
    # ... and a recipe gets the settings' own message.
    recipe = tmp_path / "r.toml"
    recipe.write_text("[optimisation]\ngrad_clip = -1.0\n")
    res = CliRunner().invoke(cli, cli_args(data, tmp_path / "r", "--config", str(recipe)))
    assert res.exit_code == 1, res.output
    assert "Error: --grad-clip (grad_clip): must be >= 0, got -1.0" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "r").exists()


# ------------------------------------------------------ 6. 7. 8. arch, device, out

def test_unknown_arch(data, tmp_path, monkeypatch):
    no_work(monkeypatch)
    with pytest.raises(InputError) as err:
        train(**base(data, tmp_path / "r", arch="resnet_huge"))
    assert str(err.value) == ("--arch: unknown architecture 'resnet_huge'; known: resnet18, "
                              "resnet34, resnet50, resnet18_half, resnet_tiny, i3d_resnet18, "
                              "i3d_resnet34, i3d_resnet50, i3d_resnet18_half, i3d_resnet_tiny")
    res = CliRunner().invoke(cli, cli_args(data, tmp_path / "r") + ["--arch", "vgg"])
    assert res.exit_code == 1 and "Error: --arch: unknown architecture 'vgg'" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("device, problem", [
    ("cuda", "'cuda' asked for, but CUDA is not available"),
    ("cuda:1", "'cuda:1' asked for, but CUDA is not available"),
    ("tpu", "'tpu' is not a device"),
])
def test_device_errors_come_before_any_work(data, tmp_path, monkeypatch, device, problem):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    no_work(monkeypatch)
    with pytest.raises(InputError) as err:
        train(**base(data, tmp_path / "r", device=device))
    assert str(err.value).startswith(f"--device: {problem}")
    res = CliRunner().invoke(cli, cli_args(data, tmp_path / "r", "--device", device))
    assert res.exit_code == 1 and f"Error: --device: {problem}" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "r").exists()


def test_an_unwritable_out_fails_before_any_work(data, tmp_path, monkeypatch):
    no_work(monkeypatch)
    (tmp_path / "file").write_text("x")
    under = tmp_path / "file" / "run"
    with pytest.raises(InputError) as err:
        train(**base(data, under))
    assert str(err.value) == f"{under}: cannot be made: {tmp_path / 'file'} is a file, " \
                             "not a folder (--out)"
    with pytest.raises(InputError, match="is a file, not a folder"):
        train(**base(data, tmp_path / "file"))
    res = CliRunner().invoke(cli, cli_args(data, under))
    assert res.exit_code == 1 and f"Error: {under}: cannot be made" in res.output


def test_a_read_only_out_fails_before_any_work(data, tmp_path, monkeypatch):
    no_work(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(checkpoints_module.os, "access", lambda path, mode: Path(path) != locked)
    with pytest.raises(InputError) as err:
        train(**base(data, locked / "run"))
    assert str(err.value) == (f"{locked / 'run'}: is not writable ({locked} is not writable); "
                              "choose another --out")


# ---------------------------------------------------- 9. progress and Ctrl-C

class RecordingBar:
    bars = []

    def __init__(self, total=None, **kwargs):
        self.total, self.n, self.counts = total, 0, []
        RecordingBar.bars.append(self)

    def update(self, n=1):
        self.n += n
        self.counts.append(self.n)

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def test_the_progress_bar_counts_steps_within_an_epoch(data, tmp_path, monkeypatch):
    monkeypatch.setattr(steps_module, "tqdm", RecordingBar)
    RecordingBar.bars = []
    trainer = Trainer(TrainConfig(**base(data, tmp_path / "r", batch_size=1)))
    try:
        steps = len(trainer.train_loader)
        trainer.train_epoch(1)
    finally:
        trainer.close()
    (bar,) = RecordingBar.bars
    assert steps == 7 and bar.total == steps  # 7 training windows of 8 frames
    assert bar.counts == [1, 2, 3, 4, 5, 6, 7]  # one step at a time, not all at the end


def test_ctrl_c_says_how_to_resume(data, tmp_path, monkeypatch, kill_after_epochs):
    out = tmp_path / "run"
    args = cli_args(data, out, "--epochs", "2", "--labels", "arousal,valence")
    with monkeypatch.context() as m:
        kill_after_epochs(m, 1)
        res = CliRunner().invoke(cli, args)
    assert res.exit_code == 130, res.output
    assert "Traceback" not in res.output and "Aborted" not in res.output
    command = (f"e2y-visual train {data} --labels arousal,valence --window 8 --arch resnet_tiny "
               f"--hidden-size 8 --num-layers 1 --epochs 2 --num-workers 0 --no-progress "
               f"--no-tensorboard --out {out} --resume")
    lines = [line for line in res.output.splitlines() if "Interrupted" in line]
    assert lines == [f"Interrupted ({out / 'last.pt'} keeps the last finished epoch); "
                     f"to continue: {command}"]
    assert res.output.rstrip().endswith(command)
    # The command it prints continues the run.
    res = CliRunner().invoke(cli, shlex.split(command)[1:])
    assert res.exit_code == 0, res.output
    assert [r["epoch"] for r in read_csv(out / "log.csv")] == ["1", "2"]
    assert load_checkpoint(out / "best.pt").config["input_size"] == 16


# ------------------------------------------ one writer per run folder (issue 24)
def test_a_second_run_into_a_folder_being_trained_into_is_refused(data, tmp_path):
    out = tmp_path / "r"
    train(TrainConfig(**base(data, out, progress=False, tensorboard=False)))
    first = Trainer(TrainConfig(**base(data, out, epochs=2, resume=True, progress=False,
                                       tensorboard=False)))
    try:
        before = snapshot(out)
        with pytest.raises(InputError, match=rf"{out}: another run \(pid \d+\) is training "
                                             r"into this folder"):
            Trainer(TrainConfig(**base(data, out, epochs=3, resume=True)))
        assert snapshot(out) == before  # the refused run wrote nothing
        first.fit()
    finally:
        first.close()
    # Released by close: the next run may resume.
    second = Trainer(TrainConfig(**base(data, out, epochs=3, resume=True, progress=False,
                                        tensorboard=False)))
    second.close()
    assert not (out / ".run.lock").exists()


def test_a_run_folder_locked_by_another_process_is_refused_in_one_line(data, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "r"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from end2you_visual.locks import "
         "OutputLock; l = OutputLock(sys.argv[1] + '/run', wait=False).acquire(); "
         "print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = CliRunner().invoke(cli, cli_args(data, out, "--epochs", "1"))
        assert res.exit_code == 1, res.output
        assert f"Error: {out}: another run (pid {holder.pid}) is training into this " \
               "folder" in res.output
        assert "Traceback" not in res.output and not (out / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------ a full disk (issue 24)
def test_a_disk_full_mid_run_is_one_error_and_the_last_epoch_stays_resumable(
        data, tmp_path, monkeypatch):
    import errno

    out = tmp_path / "r"
    real_save = checkpoints_module.save_checkpoint
    saved = []

    def save(model, path, *args, **kwargs):
        if len(saved) >= 2:  # epoch 1's best.pt and last.pt fit, epoch 2's do not
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        return real_save(model, path, *args, **kwargs)

    monkeypatch.setattr(checkpoints_module, "save_checkpoint", save)
    res = CliRunner().invoke(cli, cli_args(data, out, "--epochs", "3"))
    assert res.exit_code == 1, res.output
    assert res.output.strip().splitlines()[-1] == (
        f"Error: {out}: cannot be written: No space left on device; the run stopped, "
        f"{out / 'last.pt'} holds the last complete epoch: free some space and run again "
        "with --resume")
    assert "Traceback" not in res.output
    monkeypatch.undo()
    assert read_checkpoint(out / "last.pt")["training"]["epoch"] == 1
    assert not (out / ".run.lock").exists()
    resumed = CliRunner().invoke(cli, cli_args(data, out, "--epochs", "2", "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert read_checkpoint(out / "last.pt")["training"]["epoch"] == 2


def test_a_full_disk_at_the_start_is_one_error_line_not_a_logging_cascade(data, small_disk):
    import subprocess
    import sys

    out = small_disk(300, full=True) / "run"
    run = subprocess.run([sys.executable, "-m", "end2you_visual.cli.main", *cli_args(data, out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Logging error" not in run.stderr and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"Error: {out / 'train.log'}: cannot be written: No space left on device; the run "
        "stopped, no epoch was complete: free some space and run again")
    assert not (out / ".run.lock").exists()
