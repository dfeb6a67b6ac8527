"""A first hour without guessing (issue 24): the recipes by name and what they
are for, the default model, a bare --audio, the two CCCs named, the items
of WindowDataset documented, outputs that follow the umask, label CSVs with
another separator, End2You label names, 1-frame plots, long video names.
All on the CPU, tiny."""
import os
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np
import pytest
from click.testing import CliRunner

from end2you_visual.cli.main import cli
from end2you_visual.errors import InputError
from end2you_visual.recipes import find_recipe, recipes_dir, shipped_recipes
from end2you_visual.training import TrainConfig, resolve_auto

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"

pytestmark = pytest.mark.usefixtures("one_thread")


def train_args(data, out, *extra):
    return ["train", str(data), "--window", "8", "--arch", "resnet_tiny", "--hidden-size", "8",
            "--num-layers", "1", "--num-workers", "0", "--no-progress", "--no-tensorboard",
            "--out", str(out), *extra]


# ------------------------------------------ 1. the pretraining recipe on continuous labels

CATEGORICAL_ONLY = ("continuous labels, but {found} for categorical labels: the pretraining "
                    "recipe (pretrain) is for categorical labels; for continuous labels use the "
                    "fine-tuning recipe (--config finetune), or turn these off "
                    "(--label-weighting none --no-resample)")


def test_pretrain_recipe_on_continuous_labels_says_once_which_recipe_fits(tmp_path,
                                                                         write_continuous):
    data = write_continuous(tmp_path / "d.h5", [20, 17, 30], subjects=["p1", "p2", "p3"])
    res = CliRunner().invoke(cli, train_args(data, tmp_path / "o", "--config", "pretrain"))
    assert res.exit_code == 1
    message = CATEGORICAL_ONLY.format(found="label_weighting 'inverse' and resample are")
    assert res.output.strip().splitlines()[-1] == f"Error: {data}: {message}"
    assert res.output.count("Error:") == 1 and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_resolve_auto_names_each_categorical_setting_given_for_continuous_labels():
    config = TrainConfig(resample=True)
    with pytest.raises(InputError) as err:
        resolve_auto(config, "continuous", "cpu", "d.h5")
    assert str(err.value) == "d.h5: " + CATEGORICAL_ONLY.format(found="resample is")
    # the same settings fit categorical labels
    assert resolve_auto(TrainConfig(resample=True, label_weighting="inverse"), "multilabel",
                        "cpu")["weighting"] == "inverse"


# ------------------------------------------------------ 2. recipes by name, zoo recipes

def test_shipped_recipes_have_names_paths_and_descriptions():
    recipes = {r.name: r for r in shipped_recipes()}
    assert {"pretrain", "finetune"} <= set(recipes)
    assert recipes["finetune"].path == recipes_dir() / "finetune.toml"
    assert recipes["finetune"].description == ("Continuous fine-tuning (the paper's RECOLA "
                                               "regime: arousal and valence).")
    assert recipes["pretrain"].description == ("Categorical pretraining (the paper's RealEyes "
                                               "regime).")
    assert all(r.description for r in recipes.values())


def test_find_recipe_takes_a_name_a_path_and_refuses_an_unknown_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout: pretrained/recipes/ is not here
    assert find_recipe("finetune") == recipes_dir() / "finetune.toml"
    assert find_recipe("pretrained/recipes/finetune.toml") == recipes_dir() / "finetune.toml"
    Path("finetune").write_text("lr = 0.5\n")  # a file that exists wins
    assert find_recipe("finetune") == Path("finetune")
    names = ", ".join(r.name for r in shipped_recipes())
    with pytest.raises(InputError) as err:
        find_recipe("finetuning")
    assert str(err.value) == (f"finetuning: no such recipe file, nor a shipped recipe's name; "
                              f"shipped recipes: {names} (e2y-visual zoo recipes)")


