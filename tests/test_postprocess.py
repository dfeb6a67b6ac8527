import json

import numpy as np
import pytest
from click.testing import CliRunner

from end2you_visual.ccc import ccc
from end2you_visual.cli.main import cli
from end2you_visual.errors import InputError
from end2you_visual.postprocess import (Chain, apply_median, apply_shift, fill_gaps,
                                        shift_frames, window_frames)
from end2you_visual.predictions import read_prediction_csvs, write_prediction_csv

FPS = 25.0


def smooth(n, seed, offset=0.0):
    """A smooth random signal (sum of slow sinusoids) with a given mean."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    x = sum(rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
            for f in (0.05, 0.13, 0.31))
    return x - x.mean() + offset


def pooled_ccc(preds, labels):
    return ccc(np.concatenate(preds), np.concatenate(labels))


def test_grid_conversions():
    assert window_frames(0.04, 25) == 1
    assert window_frames(0.12, 25) == 3
    assert window_frames(0.2, 25) == 5
    assert window_frames(0.16, 25) == 5        # 4 frames -> nearest odd, up on ties
    assert window_frames(20.0, 25) == 501
    assert shift_frames(0.4, 25) == 10
    assert shift_frames(0.4, 30) == 12
    assert shift_frames(10 / 25, 25.0) == 10


def test_apply_shift_and_median():
    np.testing.assert_array_equal(apply_shift([1, 2, 3, 4, 5], 2), [3, 4, 5, 5, 5])
    np.testing.assert_array_equal(apply_shift([1, 2, 3], 7), [3, 3, 3])
    np.testing.assert_array_equal(apply_shift([1, 2, 3], 0), [1, 2, 3])
    np.testing.assert_array_equal(apply_median([0, 9, 0, 0, 5, 5, 5], 3), [0, 0, 0, 0, 5, 5, 5])


def test_delay_of_0_4_s_is_shifted_back_exactly():
    labels, preds = [], []
    for seed in range(3):
        g = smooth(500, seed)
        labels.append(g)
        preds.append(np.concatenate([np.full(10, g[0]), g[:-10]]))   # 10 frames = 0.4 s late
    chain = Chain.fit(preds, labels, FPS, names=["arousal"], windows_s=())
    dim = chain.dimensions[0]
    assert dim.shift_s == pytest.approx(0.4, abs=1e-12)
    assert shift_frames(dim.shift_s, FPS) == 10
    step = dim.steps[-1]
    assert step.step == "shift" and step.kept and step.ccc_after > step.ccc_before
    out = chain.apply(preds, FPS)
    # away from the padded edges the delayed copy is restored sample for sample
    for g, p in zip(labels, out):
        np.testing.assert_allclose(p[10:-10], g[10:-10], atol=0.02)


def test_scaled_and_biased_copy_is_recovered():
    labels = [smooth(300, s, offset=2.0) for s in range(2)]
    preds = [0.5 * g - 1.0 for g in labels]
    chain = Chain.fit(preds, labels, FPS, windows_s=())
    dim = chain.dimensions[0]
    g = np.concatenate(labels)
    assert dim.bias == pytest.approx(g.mean() - (0.5 * g.mean() - 1.0), abs=1e-12)
    assert dim.scale == pytest.approx(2.0, abs=1e-12)
    assert dim.scale_center == pytest.approx(g.mean(), abs=1e-12)
    assert dim.shift_s is None
    assert [s.kept for s in dim.steps] == [False, True, True, False]
    out = chain.apply(preds, FPS)
    for o, y in zip(out, labels):
        np.testing.assert_allclose(o, y, atol=1e-12)
    assert pooled_ccc(out, labels) == pytest.approx(1.0, abs=1e-12)


def test_noisy_signal_gets_a_median_filter():
    rng = np.random.default_rng(1)
    labels, preds = [], []
    for _ in range(2):
        g = np.repeat(rng.uniform(-1, 1, 20), 25)                # 1 s steps
        p = g.copy()
        spikes = rng.random(g.size) < 0.15
        p[spikes] += rng.choice([-3.0, 3.0], spikes.sum())       # impulsive noise
        labels.append(g)
        preds.append(p)
    chain = Chain.fit(preds, labels, FPS, shift_range_s=(0.04, 0.5))
    dim = chain.dimensions[0]
    step = dim.steps[0]
    assert step.step == "median" and step.kept
    assert dim.median_window_s is not None and window_frames(dim.median_window_s, FPS) >= 3
    before = pooled_ccc(preds, labels)
    after = pooled_ccc(chain.apply(preds, FPS), labels)
    assert step.ccc_before == pytest.approx(before)
    assert after > before + 0.2


def test_steps_that_do_not_help_are_not_kept():
    labels = [smooth(200, 5)]
    chain = Chain.fit([labels[0].copy()], labels, FPS)        # already perfect
    assert [s.kept for s in chain.dimensions[0].steps] == [False] * 4
    np.testing.assert_array_equal(chain.apply([labels[0]], FPS)[0], labels[0])
    # a constant offset: centring helps, scaling (ratio 1) and shifting do not
    chain = Chain.fit([labels[0] + 0.7], labels, FPS, windows_s=())
    dim = chain.dimensions[0]
    assert [s.kept for s in dim.steps] == [False, True, False, False]
    assert dim.steps[2].value == pytest.approx(1.0)
    assert dim.scale is None and dim.shift_s is None and dim.median_window_s is None
    assert dim.bias == pytest.approx(-0.7)


def test_fit_is_per_dimension_and_json_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    labels = [np.stack([smooth(250, s), smooth(250, s + 10)], axis=1) for s in range(2)]
    preds = [np.stack([0.4 * y[:, 0] + 0.2 * rng.standard_normal(250),
                       np.r_[np.full(5, y[0, 1]), y[:-5, 1]] + 1.0], axis=1) for y in labels]
    chain = Chain.fit(preds, labels, FPS, names=["arousal", "valence"])
    assert chain.names == ["arousal", "valence"]
    assert chain.dimensions[1].shift_s == pytest.approx(0.2)
    assert chain == Chain.fit(preds, labels, FPS, names=["arousal", "valence"])  # deterministic
    text = chain.to_json()
    again = Chain.from_json(text)
    assert again == chain
    assert again.to_json() == text
    path = tmp_path / "chain.json"
    chain.save(path)
    loaded = Chain.load(path)
    for a, b in zip(chain.apply(preds, FPS), loaded.apply(preds, FPS)):
        assert np.array_equal(a, b)
    table = chain.table()
    assert "valence" in table and "shift" in table and "0.20 s" in table
    assert not list(tmp_path.glob("*.tmp"))


def test_masks_exclude_frames_from_the_statistics():
    g = smooth(200, 7)
    p = g + 0.5
    mask = np.ones(200, bool)
    mask[50:60] = False
    label = g.copy()
    label[50:60] = np.nan                                     # unknown there: fine
    chain = Chain.fit([p], [label], FPS, masks=[mask], windows_s=())
    assert chain.dimensions[0].bias == pytest.approx(-0.5, abs=1e-12)


def test_fit_errors():
    with pytest.raises(InputError, match="NaN"):
        Chain.fit([np.array([1.0, np.nan, 2.0])], [np.zeros(3)], FPS)
    with pytest.raises(InputError, match="equal shape"):
        Chain.fit([np.zeros(3)], [np.zeros(4)], FPS)
    with pytest.raises(InputError, match="no validation"):
        Chain.fit([], [], FPS)
    with pytest.raises(InputError, match="not a post-processing chain"):
        Chain.from_json(json.dumps({"x": 1}))


def test_fill_gaps():
    v = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, 3.0], [4.0, np.nan]])
    np.testing.assert_array_equal(fill_gaps(v), [[2, 1], [2, 1], [2, 3], [4, 3]])


def _write(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")


def test_read_prediction_csvs(tmp_path):
    _write(tmp_path / "a.csv", ["time", "arousal", "valence", "face_found"],
           [[0.0, 0.1, "", 0], [0.04, 0.2, 0.3, 1], [0.08, 0.3, 0.4, "true"]])
    [f] = read_prediction_csvs([tmp_path])
    assert f.stem == "a" and f.names == ["arousal", "valence"]
    assert f.fps == pytest.approx(25.0)
    np.testing.assert_array_equal(f.face_found, [False, True, True])
    assert np.isnan(f.values[0, 1]) and f.values[2, 0] == 0.3
    _write(tmp_path / "b.csv", ["time", "arousal"], [[0.0, 1], [0.04, 1], [0.2, 1]])
    with pytest.raises(InputError, match="not uniform"):
        read_prediction_csvs([tmp_path / "b.csv"])
    _write(tmp_path / "c.csv", ["t", "arousal"], [[0.0, 1], [0.04, 1]])
    with pytest.raises(InputError, match="c.csv.*no 'time' column"):
        read_prediction_csvs([tmp_path / "c.csv"])


def _make_split(folder, seeds, delay):
    (folder / "pred").mkdir(parents=True)
    (folder / "labels").mkdir()
    t = np.arange(300) / FPS
    for s in seeds:
        y = np.stack([smooth(300, s, 1.0), smooth(300, s + 50)], axis=1)
        p = np.concatenate([np.repeat(y[:1], delay, axis=0), y[:-delay]]) * 0.5
        face = np.ones(300, bool)
        face[100:110] = False
        p[100:110] = np.nan                                   # no face: empty cells
        write_prediction_csv(folder / "pred" / f"clip{s}.csv", t, ["arousal", "valence"], p, face)
        _write(folder / "labels" / f"clip{s}.csv", ["time", "arousal", "valence"],
               [[repr(float(a)), repr(float(b)), repr(float(c))] for a, (b, c) in zip(t, y)])


def test_evaluate_cli_fit_then_apply(tmp_path):
    _make_split(tmp_path / "val", [1, 2], delay=8)
    _make_split(tmp_path / "test", [3], delay=8)
    runner = CliRunner()
    chain_path = tmp_path / "chain.json"
    result = runner.invoke(cli, ["evaluate", "--pred", str(tmp_path / "val" / "pred"),
                                 "--labels", str(tmp_path / "val" / "labels"),
                                 "--out", str(chain_path),
                                 "--metrics", str(tmp_path / "val_metrics.json")])
    assert result.exit_code == 0, result.output
    assert "CCC before" in result.output and "shift" in result.output
    chain = Chain.load(chain_path)
    assert [d.shift_s for d in chain.dimensions] == [pytest.approx(0.32), pytest.approx(0.32)]
    metrics = json.loads((tmp_path / "val_metrics.json").read_text())
    assert metrics["after"]["pooled"]["arousal"]["ccc"] > metrics["before"]["pooled"]["arousal"]["ccc"]
    assert metrics["after"]["pooled"]["arousal"]["n_frames"] == 2 * 290

    out = tmp_path / "test_post"
    result = runner.invoke(cli, ["evaluate", "--apply", str(chain_path),
                                 "--pred", str(tmp_path / "test" / "pred"),
                                 "--labels", str(tmp_path / "test" / "labels"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    [written] = read_prediction_csvs([out])
    [original] = read_prediction_csvs([tmp_path / "test" / "pred"])
    assert written.stem == "clip3" and written.names == ["arousal", "valence"]
    np.testing.assert_array_equal(written.face_found, original.face_found)
    expected = chain.apply([fill_gaps(original.values)], original.fps)[0]
    np.testing.assert_array_equal(written.values, expected)
    assert not list(out.glob("*.tmp")) and not list(tmp_path.glob("*.tmp"))


def test_evaluate_cli_reports_missing_labels(tmp_path):
    _make_split(tmp_path, [1], delay=3)
    (tmp_path / "labels" / "clip1.csv").rename(tmp_path / "labels" / "other.csv")
    result = CliRunner().invoke(cli, ["evaluate", "--pred", str(tmp_path / "pred"),
                                      "--labels", str(tmp_path / "labels"),
                                      "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 1
    assert "no label CSV for prediction file(s) ['clip1']" in result.output
    result = CliRunner().invoke(cli, ["evaluate", "--pred", str(tmp_path / "pred"),
                                      "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 2 and "needs --labels" in result.output
    assert not (tmp_path / "c.json").exists()


def test_top_class_column_is_written_and_skipped_when_read(tmp_path):
    from end2you_visual.predictions import read_prediction_csv, top_classes

    values = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [np.nan, np.nan, np.nan],
                       [0.1, 0.1, 0.8]])
    face = [True, True, False, False]
    assert top_classes(values, ["a", "b", "c"], face) == ["b", "a", "", ""]
    assert top_classes(values, ["a", "b", "c"]) == ["b", "a", "", "c"]
    write_prediction_csv(tmp_path / "p.csv", [0.0, 0.04, 0.08, 0.12], ["a", "b", "c"],
                         np.nan_to_num(values), face, top_class=True)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "time,a,b,c,face_found,top_class"
    assert [line.split(",")[-1] for line in lines[1:]] == ["b", "a", "", ""]
    series = read_prediction_csv(tmp_path / "p.csv")
    assert series.names == ["a", "b", "c"] and series.face_found.tolist() == face


def test_evaluate_never_replaces_a_finished_output_unasked(tmp_path):
    _make_split(tmp_path / "val", [1], delay=4)
    runner = CliRunner()
    chain_path = tmp_path / "chain.json"
    chain_path.write_text("earlier\n")
    fit = ["evaluate", "--pred", str(tmp_path / "val" / "pred"),
           "--labels", str(tmp_path / "val" / "labels"), "--out", str(chain_path)]
    refused = runner.invoke(cli, fit)
    assert refused.exit_code == 1
    assert refused.output == (f"Error: --out {chain_path}: already exists; use --overwrite "
                              "to replace it, or choose another name\n")
    assert chain_path.read_text() == "earlier\n"
    assert runner.invoke(cli, fit + ["--overwrite"]).exit_code == 0
    chain = Chain.load(chain_path)

    out = tmp_path / "post"
    out.mkdir()
    (out / "clip1.csv").write_text("earlier\n")
    apply = ["evaluate", "--apply", str(chain_path), "--pred", str(tmp_path / "val" / "pred"),
             "--out", str(out)]
    refused = runner.invoke(cli, apply)
    assert refused.exit_code == 1
    assert refused.output == (f"Error: --out {out}: already holds clip1.csv; use --overwrite "
                              "to replace them, or choose another folder\n")
    assert (out / "clip1.csv").read_text() == "earlier\n"
    assert runner.invoke(cli, apply + ["--overwrite"]).exit_code == 0
    [written] = read_prediction_csvs([out])
    assert written.names == chain.names and len(written.time) == 300

    (tmp_path / "file").write_text("x")
    blocked = runner.invoke(cli, ["evaluate", "--apply", str(chain_path), "--pred",
                                  str(tmp_path / "val" / "pred"), "--out",
                                  str(tmp_path / "file" / "post")])
    assert blocked.exit_code == 1 and blocked.output == (
        f"Error: --out {tmp_path}/file/post: cannot be created: {tmp_path}/file is a file, "
        "not a folder\n")


def test_files_at_different_frame_rates_are_fitted_and_applied_at_their_own():
    # the same signal sampled at 25 and 30 fps: a 0.4 s shift is 10 and 12 frames
    rates = [25.0, 30.0]
    truths, preds = [], []
    for fps in rates:
        t = np.arange(int(12 * fps)) / fps
        truth = np.sin(2 * t) + 0.5 * np.sin(5.3 * t)
        truths.append(truth)
        preds.append(np.sin(2 * (t - 0.4)) + 0.5 * np.sin(5.3 * (t - 0.4)))  # lags 0.4 s
    chain = Chain.fit(preds, truths, rates, windows_s=(), min_gain=1e-6)
    assert chain.fps == [25.0, 30.0]
    (dim,) = chain.dimensions
    assert dim.shift_s == pytest.approx(0.4)
    out = chain.apply(preds, rates)
    assert [shift_frames(dim.shift_s, r) for r in rates] == [10, 12]
    for p, q, fps in zip(preds, out, rates):  # centre, scale, then each file's own shift
        steps = dim.scale_center + (p + dim.bias - dim.scale_center) * dim.scale
        np.testing.assert_array_equal(q, apply_shift(steps, shift_frames(0.4, fps)))
    same = Chain.fit(preds[:1], truths[:1], 25.0, windows_s=(), min_gain=1e-6)
    assert same.fps == 25.0
    assert Chain.from_json(chain.to_json()).to_json() == chain.to_json()
