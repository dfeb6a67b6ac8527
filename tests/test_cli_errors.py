"""One way to fail: every bad input of issue 11 through the real command group.

Each case runs `e2y-visual ...` in process (click's runner) and must end
with exit status 1 and one `Error: ...` message that names the file or the
option, no traceback, and no file created, changed or removed anywhere
(inputs, earlier outputs, or the output folder).
"""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from end2you_visual.cli.main import cli
from end2you_visual.models import build_model, save_checkpoint
from end2you_visual.predictions import write_prediction_csv

DATA = Path(__file__).parent / "data"
VIDEO = DATA / "single_face.mp4"
AV = ["arousal", "valence"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory, write_sequences):
    """Small valid inputs: an HDF5 file, a checkpoint, prediction and label CSVs."""
    root = tmp_path_factory.mktemp("assets")
    write_sequences(root / "data.h5", [6],
                    lambda q, n, rng: (rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
                                       rng.normal(size=(n, 2))),
                    names=AV, kind="continuous", size=16, name="seq{}".format,
                    source=lambda q: "v.mp4")
    torch.manual_seed(0)
    model = build_model("resnet_tiny", outputs=2, hidden_size=4, num_layers=1,
                        label_names=AV, input_size=16)
    save_checkpoint(model, root / "tiny.pt")
    t = np.arange(20) / 25.0
    values = np.stack([np.sin(t), np.cos(t)], axis=1)
    write_prediction_csv(root / "pred" / "clip.csv", t, AV, values, np.ones(20, bool))
    rows = "\n".join(f"{a!r},{b!r},{c!r}" for a, (b, c) in zip(t, values + 0.1))
    (root / "labels").mkdir()
    (root / "labels" / "clip.csv").write_text("time,arousal,valence\n" + rows + "\n")
    (root / "empty").mkdir()
    return root


