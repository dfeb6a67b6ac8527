"""The user docs are current: the generated CLI page, every Python example and
every `e2y-visual` command line in README.md and docs/*.md.

The Python examples run in order, one namespace per page (as in a notebook),
in a sandbox folder holding tiny stand-ins for the files they name
(`data/p01.h5`, `runs/finetune/best.pt`, `me.mp4`...) and the few variables
the prose defines (`frames`, `val_preds`...). An example that cannot run on
tiny data is marked in the page by the line before its fence:
``<!-- doc-test: skip: <why> -->``.
"""
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from torch import nn

from end2you_visual.cli.main import cli
from end2you_visual.metrics import evaluate_categorical
from end2you_visual.models import build_model, save_checkpoint
from end2you_visual.models.resnet import build_resnet

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
PAGES = [REPO / "README.md"] + sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "cli.md")
# Command lines are also checked in the model cards and pretrained/README.md;
# docs/cli.md is written from the commands' --help (checked below).
COMMAND_PAGES = PAGES + sorted((REPO / "pretrained").glob("*.md"))
SKIP = re.compile(r"<!--\s*doc-test:\s*skip:\s*(.+?)\s*-->\s*$")
MAX_SKIPPED = 2
SIZE = 32
AV = ["arousal", "valence"]
EMOTIONS = ["neutral", "happy", "surprise", "disgust", "contempt", "confusion", "empathy", "other"]


def test_cli_page_matches_the_commands_help():
    done = subprocess.run([sys.executable, str(REPO / "docs" / "cli_reference.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


# --- the Python examples ----------------------------------------------------

def python_snippets(page):
    """``(line, code, skip_reason or None)`` for each ```python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        found.append((text[:match.start()].count("\n") + 1, match.group(1),
                      skip.group(1) if skip else None))
    return found


SNIPPETS = {page: python_snippets(page) for page in PAGES}


@pytest.fixture
def write_av(write_sequences):
    def write(path, length, seed, audio=False):
        """One sequence of ``length`` random 32x32 frames with arousal/valence labels
        (and 16 kHz noise as its audio track, with ``audio``)."""
        def rows(q, n, rng):
            frames = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
            return frames, rng.uniform(-1, 1, (n, 2))

        def noise(q, n, rng):
            return rng.uniform(-0.5, 0.5, n * 640).astype(np.float32)

        write_sequences(path, [length], rows, names=AV, kind="continuous", size=SIZE, seed=seed,
                        name=lambda q: path.stem, source=lambda q: f"{path.stem}.mp4",
                        face_found=lambda n: np.arange(n) % 5 != 2,
                        audio=noise if audio else None, audio_rate=16000 if audio else None)
    return write


def tiny_model(**kw):
    torch.manual_seed(0)
    config = dict(arch="resnet_tiny", hidden_size=8, num_layers=2, input_size=SIZE)
    return build_model(**{**config, **kw}).eval()


def write_end2you_checkpoint(path):
    """The layout End2You's VisualRNNModel saves: a ResNet-18, a GRU and a linear layer."""
    torch.manual_seed(0)
    module = nn.Module()
    module.visual_model = nn.Module()
    module.visual_model.model = nn.Sequential(*list(build_resnet("resnet18").children())[:-1])
    module.rnn = nn.Module()
    module.rnn.rnn = nn.GRU(512, 8, 2, batch_first=True)
    module.linear = nn.Linear(8, 2)
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 3, "state_dict": module.state_dict()}, path)


def make_sandbox(root, text, write_av):
    """The files the examples of a page (``text``) name, tiny (HDF5 files by
    the ``write_av`` fixture)."""
    shutil.copy(DATA / "single_face.mp4", root / "me.mp4")
    (root / "data" / "videos").mkdir(parents=True)
    (root / "data" / "labels").mkdir()
    shutil.copy(DATA / "single_face.mp4", root / "data" / "videos" / "p01.mp4")  # 72 frames
    (root / "data" / "input.csv").write_text(
        "raw_file,label_file,subject\nvideos/p01.mp4,labels/p01.csv,p01\n")
    (root / "data" / "labels" / "p01.csv").write_text(
        "time,arousal,valence\n" + "".join(f"{i * 0.04:.2f},{0.1 * (i % 5):.2f},"
                                           f"{-0.05 * (i % 3):.2f}\n" for i in range(80)))
    write_av(root / "data" / "p01.h5", 160, seed=1)
    (root / "data" / "test").mkdir()
    write_av(root / "data" / "test" / "p02.h5", 40, seed=2)
    save_checkpoint(tiny_model(head="multilabel", outputs=8, label_names=EMOTIONS),
                    root / "runs" / "pretrain" / "best.pt")
    save_checkpoint(tiny_model(head="regression", outputs=2, label_names=AV),
                    root / "runs" / "finetune" / "best.pt")
    if "data/av/" in text:
        path = root / "data" / "av" / "p01.h5"
        path.parent.mkdir()
        write_av(path, 60, seed=3, audio=True)
    if "model/best.pth.tar" in text:
        write_end2you_checkpoint(root / "model" / "best.pth.tar")


def given():
    """The variables the prose around the examples defines."""
    rng = np.random.default_rng(0)
    times = np.arange(200) / 25.0
    truth = np.stack([np.sin(times), np.cos(times / 2)], 1)
    noisy = [truth + rng.normal(0, 0.3, truth.shape) for _ in range(3)]
    classes = rng.integers(0, 3, 60)
    return {
        "pred_TD": noisy[0], "label_TD": truth,
        "pred": torch.from_numpy(noisy[0]).float()[None], "target": torch.from_numpy(truth)
        .float()[None], "mask": torch.ones(1, 200, dtype=torch.bool),
        "val_preds": noisy[:2], "val_labels": [truth, truth], "test_preds": noisy[2:],
        "times": times, "preds": noisy[0], "labels_or_None": truth,
        "face": np.arange(200) % 7 != 3,
        "report": evaluate_categorical(np.where(rng.random(60) < 0.7, classes, 0), classes,
                                       class_names=["negative", "neutral", "positive"]),
        "frames_uint8_THW3": rng.integers(0, 256, (20, SIZE, SIZE, 3), dtype=np.uint8),
        "frames": torch.randint(0, 256, (1, 2, SIZE, SIZE, 3), dtype=torch.uint8,
                                generator=torch.Generator().manual_seed(0)),
    }


def test_few_examples_are_skipped_and_each_says_why():
    skipped = [(page.name, line, why) for page, snippets in SNIPPETS.items()
               for line, _, why in snippets if why is not None]
    assert len(skipped) <= MAX_SKIPPED, skipped
    assert all(len(why) > 20 for _, _, why in skipped), skipped
    assert sum(len(s) for s in SNIPPETS.values()) >= 15  # the examples were found


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("page", [p for p, s in SNIPPETS.items() if s],
                         ids=lambda p: p.name)
def test_python_examples_run(page, tmp_path, monkeypatch, write_av):
    make_sandbox(tmp_path, page.read_text(encoding="utf-8"), write_av)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("E2Y_VISUAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("E2Y_VISUAL_PRETRAINED", raising=False)
    namespace = {"__name__": "__doc_example__", **given()}
    ran = 0
    for line, code, skip in SNIPPETS[page]:
        if skip is None:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)  # noqa: S102
            ran += 1
    if not ran:
        pytest.skip(f"every example of {page.name} is marked doc-test: skip")


# --- the command lines -------------------------------------------------------

COMMAND = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)*e2y-visual\b")


