"""Recipes on a Python without a TOML parser (3.9/3.10 without tomli):
config imports, and only reading a recipe is an InputError saying what is needed."""
from __future__ import annotations

from pathlib import Path

import pytest

from end2you_visual.errors import InputError
from end2you_visual.training import config
from end2you_visual.training.config import TrainConfig, read_toml

RECIPES = Path(__file__).resolve().parents[1] / "pretrained" / "recipes"


def test_reading_a_recipe_without_a_toml_parser_says_what_is_needed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "tomllib", None)
    recipe = RECIPES / "finetune.toml"
    with pytest.raises(InputError) as info:
        read_toml(recipe)
    assert str(info.value) == (f"{recipe}: reading a TOML recipe needs Python 3.11 or later "
                               "(or the tomli package on Python 3.9 and 3.10)")
    with pytest.raises(InputError) as info:
        TrainConfig.from_toml(recipe, train=["data/"])
    assert "needs Python 3.11" in str(info.value)
    # A missing recipe is still reported as missing.
    with pytest.raises(InputError, match="no such recipe file"):
        read_toml(RECIPES / "missing.toml")


def test_settings_without_a_recipe_need_no_toml_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "tomllib", None)
    cfg = TrainConfig.from_toml(None, train=["data/"], epochs=3)
    assert (cfg.train, cfg.epochs, cfg.lr) == (["data/"], 3, 4e-5)
