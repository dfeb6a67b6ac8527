"""The zoo's FER2013 recipes: valid settings, and reproduce.sh end to end (tiny, CPU).

The real run (ResNet-50, all of FER2013, on a GPU) is documented in
pretrained/recipes/resnet50_fer2013.toml; here the same script runs on a few
synthetic class-folder images with a tiny backbone for one epoch, which
checks every step's command line, the export and the scoring.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from end2you_visual.training import TrainConfig

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "pretrained" / "recipes"
EMOTIONS = ["angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised"]


@pytest.mark.parametrize("name, arch, size_note", [("resnet50_fer2013", "resnet50", "150"),
                                                   ("resnet18_fer2013_cpu", "resnet18", "48")])
def test_fer2013_recipes_are_valid(name, arch, size_note):
    cfg = TrainConfig.from_toml(RECIPES / f"{name}.toml", train=["data/"])
    cfg.check()
    assert cfg.arch == arch and cfg.window == 1 and cfg.temporal == "none"
    assert cfg.split_by == "sequence" and cfg.valid_fraction == 0.1 and cfg.seed == 0
    assert cfg.head == "multiclass" and cfg.augment and cfg.grey
    assert f"--size {size_note}" in (RECIPES / f"{name}.toml").read_text()


def test_the_distilled_student_and_its_control_differ_only_in_the_teacher():
    distilled = TrainConfig.from_toml(RECIPES / "resnet18_half_fer2013_cpu_distilled.toml",
                                      train=["fer/", "clips/"])
    control = TrainConfig.from_toml(RECIPES / "resnet18_half_fer2013_cpu_labels.toml",
                                    train=["fer/", "clips/"])
    distilled.check()
    control.check()
    assert distilled.teacher == "resnet18-small-fer2013-cpu" and control.teacher is None
    assert distilled.unlabelled_share == 0.1 and control.unlabelled_share is None
    teacher_keys = {"teacher", "distill_weight", "temperature", "unlabelled_share"}
    differ = {k for k in vars(control) if getattr(control, k) != getattr(distilled, k)}
    assert {"teacher", "unlabelled_share"} <= differ <= teacher_keys
    assert distilled.arch == "resnet18_half" and distilled.stem == "small" and distilled.grey


def class_folders(root, per_class=6, side=48):
    """FER2013's layout: one folder of grey PNGs per emotion."""
    rng = np.random.default_rng(0)
    for k, emotion in enumerate(EMOTIONS):
        folder = root / emotion
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (side, side), dtype=np.uint8) // (k + 1)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def test_reproduce_script_packs_trains_exports_and_scores(tmp_path):
    images = class_folders(tmp_path / "train")
    pretrained = tmp_path / "pretrained"
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHON": sys.executable, "E2Y_VISUAL_PRETRAINED": str(pretrained),
           "SIZE": "32", "DEVICE": "cpu", "WORKERS": "1", "NAME": "tiny-fer"}
    work = tmp_path / "work"
    done = subprocess.run(
        ["bash", str(RECIPES / "reproduce.sh"), str(images), str(work),
         "--arch", "resnet_tiny", "--epochs", "1", "--batch-size", "8", "--num-workers", "0",
         "--precision", "fp32", "--no-channels-last", "--no-progress", "--no-tensorboard"],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [line.split("\t")[0] for line in (work / "timings.tsv").read_text().splitlines()]
    assert steps == ["step", "pack", "train", "export", "score"]
    registry = json.loads((pretrained / "registry.json").read_text())
    (entry,) = registry["models"]
    assert entry["name"] == "tiny-fer" and entry["file"] == "tiny-fer.pt"
    assert entry["build"]["grey"] is True and entry["recipe"] == "recipes/resnet50_fer2013.toml"
    assert entry["label_names"] == EMOTIONS and entry["input_size"] == 32
    report = json.loads((work / "accuracy.json").read_text())
    # the accuracy recorded at export is the trainer's on the held-out images, as scored again
    assert entry["metrics"]["valid_accuracy"] == report["float"]["accuracy"]
    split = re.search(r"split by sequence: (\d+) training and (\d+) validation", done.stderr)
    assert split and int(split.group(1)) + int(split.group(2)) == 42
    assert report["sequences"] == int(split.group(2))  # the images the trainer held out
    assert set(report["float"]["per_class_recall"]) == set(EMOTIONS)
    assert "accuracy_lost_points" in report


def test_reproduce_script_explains_its_arguments(tmp_path):
    done = subprocess.run(["bash", str(RECIPES / "reproduce.sh")], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "IMAGES WORK" in done.stdout
    missing = subprocess.run(["bash", str(RECIPES / "reproduce.sh"), str(tmp_path / "nope"),
                              str(tmp_path / "w")], capture_output=True, text=True)
    assert missing.returncode != 0 and "nope" in missing.stderr


def test_the_resnet50_recipe_model_fits_the_zoo_size_limit(tmp_path):
    from end2you_visual.models import build_model, save_checkpoint
    cfg = TrainConfig.from_toml(RECIPES / "resnet50_fer2013.toml", train=["data/"])
    model = build_model(arch=cfg.arch, head=cfg.head, outputs=len(EMOTIONS),
                        temporal=cfg.temporal, grey=cfg.grey, input_size=150)
    path = save_checkpoint(model, tmp_path / "r50.pt", compact=True)
    assert path.stat().st_size <= 25_000_000   # the zoo's limit for a weight file


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_is_a_valid_config(recipe):
    """A recipe is one TOML file (docs/development.md): each one shipped loads
    and passes the config's checks."""
    cfg = TrainConfig.from_toml(recipe, train=["data/"])
    cfg.check()
