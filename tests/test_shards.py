"""`generate`'s share of the inputs on several machines (issue 25): the
flags, torchrun's RANK/WORLD_SIZE, a SLURM job array's variables, both
launchers at once, and the errors that name the variable."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from end2you_visual.cli.main import cli
from end2you_visual.errors import InputError
from end2you_visual.shards import (SLURM_ARRAY_VARIABLES, Shard, default_shard,
                                   environment_shard, slurm_array_shard)

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE") + SLURM_ARRAY_VARIABLES


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variable set: each test sets its own."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _array(task, first, last, step=None, count=None):
    """A SLURM array task's variables, as sbatch --array=first-last[:step] sets them."""
    step_ = step or 1
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
           "SLURM_ARRAY_TASK_MAX": str(last),
           "SLURM_ARRAY_TASK_COUNT": str(count if count is not None
                                         else (last - first) // step_ + 1)}
    if step is not None:
        env["SLURM_ARRAY_TASK_STEP"] = str(step)
    return env


def test_no_launcher_is_one_shard(clean_env):
    assert default_shard() == (1, 0)
    assert environment_shard() == ((1, 0), None)
    assert slurm_array_shard() is None


def test_torchrun_rank_of_world_size(clean_env):
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("RANK", "2")
    assert default_shard() == Shard(num_shards=4, shard_index=2)


@pytest.mark.parametrize("env, expected", [
    (_array(3, 0, 9), (10, 3)),                      # --array=0-9, task 3
    (_array(7, 1, 20), (20, 6)),                     # --array=1-20: numbered from MIN
    (_array(20, 0, 30, step=10), (4, 2)),            # --array=0-30:10: tasks 0, 10, 20, 30
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "2",
      "SLURM_ARRAY_TASK_MAX": "5"}, (4, 2)),         # no COUNT: MAX - MIN + 1 tasks
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, (3, 1)),  # MIN 0
])
def test_a_slurm_array_task_is_its_shard(clean_env, env, expected):
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert default_shard() == expected
    assert slurm_array_shard(env) == expected


def test_torchrun_in_each_array_task_splits_every_task_again():
    env = {**_array(2, 0, 2), "RANK": "1", "WORLD_SIZE": "4"}
    shard, source = environment_shard(env)
    assert shard == (12, 9)
    assert source == "SLURM_ARRAY_TASK_ID=2 (task 2 of 3) and RANK=1 of WORLD_SIZE=4"
    # Every (task, rank) gets its own shard, and together they are all of them.
    got = [default_shard(environ={**_array(t, 1, 3), "RANK": str(r), "WORLD_SIZE": "2"})
           for t in (1, 2, 3) for r in (0, 1)]
    assert {s.num_shards for s in got} == {6}
    assert sorted(s.shard_index for s in got) == list(range(6))


def test_flags_win_over_the_environment():
    broken = {"SLURM_ARRAY_TASK_ID": "x", "RANK": "3"}
    assert default_shard(5, 1, environ=broken) == (5, 1)  # the environment is not read
    env = _array(3, 0, 9)
    assert default_shard(20, None, environ=env) == (20, 3)  # the index from the array
    assert default_shard(None, 7, environ=env) == (10, 7)   # the count from the array


@pytest.mark.parametrize("num_shards, shard_index, env, where, words", [
    (None, None, {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"},
     "SLURM_ARRAY_TASK_ID", ["whole number", "'x'"]),
    (None, None, {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "two"},
     "SLURM_ARRAY_TASK_COUNT", ["whole number", "'two'"]),
    (None, None, {"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_ID",
     ["SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MAX", "--num-shards"]),
    # --array=1,5,6: not evenly spaced, a task's share is unknown
    (None, None, _array(5, 1, 6, count=3), "SLURM job array",
     ["SLURM_ARRAY_TASK_ID=5", "SLURM_ARRAY_TASK_COUNT=3", "--array=0-9"]),
    (None, None, _array(3, 0, 8, step=2), "SLURM job array", ["SLURM_ARRAY_TASK_STEP=2"]),
    (None, None, {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "1",
                  "SLURM_ARRAY_TASK_STEP": "0"}, "SLURM_ARRAY_TASK_STEP", [">= 1"]),
    (None, None, {"RANK": "1"}, None, ["WORLD_SIZE", "RANK"]),
    (None, None, {"RANK": "2", "WORLD_SIZE": "2"}, None, ["RANK=2"]),
    (2, None, _array(3, 0, 9), "--num-shards",
     ["has no shard 3", "SLURM_ARRAY_TASK_ID=3", "--shard-index"]),
    (None, 4, {"RANK": "0", "WORLD_SIZE": "4"}, "--shard-index",
     ["not below the 4 shard(s)", "WORLD_SIZE=4", "--num-shards"]),
    (None, 1, {}, "--shard-index", ["not below the 1 shard(s) without --num-shards"]),
    (3, 3, {}, "--shard-index", ["must be in [0, 3), got 3"]),
    (0, None, {}, "--num-shards", ["must be >= 1"]),
])
def test_a_bad_shard_is_an_input_error_naming_its_source(num_shards, shard_index, env, where,
                                                         words):
    with pytest.raises(InputError) as err:
        default_shard(num_shards, shard_index, environ=env)
    if where is None:
        assert err.value.path is None
    else:
        assert err.value.path.startswith(where)
    for word in words:
        assert word in str(err.value)


def test_generate_in_a_slurm_array_needs_no_flags(clean_env, tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    for k in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(
            tmp_path / "imgs" / "a" / f"{k}.png")
    outputs = []
    for task in (1, 2):  # sbatch --array=1-2
        for name, value in _array(task, 1, 2).items():
            clean_env.setenv(name, value)
        res = CliRunner().invoke(cli, ["generate", str(tmp_path / "imgs"), "--out",
                                       str(tmp_path / "out"), "--skip-detection", "--size", "8",
                                       "--shard-size", "2"])
        assert res.exit_code == 0, res.output
        manifest = json.loads((tmp_path / "out" / f"manifest-shard{task - 1}of2.json")
                              .read_text())
        outputs.append(sorted(r["output"].rsplit("/", 1)[-1] for r in manifest["files"]))
    # Three shard files, split between the two tasks as --num-shards 2 would.
    assert outputs == [["images-00000.h5", "images-00002.h5"], ["images-00001.h5"]]


def test_generate_names_a_bad_slurm_variable(clean_env, tmp_path):
    clean_env.setenv("SLURM_ARRAY_TASK_ID", "3")
    clean_env.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    res = CliRunner().invoke(cli, ["generate", str(tmp_path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert "Error: SLURM job array (SLURM_ARRAY_TASK_ID=3, SLURM_ARRAY_TASK_COUNT=3)" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()