def command_lines(page):
    """``e2y-visual ...`` lines of the code blocks (continuations joined) and code spans."""
    text = page.read_text(encoding="utf-8")
    lines = []
    for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if block.group(1) in ("python", "json"):
            continue
        for line in block.group(2).replace("\\\n", " ").splitlines():
            if COMMAND.match(line.strip()):
                lines.append(line.strip())
    outside = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    lines += [m.group(1) for m in re.finditer(r"`([^`\n]*)`", outside)
              if COMMAND.match(m.group(1))]
    return lines


def check_command_line(line):
    """The commands and options of ``line`` exist; returns the command's path."""
    words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
    words = words[next(i for i, w in enumerate(words) if w == "e2y-visual") + 1:]
    command, path = cli, []
    for word in words:
        if word.startswith("-") and not re.fullmatch(r"-[\d.]+", word):
            option = word.split("=", 1)[0]
            known = {o for p in command.params if isinstance(p, click.Option)
                     for o in p.opts + p.secondary_opts} | {"-h", "--help"}
            assert option in known, f"{line!r}: `e2y-visual {' '.join(path)}` has no {option}"
        elif isinstance(command, click.Group):
            sub = command.get_command(None, word)
            assert sub is not None, f"{line!r}: no command `e2y-visual {' '.join(path + [word])}`"
            command, path = sub, path + [word]
    return " ".join(path)


def test_command_lines_use_existing_commands_and_options():
    documented = {}
    for page in COMMAND_PAGES:
        for line in command_lines(page):
            documented.setdefault(check_command_line(line), []).append(page.name)
    every = {"generate", "zoo list", "zoo info", "zoo fetch", "zoo export", "train", "test",
             "evaluate", "predict"}
    assert every <= set(documented), every - set(documented)


@pytest.mark.parametrize("line, problem", [
    ("e2y-visual predict me.mp4 --modle x", "has no --modle"),
    ("e2y-visual zoo remove NAME", "no command `e2y-visual zoo remove`"),
    ("e2y-visual test data/ [--batch-size 8]", "`e2y-visual test` has no --batch-size"),
])
def test_the_command_line_check_catches_mistakes(line, problem):
    with pytest.raises(AssertionError, match=re.escape(problem)):
        check_command_line(line)


def test_command_lines_are_found_in_blocks_spans_and_continuations(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Run `e2y-visual zoo list` or\n\n```\ne2y-visual train data/ \\\n"
                    "    --out runs/x   # a comment\nE2Y_VISUAL_HOME=/x e2y-visual zoo list\n"
                    "```\n\n```python\nprint('e2y-visual no')\n```\n")
    assert command_lines(page) == ["e2y-visual train data/      --out runs/x   # a comment",
                                   "E2Y_VISUAL_HOME=/x e2y-visual zoo list",
                                   "e2y-visual zoo list"]