def test_zoo_recipes_lists_every_shipped_recipe():
    res = CliRunner().invoke(cli, ["zoo", "recipes"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [f"{r.name}\t{r.description}" for r in shipped_recipes()]
    assert "finetune\tContinuous fine-tuning (the paper's RECOLA regime: arousal and " \
           "valence)." in res.output.splitlines()


def test_train_config_takes_a_shipped_recipe_name_from_any_folder(tmp_path, monkeypatch,
                                                                  write_continuous):
    from end2you_visual.training import trainer as trainer_module

    data = write_continuous(tmp_path / "d.h5", [20])
    seen = {}

    def fake_train(config):
        seen["config"] = config
        return SimpleNamespace(metric="ccc", best_score=0.5, best_epoch=1, epochs_run=1,
                               stopped="done", best_path="best.pt")

    monkeypatch.setattr(trainer_module, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, train_args(data, "o", "--config", "finetune", "--lr", "0.1"))
    assert res.exit_code == 0, res.output
    config = seen["config"]
    assert (config.loss, config.metric, config.head, config.lr) == ("ccc", "ccc", "regression",
                                                                    0.1)
    res = CliRunner().invoke(cli, train_args(data, "o", "--config", "nope"))
    assert res.exit_code == 1
    assert "Error: nope: no such recipe file, nor a shipped recipe's name; shipped recipes: " \
           "finetune, pretrain" in res.output


# ------------------------------------------------------------ 3. the default model

def test_predict_and_extract_default_to_the_most_accurate_cpu_model():
    import json

    from end2you_visual.zoo import DEFAULT_MODEL

    registry = json.loads((REPO / "pretrained" / "registry.json").read_text())
    cpu = [m for m in registry["models"] if m["name"].endswith("-cpu")]
    best = max(cpu, key=lambda m: m["metrics"]["fer2013_valid_accuracy"])
    assert DEFAULT_MODEL == best["name"] == "resnet18-small-fer2013-cpu"
    for command in ("predict", "extract"):
        loaded = cli.get_command(click.Context(cli), command)  # commands load when used
        option = next(p for p in loaded.params if p.name == "model_name")
        assert option.default == DEFAULT_MODEL and not option.required
        res = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
        assert f"[default: {DEFAULT_MODEL}]" in res.output
    makefile = (REPO / "Makefile").read_text()
    assert f"--model {DEFAULT_MODEL} " in makefile and "resnet18-fer2013-cpu " not in makefile


def test_predict_without_model_runs_the_default_model(tmp_path, monkeypatch):
    import end2you_visual.predict as predict_module

    seen = {}

    def fake(videos, model, out_dir, **kwargs):
        seen["model"] = model
        return []

    monkeypatch.setattr(predict_module, "predict_videos", fake)
    res = CliRunner().invoke(cli, ["predict", str(DATA / "single_face.mp4"),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert seen["model"] == "resnet18-small-fer2013-cpu"


# ------------------------------------------------------------------ 4. a bare --audio

@pytest.mark.parametrize("words, audio", [
    (["--audio"], "required"),
    (["--audio", "--size", "32"], "required"),
    (["--audio", "optional"], "optional"),
    (["--audio", "required"], "required"),
    ([], None),
])
def test_a_bare_audio_means_required(tmp_path, monkeypatch, words, audio):
    from end2you_visual.cli import generate as generate_cli

    seen = {}

    def fake(source, out_dir, settings, *args):
        seen["audio"] = settings.audio
        return []

    monkeypatch.setattr(generate_cli, "run_generate", fake)
    res = CliRunner().invoke(cli, ["generate", str(DATA / "single_face.mp4"),
                                   "--out", str(tmp_path / "o"), *words])
    assert res.exit_code == 0, res.output
    assert seen["audio"] == audio


def test_a_bare_audio_before_the_inputs_says_where_it_goes(tmp_path):
    res = CliRunner().invoke(cli, ["generate", "--audio", str(DATA / "single_face.mp4"),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "a bare --audio (required) takes the next word as its value: put it after the " \
        "inputs, or write --audio required" in res.output
    assert not (tmp_path / "o").exists()


# --------------------------------------------------- 5. the two CCCs, named alike

def test_test_and_evaluate_print_both_cccs_named_alike(tmp_path, write_sequences):
    import json

    import torch

    from end2you_visual.models import build_model, save_checkpoint

    def rows(q, n, rng):
        level = rng.uniform(0, 1, n)
        frames = (rng.integers(0, 60, (n, 16, 16, 3)) + level[:, None, None, None] * 190)
        return frames.astype(np.uint8), np.stack([level, 1 - level], 1)

    data = write_sequences(tmp_path / "d.h5", [60, 50], rows, names=["arousal", "valence"],
                           kind="continuous", size=16, face_found=lambda n: np.arange(n) % 4 != 1)
    torch.manual_seed(0)
    save_checkpoint(build_model("resnet_tiny", outputs=2, hidden_size=4, num_layers=1,
                                label_names=["arousal", "valence"], input_size=16),
                    tmp_path / "tiny.pt")
    runner = CliRunner()
    res = runner.invoke(cli, ["test", str(data), "--model", str(tmp_path / "tiny.pt"),
                              "--out", str(tmp_path / "t"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    tested = [line for line in res.output.splitlines() if line.startswith("CCC")]
    assert [line.split(":")[0] for line in tested] == ["CCC (all frames)", "CCC (face frames)"]
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["metrics"]["pooled"]["arousal"]["ccc"] == metrics["ccc"]["all_frames"]["arousal"]
    assert metrics["ccc"]["face_frames"]["arousal"] != metrics["ccc"]["all_frames"]["arousal"]

    res = runner.invoke(cli, ["evaluate", "--pred", str(tmp_path / "t" / "predictions"),
                              "--labels", str(tmp_path / "t" / "labels"),
                              "--out", str(tmp_path / "chain.json"),
                              "--metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    evaluated = [line for line in res.output.splitlines() if line.startswith("CCC")]
    assert [line.split(":")[0] for line in evaluated] == [
        "CCC before (all frames)", "CCC before (face frames)",
        "CCC after (all frames)", "CCC after (face frames)"]
    # the same predictions, the same two numbers
    assert evaluated[0].split(": ")[1] == tested[0].split(": ")[1]
    assert evaluated[1].split(": ")[1] == tested[1].split(": ")[1]
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["before"]["frames"] == "face_frames"
    assert saved["before"]["pooled"]["arousal"]["ccc"] == pytest.approx(
        metrics["ccc"]["face_frames"]["arousal"])
    assert saved["before"]["all_frames"]["pooled"]["arousal"]["ccc"] == pytest.approx(
        metrics["ccc"]["all_frames"]["arousal"])


# ------------------------------------------------- 6. WindowDataset's items, documented

def documented_item_keys():
    """``{key: (type, shape, audio_only)}`` of docs/format.md's table of item keys."""
    text = (REPO / "docs" / "format.md").read_text(encoding="utf-8")
    table = text.split("<!-- window-item-keys -->", 1)[1].strip().split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        key, kind, shape, what = [cell.strip() for cell in line.strip("|").split("|")]
        rows[key.strip("`")] = (kind, shape, "with `audio=True` only" in what)
    return rows


def test_every_key_of_a_window_item_is_documented_with_its_type_and_shape(tmp_path,
                                                                          write_sequences):
    import torch

    from end2you_visual.data import WindowDataset

    def rows(q, n, rng):
        return rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), rng.uniform(-1, 1, (n, 2))

    def noise(q, n, rng):
        return rng.uniform(-0.5, 0.5, n * 640).astype(np.float32)

    path = write_sequences(tmp_path / "a.h5", [5, 9], rows, names=["arousal", "valence"],
                           kind="continuous", size=16, audio=noise, audio_rate=16000)
    documented = documented_item_keys()
    sizes = {"W": 8, "S": 16, "L": 2, "A": 640}
    for audio in (False, True):
        item = WindowDataset(path, window=8, audio=audio)[1]
        expected = {k for k, (_, _, audio_only) in documented.items() if audio or not audio_only}
        assert set(item) == expected
        for key, value in item.items():
            kind, shape, _ = documented[key]
            if kind == "int":
                assert type(value) is int and shape == "", key
            else:
                assert isinstance(value, torch.Tensor), key
                assert kind == f"{str(value.dtype).replace('torch.', '')} tensor", key
                dims = tuple(sizes.get(d.strip(), d.strip()) for d in shape.strip("()").split(",")
                             if d.strip())
                assert tuple(value.shape) == tuple(int(d) for d in dims), key
    assert (item["sequence"], item["start"]) == (1, 0)
    doc = WindowDataset.__doc__
    assert all(f"``{key}``" in doc for key in documented)


# ----------------------------------------------------- 7. outputs follow the umask

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_extract_outputs_follow_the_umask_in_every_format(tmp_path, write_sequences, umask):
    import stat

    import torch

    from end2you_visual.extract import extract_features
    from end2you_visual.files import atomic_write_text
    from end2you_visual.models import build_model

    def rows(q, n, rng):
        return rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), rng.random((n, 2))

    data = write_sequences(tmp_path / "clips.h5", [4], rows, names=["arousal", "valence"],
                           kind="continuous", size=16)
    torch.manual_seed(0)
    model = build_model("resnet_tiny", outputs=2, hidden_size=4, input_size=16).eval()
    old = os.umask(umask)
    try:
        outputs = [Path(r.output) for fmt in ("hdf5", "npy", "csv")
                   for r in extract_features([data], model, tmp_path / "out", fmt=fmt,
                                             device="cpu")]
        atomic_write_text(tmp_path / "plain.txt", "x")
    finally:
        os.umask(old)
    assert [o.name for o in outputs] == ["clips.features.h5", "clips.features.npy",
                                         "clips.features.csv"]
    modes = {o.name: stat.S_IMODE(o.stat().st_mode) for o in outputs}
    assert modes == {o.name: 0o666 & ~umask for o in outputs}
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(modes)  # no leftovers


# ------------------------------------------- 8. label CSVs with another separator

@pytest.mark.parametrize("separator, name", [(";", "';'"), ("\t", "tabs"), ("|", "'|'")])
def test_a_label_csv_with_another_separator_names_it(tmp_path, separator, name):
    from end2you_visual.labels import read_labels

    path = tmp_path / "p01.csv"
    header = separator.join(["time", "arousal", "valence"])
    path.write_text(f"{header}\n" + separator.join(["0", "0,1", "0,2"]) + "\n")
    for columns in (None, ["arousal", "valence"]):
        with pytest.raises(InputError) as err:
            read_labels(path, label_columns=columns)
        assert str(err.value) == (f"{path}: columns are separated by {name}, not commas "
                                  f"(header {header!r}); save the label file with commas "
                                  "between its columns")


def test_an_input_csv_with_semicolons_names_the_separator(tmp_path):
    (tmp_path / "input.csv").write_text("raw_file;label_file\nclip.mp4;clip.csv\n")
    res = CliRunner().invoke(cli, ["generate", str(tmp_path / "input.csv"),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert (f"Error: {tmp_path / 'input.csv'}: columns are separated by ';', not commas "
            "(header 'raw_file;label_file'); save the input CSV with commas between its "
            "columns") in res.output
    assert not (tmp_path / "out").exists()


# ------------------------------------------------- 9. End2You files' label names

def write_end2you(path, steps=6, per_step=2, size=16, seed=0):
    """An End2You visual file: visual (T, n, 3, H, W) float32, labels (T, 2), no names."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        h5["visual"] = (rng.random((steps, per_step, 3, size, size)) * 255).astype(np.float32)
        h5["labels"] = rng.normal(size=(steps, 2)).astype(np.float32)
    return path


@pytest.fixture
def tiny_av(tmp_path):
    import torch

    from end2you_visual.models import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(build_model("resnet_tiny", outputs=2, hidden_size=4, num_layers=1,
                                       label_names=["arousal", "valence"], input_size=16),
                           tmp_path / "tiny.pt")


def test_test_names_the_labels_of_end2you_files(tmp_path, tiny_av):
    import json

    from end2you_visual.testrun import run_test

    data = write_end2you(tmp_path / "e2y.hdf5")
    with pytest.raises(InputError, match=r"label names \['label_0', 'label_1'\] do not match"):
        run_test(tiny_av, [data], tmp_path / "refused", device="cpu", end2you_fps=25)
    result = run_test(tiny_av, [data], tmp_path / "api", device="cpu", end2you_fps=25,
                      label_names=["arousal", "valence"])
    assert result.metrics["metrics"]["names"] == ["arousal", "valence"]
    assert result.metrics["frames"] == 12
    res = CliRunner().invoke(cli, ["test", str(data), "--model", str(tiny_av), "--out",
                                   str(tmp_path / "cli"), "--device", "cpu", "--end2you-fps",
                                   "25", "--label-names", "arousal,valence"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["ccc"] == \
        result.metrics["ccc"]
    assert (tmp_path / "cli" / "labels" / "e2y.csv").read_text().startswith(
        "time,arousal,valence\n")


def test_label_names_refuse_a_wrong_count_and_files_that_name_their_labels(
        tmp_path, tiny_av, write_continuous):
    from end2you_visual.testrun import run_test

    e2y = write_end2you(tmp_path / "e2y.hdf5")
    with pytest.raises(InputError) as err:
        run_test(tiny_av, [e2y], tmp_path / "o", device="cpu", label_names=["arousal"])
    assert str(err.value) == (f"{e2y}: has 2 label columns ['label_0', 'label_1'], but "
                              "--label-names gives 1: ['arousal']")
    own = write_continuous(tmp_path / "own.h5", [5])
    run_test(tiny_av, [own], tmp_path / "same", device="cpu", label_names=["arousal", "valence"])
    res = CliRunner().invoke(cli, ["test", str(own), "--model", str(tiny_av), "--out",
                                   str(tmp_path / "o"), "--label-names", "valence,arousal"])
    assert res.exit_code == 1
    assert (f"Error: {own}: names its labels ['arousal', 'valence']; --label-names names "
            "End2You's unnamed label_0, label_1... columns: leave it out, or give these "
            "names") in res.output
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------- 10. a one-frame plot

def test_a_one_frame_sequence_gets_its_plot(tmp_path, tiny_av, write_sequences):
    import warnings

    from end2you_visual.testrun import run_test

    def rows(q, n, rng):
        return rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), rng.uniform(-1, 1, (n, 2))

    data = write_sequences(tmp_path / "d.h5", [1, 6], rows, names=["arousal", "valence"],
                           kind="continuous", size=16, name="clip{}".format)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either (matplotlib's identical xlims)
        result = run_test(tiny_av, [data], tmp_path / "o", device="cpu", plot=True)
    assert [p.name for p in result.plot_paths] == ["clip0.png", "clip1.png"]
    assert (tmp_path / "o" / "plots" / "clip0.png").stat().st_size > 1000


@pytest.mark.parametrize("kind", ["regression", "multiclass", "multilabel"])
def test_a_one_frame_figure_draws_its_point(kind):
    import warnings

    from matplotlib.patches import Rectangle

    from end2you_visual.plots import prediction_figure

    preds = np.array([[0.2, 0.7, 0.1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = prediction_figure(np.array([0.0]), preds, np.array([[0.0, 1.0, 0.0]]),
                                ["a", "b", "c"], kind=kind)
    ax = fig.axes[0]
    assert ax.get_xlim() == (-0.5, 0.5)
    if kind == "multiclass":
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert [round(b.get_height(), 6) for b in bars[:3]] == [0.2, 0.7, 0.1]
    else:
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
        assert lines and all(line.get_marker() == "o" for line in lines)


# ------------------------------------------------------- 11. long video names

@pytest.mark.parametrize("command, ending", [("predict", ".csv"), ("extract", ".features.h5")])
def test_a_long_video_name_is_refused_before_any_decoding(tmp_path, monkeypatch, command,
                                                          ending):
    import shutil

    import end2you_visual.video as video_module
    from end2you_visual.files import TEMPORARY_EXTRA, name_limit

    def no_decoding(*args, **kwargs):
        raise AssertionError("the video was decoded before its output names were checked")

    for name in ("probe_video", "iter_frame_batches"):
        monkeypatch.setattr(video_module, name, no_decoding)
    stem = "v" * 246  # 250 characters with .mp4: the output fits, its temporary file not
    video = tmp_path / f"{stem}.mp4"
    shutil.copy(DATA / "single_face.mp4", video)
    out = tmp_path / "out"
    limit = name_limit(tmp_path)
    needed = len(stem) + len(ending) + TEMPORARY_EXTRA
    res = CliRunner().invoke(cli, [command, str(video), "--out", str(out),
                                   "--model", "resnet18-half-fer2013-cpu"])
    assert res.exit_code == 1, res.output
    assert res.output.strip() == (
        f"Error: {video}: name too long for its output file (<name>{ending}): with its "
        f"temporary file's additions it needs {needed} bytes, and {out} takes names of at most "
        f"{limit} bytes; rename it to at most {limit - needed + len(stem)} bytes before the "
        "extension")
    assert not out.exists()


def test_a_name_that_fits_passes_the_check(tmp_path):
    from end2you_visual.files import TEMPORARY_EXTRA, check_name_length, name_limit

    limit = name_limit(tmp_path / "not" / "yet")
    fits = "x" * (limit - TEMPORARY_EXTRA - 4)
    check_name_length(tmp_path / f"{fits}.csv", "v.mp4", fits)
    with pytest.raises(InputError) as err:
        check_name_length(tmp_path / f"{fits}x.csv", "v.mp4", fits + "x")
    assert str(err.value) == (f"v.mp4: name too long for its output file (<name>.csv): with its "
                              f"temporary file's additions it needs {limit + 1} bytes, and "
                              f"{tmp_path} takes names of at most {limit} bytes; rename it to "
                              f"at most {len(fits)} bytes before the extension")