def _snapshot(*folders):
    """Every file under ``folders`` with the SHA-256 of its content."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _recipe(tmp, text):
    path = tmp / "bad.toml"
    path.write_text(text)
    return path


def _blocked(tmp):
    """An --out below a regular file: it can never be created."""
    (tmp / "afile").write_text("not a folder\n")
    return tmp / "afile" / "out"


def _csv(tmp, text, name="in.csv"):
    path = tmp / name
    path.write_text(text)
    return path


def _earlier_test_run(tmp, a):
    out = tmp / "out"
    (out / "predictions").mkdir(parents=True)
    (out / "predictions" / "old.csv").write_text("time,arousal,valence,face_found\n")
    (out / "metrics.json").write_text("{}\n")
    return out


# Each case: (id, function (tmp, assets) -> (argv, [substrings the message must hold]),
# needs a machine without CUDA).
CASES = [
    ("generate-empty-csv",
     lambda t, a: (["generate", _csv(t, ""), "--out", t / "out"], ["in.csv"]), False),
    ("generate-header-only-csv",
     lambda t, a: (["generate", _csv(t, "raw_file,label_file\n"), "--out", t / "out"],
                   ["in.csv"]), False),
    ("generate-no-raw_file-column",
     lambda t, a: (["generate", _csv(t, "video,labels\nv.mp4,v.csv\n"), "--out", t / "out"],
                   ["in.csv", "raw_file"]), False),
    ("generate-cuda-without-gpu",
     lambda t, a: (["generate", VIDEO, "--out", t / "out", "--device", "cuda"],
                   ["--device", "cuda"]), True),
    ("generate-unknown-device",
     lambda t, a: (["generate", VIDEO, "--out", t / "out", "--device", "gpu"],
                   ["--device", "gpu"]), False),
    ("generate-unwritable-out",
     lambda t, a: (["generate", VIDEO, "--out", _blocked(t)], [str(t / "afile")]), False),

    ("train-unknown-arch",
     lambda t, a: (["train", a / "data.h5", "--valid", a / "data.h5", "--arch", "nope",
                    "--out", t / "run"], ["arch", "nope"]), False),
    ("train-cuda-without-gpu",
     lambda t, a: (["train", a / "data.h5", "--valid", a / "data.h5", "--arch", "resnet_tiny",
                    "--out", t / "run", "--device", "cuda"], ["--device", "cuda"]), True),
    ("train-unknown-device",
     lambda t, a: (["train", a / "data.h5", "--valid", a / "data.h5", "--arch", "resnet_tiny",
                    "--out", t / "run", "--device", "gpu"], ["--device", "gpu"]), False),
    ("train-toml-syntax-error",
     lambda t, a: (["train", a / "data.h5", "--out", t / "run",
                    "--config", _recipe(t, "epochs = \n")], ["bad.toml"]), False),
    ("train-toml-duplicate-key",
     lambda t, a: (["train", a / "data.h5", "--out", t / "run",
                    "--config", _recipe(t, "epochs = 1\nepochs = 2\n")], ["bad.toml"]), False),
    ("train-toml-window-true",
     lambda t, a: (["train", a / "data.h5", "--out", t / "run",
                    "--config", _recipe(t, "window = true\n")], ["bad.toml", "window"]), False),
    ("train-toml-epochs-string",
     lambda t, a: (["train", a / "data.h5", "--out", t / "run",
                    "--config", _recipe(t, 'epochs = "1"\n')], ["bad.toml", "epochs"]), False),
    ("train-unwritable-out",
     lambda t, a: (["train", a / "data.h5", "--valid", a / "data.h5", "--arch", "resnet_tiny",
                    "--out", _blocked(t)], [str(t / "afile")]), False),
    ("train-no-hdf5-files",
     lambda t, a: (["train", a / "empty", "--out", t / "run"], [str(a / "empty")]), False),

    ("test-cuda-without-gpu",
     lambda t, a: (["test", a / "data.h5", "--model", a / "tiny.pt", "--out", t / "out",
                    "--device", "cuda"], ["--device", "cuda"]), True),
    ("test-unknown-device",
     lambda t, a: (["test", a / "data.h5", "--model", a / "tiny.pt", "--out", t / "out",
                    "--device", "gpu"], ["--device", "gpu"]), False),
    ("test-unwritable-out",
     lambda t, a: (["test", a / "data.h5", "--model", a / "tiny.pt", "--out", _blocked(t),
                    "--device", "cpu"], ["--out", str(t / "afile")]), False),
    ("test-no-hdf5-files",
     lambda t, a: (["test", a / "empty", "--model", a / "tiny.pt", "--out", t / "out",
                    "--device", "cpu"], [str(a / "empty")]), False),
    ("test-over-an-earlier-run",
     lambda t, a: (["test", a / "data.h5", "--model", a / "tiny.pt", "--out",
                    _earlier_test_run(t, a), "--device", "cpu"],
                   [str(t / "out"), "--overwrite"]), False),

    ("predict-cuda-without-gpu",
     lambda t, a: (["predict", VIDEO, "--model", a / "tiny.pt", "--out", t / "out",
                    "--device", "cuda"], ["--device", "cuda"]), True),
    ("predict-unknown-device",
     lambda t, a: (["predict", VIDEO, "--model", a / "tiny.pt", "--out", t / "out",
                    "--device", "gpu"], ["--device", "gpu"]), False),
    ("predict-unwritable-out",
     lambda t, a: (["predict", VIDEO, "--model", a / "tiny.pt", "--out", _blocked(t),
                    "--device", "cpu"], ["--out", str(t / "afile")]), False),

    ("predict-over-earlier-outputs",
     lambda t, a: (["predict", VIDEO, "--model", a / "tiny.pt", "--out",
                    _csv(t, "time\n", "single_face.csv").parent, "--device", "cpu"],
                   [str(t), "single_face.csv", "--overwrite"]), False),

    ("evaluate-unwritable-out",
     lambda t, a: (["evaluate", "--pred", a / "pred", "--labels", a / "labels",
                    "--out", _blocked(t) / "chain.json"], ["--out", str(t / "afile")]), False),
    ("evaluate-over-an-existing-chain",
     lambda t, a: (["evaluate", "--pred", a / "pred", "--labels", a / "labels",
                    "--out", _csv(t, "{}\n", "chain.json")],
                   ["--out", "chain.json", "--overwrite"]), False),
    ("evaluate-over-existing-metrics",
     lambda t, a: (["evaluate", "--pred", a / "pred", "--labels", a / "labels",
                    "--out", t / "chain.json", "--metrics", _csv(t, "{}\n", "m.json")],
                   ["--metrics", "m.json", "--overwrite"]), False),

    ("zoo-fetch-missing-source",
     lambda t, a: (["zoo", "fetch", "resnet18-fer2013-cpu", "--force",
                    "--from", t / "missing.pt"], ["missing.pt"]), False),
]


@pytest.mark.parametrize("make, no_cuda", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_with_one_message(make, no_cuda, assets, tmp_path, monkeypatch):
    monkeypatch.setenv("E2Y_VISUAL_HOME", str(tmp_path / "home"))
    if no_cuda:  # the same on a machine with a GPU
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    argv, names = make(tmp_path, assets)
    before = _snapshot(tmp_path, assets)
    result = CliRunner().invoke(cli, [str(a) for a in argv], prog_name="e2y-visual")
    output = result.output
    assert result.exit_code == 1, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a crash
    assert "Traceback" not in output
    error = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1, output
    for name in names:
        assert name in error[0], (name, output)
    assert ".part" not in output
    assert _snapshot(tmp_path, assets) == before  # nothing written, changed or removed


def test_top_level_help_lists_each_command_once_in_workflow_order():
    result = CliRunner().invoke(cli, ["--help"], prog_name="e2y-visual", terminal_width=100)
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines()
              if line.startswith("  ") and line.split()[0] in cli.list_commands(None)]
    assert listed == ["generate", "zoo", "train", "test", "evaluate", "predict", "extract"]
    assert "  test      Predictions and metrics on an HDF5 dataset." in result.output


# --------------------------------- --help answers before torch is imported (issue 24)
HELP_IMPORTS = """
import sys
from click.testing import CliRunner
from end2you_visual.cli.main import cli
for args in ([], ["generate"], ["zoo"], ["zoo", "list"], ["zoo", "recipes"], ["train"],
             ["test"], ["evaluate"], ["predict"], ["extract"]):
    result = CliRunner().invoke(cli, args + ["--help"])
    assert result.exit_code == 0, (args, result.output)
print(sorted(m for m in ("torch", "torchvision", "scipy", "facenet_pytorch", "matplotlib")
             if m in sys.modules))
"""


def test_every_help_and_zoo_list_answer_without_importing_torch():
    """``--help`` took 5.5 s: torch was imported before click answered."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
