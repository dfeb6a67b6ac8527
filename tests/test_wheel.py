"""The zoo survives a normal install: the wheel carries the registry and the
weights, and a wheel installed into a fresh venv outside the checkout loads
the shipped model offline and lists it with `e2y-visual zoo list`.

The fresh venv reuses this environment's dependencies (torch...) without
reinstalling them: a ``.pth`` file adds this environment's site-packages to
its path. Python only processes ``.pth`` files of its own site folders, so
the editable install of this checkout (a ``.pth`` import hook in that
site-packages) stays inactive there, and the package comes from the wheel.
"""
import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL = "resnet18-fer2013-cpu"
SHIPPED = ["registry.json", "README.md", f"{MODEL}.pt", f"{MODEL}.md",
           f"{MODEL}-confusion.png", f"{MODEL}-curve.png", "recipes/finetune.toml",
           "recipes/pretrain.toml", "recipes/reproduce.sh", "recipes/resnet18_fer2013_cpu.toml",
           "recipes/resnet50_fer2013.toml", "resnet18-small-fer2013-cpu.pt",
           "resnet18-small-fer2013-cpu.md", "resnet18-small-fer2013-cpu-confusion.png",
           "resnet18-small-fer2013-cpu-curve.png", "recipes/resnet18_small_fer2013_cpu.toml",
           "recipes/resnet18_small_fer2013_cpu_restart.toml", "resnet18-half-fer2013-cpu.pt",
           "resnet18-half-fer2013-cpu.md", "resnet18-half-fer2013-cpu-confusion.png",
           "resnet18-half-fer2013-cpu-curve.png", "recipes/resnet18_half_fer2013_cpu_distilled.toml",
           "recipes/resnet18_half_fer2013_cpu_labels.toml"]


def source_copy(dest):
    """The files a wheel is built from (setup.cfg's package folders), copied to
    ``dest`` so that the build leaves nothing (build/, *.egg-info) in the checkout."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    folders = {line.split("=")[1].strip() for line in
               config["options"]["package_dir"].strip().splitlines()}
    for name in ("setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(REPO / name, dest / name)
    for folder in sorted(folders):
        shutil.copytree(REPO / folder, dest / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    (root / "src").mkdir()
    src = source_copy(root / "src")
    # No build isolation: the build uses this environment's setuptools, offline.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "--quiet", "-w", str(root / "dist"), str(src)],
                   check=True, capture_output=True, text=True, cwd=root)
    (found,) = (root / "dist").glob("end2you_visual-*.whl")
    return found


def test_the_wheel_holds_the_registry_the_weights_and_the_cards(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        registry = json.loads(archive.read("end2you_visual/pretrained/registry.json"))
        weights = archive.getinfo(f"end2you_visual/pretrained/{MODEL}.pt")
    assert {f"end2you_visual/pretrained/{name}" for name in SHIPPED} <= names
    (entry,) = [m for m in registry["models"] if m["name"] == MODEL]
    assert weights.file_size == entry["size_bytes"] == (REPO / "pretrained" / f"{MODEL}.pt"
                                                        ).stat().st_size
    assert "end2you_visual/cli/main.py" in names and "end2you_visual/zoo.py" in names


def test_the_installed_wheel_loads_the_zoo_offline_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # this environment's dependencies, without its .pth files (the editable hook)
    paths = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    Path(site, "reuse_dependencies.pth").write_text("".join(f"{p}\n" for p in paths))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "--no-index", "--quiet", str(wheel)],
                   check=True, capture_output=True, text=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "E2Y_VISUAL_PRETRAINED", "VIRTUAL_ENV")}
    env.update(E2Y_VISUAL_HOME=str(home), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    code = ("import end2you_visual as e, end2you_visual.zoo as z\n"
            f"m = e.load_pretrained({MODEL!r})\n"
            "print(e.__file__); print(z.pretrained_dir()); print(m.config['outputs'], "
            "m.weights.name)\n")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          cwd=work, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    package_file, shipped, model = done.stdout.splitlines()
    installed = Path(site) / "end2you_visual"
    assert Path(package_file) == installed / "__init__.py"  # the wheel's copy, not the checkout
    assert Path(shipped) == installed / "pretrained"
    assert model == f"7 {MODEL}"
    listed = subprocess.run([str(venv / "bin" / "e2y-visual"), "zoo", "list"],
                            capture_output=True, text=True, cwd=work, env=env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    header, *rows = listed.stdout.splitlines()
    assert header == "name\tarch\thead/outputs\ttraining data\tfile"
    assert len(rows) == 3
    for row, name, arch in zip(rows, [MODEL, "resnet18-small-fer2013-cpu",
                                      "resnet18-half-fer2013-cpu"],
                               ["resnet18", "resnet18", "resnet18_half"]):
        assert row.startswith(f"{name}\t{arch}\tmulticlass/7\t")
        assert row.endswith(f"\t{installed / 'pretrained' / (name + '.pt')}")
    assert not home.exists()  # loading and listing write nothing
