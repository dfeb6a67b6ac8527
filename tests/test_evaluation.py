"""`evaluation.evaluate`: the whole `e2y-visual evaluate` as one library call
(issue 25): its argument checks, the chain it fits or applies, the metrics
JSON it writes, and the same output through the command line."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from end2you_visual.cli.main import cli
from end2you_visual.errors import ArgumentConflict, InputError
from end2you_visual.evaluation import Evaluation, evaluate, fit_chain_from_csvs
from end2you_visual.postprocess import Chain
from end2you_visual.predictions import write_prediction_csv

AV = ["arousal", "valence"]


@pytest.fixture
def csvs(tmp_path):
    """Two prediction CSVs (a face missing in some frames) and their labels."""
    rng = np.random.default_rng(0)
    for stem, n in (("a", 60), ("b", 45)):
        t = np.arange(n) / 25.0
        labels = np.stack([np.sin(t), np.cos(2 * t)], axis=1)
        preds = 0.5 * labels + 0.3 + 0.05 * rng.normal(size=labels.shape)
        write_prediction_csv(tmp_path / "pred" / f"{stem}.csv", t, AV, preds,
                             np.arange(n) % 5 != 0)
        rows = "\n".join(f"{x!r},{y!r},{z!r}"
                         for x, (y, z) in zip(t.tolist(), labels.tolist()))
        (tmp_path / "labels").mkdir(exist_ok=True)
        (tmp_path / "labels" / f"{stem}.csv").write_text("time,arousal,valence\n" + rows + "\n")
    return tmp_path


def test_fit_saves_the_chain_and_the_metrics(csvs):
    result = evaluate([csvs / "pred"], csvs / "chain.json", [csvs / "labels"],
                      metrics_path=csvs / "m.json")
    assert isinstance(result, Evaluation) and result.fitted
    assert result.written == [csvs / "chain.json"] and result.metrics_path == csvs / "m.json"
    chain, before, after = fit_chain_from_csvs([csvs / "pred"], [csvs / "labels"])
    assert Chain.load(csvs / "chain.json") == chain == result.chain
    saved = json.loads((csvs / "m.json").read_text())
    assert saved == {"before": before.to_dict(), "after": after.to_dict()} \
        == json.loads(json.dumps(result.metrics_dict()))
    assert [line.split(":")[0] for line in result.ccc_lines()] == [
        "CCC before (all frames)", "CCC before (face frames)",
        "CCC after (all frames)", "CCC after (face frames)"]
    assert sorted(p.name for p in csvs.iterdir()) == ["chain.json", "labels", "m.json", "pred"]


def test_apply_takes_a_chain_or_its_file(csvs):
    chain = evaluate(csvs / "pred", csvs / "chain.json", csvs / "labels").chain
    applied = evaluate(csvs / "pred", csvs / "post", chain=chain)
    assert not applied.fitted and applied.before is None and applied.ccc_lines() == []
    assert applied.metrics_dict() is None
    assert [p.name for p in applied.written] == ["a.csv", "b.csv"]
    again = evaluate(csvs / "pred", csvs / "post2", csvs / "labels", chain=csvs / "chain.json",
                     metrics_path=csvs / "applied.json")
    assert again.chain == chain
    assert [p.read_text() for p in again.written] == [p.read_text() for p in applied.written]
    assert json.loads((csvs / "applied.json").read_text())["after"]["names"] == AV


CONFLICTS = [
    ({}, [], "fitting a chain needs --labels (or use --apply)"),
    ({"chain": "c.json", "outputs": ["arousal"]}, ["--apply", "c.json", "--outputs", "arousal"],
     "--outputs is taken from the chain with --apply"),
    ({"chain": "c.json", "metrics_path": "m.json"}, ["--apply", "c.json", "--metrics", "m.json"],
     "--metrics needs --labels"),
]


@pytest.mark.parametrize("kwargs, argv, message", CONFLICTS)
def test_arguments_that_do_not_go_together_are_refused_before_any_work(csvs, kwargs, argv,
                                                                       message):
    (csvs / "c.json").write_text("{}\n")
    with pytest.raises(ArgumentConflict) as err:
        evaluate([csvs / "pred"], csvs / "out.json", **kwargs)
    assert str(err.value) == message and isinstance(err.value, InputError)
    # The command line: a usage error (status 2), the same message.
    res = CliRunner().invoke(cli, ["evaluate", "--pred", str(csvs / "pred"),
                                   "--out", str(csvs / "out.json")]
                             + [str(csvs / a) if a.endswith(".json") else a for a in argv])
    assert res.exit_code == 2 and res.output.endswith(f"Error: {message}\n"), res.output
    assert "Usage: " in res.output and not (csvs / "out.json").exists()


def test_an_unknown_interpolation_is_refused_before_any_work(csvs):
    with pytest.raises(InputError) as err:
        evaluate([csvs / "pred"], csvs / "out.json", [csvs / "labels"], interpolation="cubic")
    assert str(err.value) == ("--interpolation: must be one of ['previous', 'nearest', "
                              "'linear'], got 'cubic'")
    assert not (csvs / "out.json").exists()


def test_an_existing_metrics_file_is_kept_unless_overwrite(csvs):
    (csvs / "m.json").write_text("{}\n")
    with pytest.raises(InputError, match="--metrics .*m.json: already exists; use --overwrite"):
        evaluate([csvs / "pred"], csvs / "chain.json", [csvs / "labels"],
                 metrics_path=csvs / "m.json")
    assert (csvs / "m.json").read_text() == "{}\n" and not (csvs / "chain.json").exists()
    evaluate([csvs / "pred"], csvs / "chain.json", [csvs / "labels"],
             metrics_path=csvs / "m.json", overwrite=True)
    assert set(json.loads((csvs / "m.json").read_text())) == {"before", "after"}


def test_the_command_prints_what_the_library_returns(csvs):
    res = CliRunner().invoke(cli, ["evaluate", "--pred", str(csvs / "pred"), "--labels",
                                   str(csvs / "labels"), "--out", str(csvs / "cli.json"),
                                   "--metrics", str(csvs / "cli-m.json")])
    assert res.exit_code == 0, res.output
    result = evaluate([csvs / "pred"], csvs / "api.json", [csvs / "labels"],
                      metrics_path=csvs / "api-m.json")
    assert res.output.splitlines() == (result.chain.table().splitlines()
                                       + [f"wrote {csvs / 'cli.json'}"] + result.ccc_lines())
    assert (csvs / "cli-m.json").read_text() == (csvs / "api-m.json").read_text()
    res = CliRunner().invoke(cli, ["evaluate", "--pred", str(csvs / "pred"), "--apply",
                                   str(csvs / "cli.json"), "--out", str(csvs / "post")])
    assert res.exit_code == 0, res.output
    assert res.output == f"wrote 2 file(s) to {csvs / 'post'}\n"
