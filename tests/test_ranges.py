"""One encoding of every numeric range and choice list (issue 25): a
:class:`Range` checks a value, says its range and makes the command line's
type, and every command's options come from the library's definitions."""
import dataclasses

import click
import pytest
from click.testing import CliRunner

from end2you_visual import choices
from end2you_visual.cli.main import cli
from end2you_visual.errors import InputError
from end2you_visual.face_settings import NUMERIC_SETTINGS, FaceSettings
from end2you_visual.ranges import COUNT, INDEX, NON_NEGATIVE, POSITIVE, WINDOW, Range
from end2you_visual.training.config import CHOICES, RANGES, TrainConfig


def _command(name):
    return cli.get_command(click.Context(cli), name)


def _params(name):
    return {p.name: p for p in _command(name).params}


# ------------------------------------------------------------------ Range
@pytest.mark.parametrize("allowed, text", [
    (Range(0, 1, high_open=True), "in [0, 1)"), (Range(0, 1, low_open=True), "in (0, 1]"),
    (Range(0, 1, low_open=True, high_open=True), "in (0, 1)"), (Range(1, 2048), "in [1, 2048]"),
    (COUNT, ">= 1"), (POSITIVE, "> 0"), (Range(high=5), "<= 5"),
    (Range(high=5, high_open=True), "< 5"), (Range(), "any number"),
])
def test_a_range_says_itself(allowed, text):
    assert allowed.text() == text


def test_a_range_checks_like_check_number():
    assert Range(0, 1, high_open=True).check("--x", 0) == 0.0
    assert isinstance(COUNT.check("--n", 3.0), int) and COUNT.check("--n", 3.0) == 3
    with pytest.raises(InputError, match=r"^--x: must be in \[0, 1\), got 1.0$"):
        Range(0, 1, high_open=True).check("--x", 1.0)
    with pytest.raises(InputError, match=r"^--n: must be a whole number, got 2.5$"):
        COUNT.check("--n", 2.5)
    with pytest.raises(InputError, match=r"^--n: must be >= 1, got 0$"):
        COUNT.check("--n", 0)
    with pytest.raises(InputError, match=r"^--f: must be a finite number, got nan$"):
        POSITIVE.check("--f", float("nan"))


@pytest.mark.parametrize("allowed, inside, outside", [
    (Range(0, 1, high_open=True), [0, 0.5, 0.999], [1, -0.1, float("nan"), float("inf")]),
    (Range(0, 1, low_open=True), [1, 1e-9], [0, 1.01]),
    (COUNT, [1, 10 ** 9], [0, -1]), (NON_NEGATIVE, [0, 3.5], [-1e-9]),
])
def test_contains(allowed, inside, outside):
    assert all(allowed.contains(v) for v in inside)
    assert not any(allowed.contains(v) for v in outside)


def test_the_command_line_type_has_the_same_bounds():
    t = Range(0, 1, integer=False, low_open=True).click_type()
    assert isinstance(t, click.FloatRange)
    assert (t.min, t.max, t.min_open, t.max_open) == (0, 1, True, False)
    t = Range(1, 2048, integer=True).click_type()
    assert isinstance(t, click.IntRange) and (t.min, t.max) == (1, 2048)
    with pytest.raises(click.BadParameter):
        t.convert("0", None, None)
    assert WINDOW.click_type().convert("0", None, None) == 0
    assert INDEX == Range(0, integer=True)


def _same(click_type, allowed):
    kind = click.IntRange if allowed.integer else click.FloatRange
    return (type(click_type) is kind and
            (click_type.min, click_type.max, click_type.min_open, click_type.max_open)
            == (allowed.low, allowed.high, allowed.low_open, allowed.high_open))


# ------------------------------------------------------- training settings
def test_each_training_range_fits_its_field_type():
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name, allowed in RANGES.items():
        kind = types[name].__args__[0] if hasattr(types[name], "__args__") else types[name]
        assert allowed.integer == (kind is int), name


def test_train_options_take_the_configs_ranges_and_choices():
    params = _params("train")
    for name, allowed in RANGES.items():
        assert _same(params[name].type, allowed), name
    for name, words in CHOICES.items():
        assert list(params[name].type.choices) == list(words), name
    assert CHOICES["stem"] == tuple(choices.STEMS) and CHOICES["precision"] == choices.PRECISIONS
    assert CHOICES["temporal"] == choices.TEMPORALS
    assert CHOICES["modality"] == choices.MODALITIES


def test_a_recipe_value_out_of_range_names_the_range_of_the_cli():
    config = TrainConfig(train=["x.h5"], dropout=1.0)
    with pytest.raises(InputError, match=r"^--dropout: must be in \[0, 1\), got 1.0$"):
        config.check()
    assert RANGES["dropout"].text() == "in [0, 1)"


# ----------------------------------------------------------- face settings
@pytest.mark.parametrize("command", ["generate", "predict"])
def test_face_options_take_the_face_settings_ranges_and_choices(command):
    params = _params(command)
    checked = 0
    for f in dataclasses.fields(FaceSettings):
        if f.name not in params:
            continue
        meta = f.metadata
        if meta["choices"] is not None:
            assert list(params[f.name].type.choices) == list(meta["choices"]), f.name
            checked += 1
        elif f.name in NUMERIC_SETTINGS:
            assert isinstance(meta["range"], Range)
            assert meta["range"].integer == (f.type is int), f.name
            assert _same(params[f.name].type, meta["range"]), f.name
            checked += 1
    assert checked >= 10


def test_min_face_size_is_a_whole_number_for_the_api_and_the_cli(tmp_path):
    with pytest.raises(InputError, match="--min-face-size: must be a whole number"):
        FaceSettings(min_face_size=20.5)
    res = CliRunner().invoke(cli, ["generate", str(tmp_path), "--out",
                                                 str(tmp_path / "o"), "--min-face-size", "20.5"])
    assert res.exit_code == 2 and "--min-face-size" in res.output


def test_precision_split_and_generate_choices_come_from_the_library():
    from end2you_visual.audio import AUDIO_MODES, MAX_RATE, MIN_RATE
    from end2you_visual.inputs import LAYOUTS
    from end2you_visual.labels import ALIGN_MODES, INTERPOLATIONS

    for command in ("test", "predict"):
        assert list(_params(command)["precision"].type.choices) == list(choices.PRECISIONS)
    test = _params("test")
    assert list(test["split"].type.choices) == list(choices.SPLITS)
    assert _same(test["window"].type, WINDOW) and _same(test["lanes"].type, COUNT)
    generate = _params("generate")
    assert list(generate["layout"].type.choices) == list(LAYOUTS)
    assert list(generate["align"].type.choices) == list(ALIGN_MODES)
    assert list(generate["interpolation"].type.choices) == list(INTERPOLATIONS)
    assert list(generate["audio"].type.choices) == list(AUDIO_MODES)
    assert list(generate["compression"].type.choices) == ["none", *choices.COMPRESSIONS]
    assert _same(generate["audio_rate"].type, Range(MIN_RATE, MAX_RATE, integer=True))
    for name, allowed in (("tolerance", NON_NEGATIVE), ("image_fps", POSITIVE),
                          ("shard_size", COUNT), ("workers", COUNT), ("num_shards", COUNT),
                          ("shard_index", INDEX)):
        assert _same(generate[name].type, allowed), name
    assert list(_params("evaluate")["interpolation"].type.choices) == list(INTERPOLATIONS)
