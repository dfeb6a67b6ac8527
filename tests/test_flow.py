"""The README flow on tiny data at mixed frame rates (24 and 30 fps), with no
hand-made file between the commands: generate -> train -> test (valid) ->
evaluate (fit) -> test (test) -> evaluate (apply)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from end2you_visual.cli.main import cli
from end2you_visual.data import open_files
from end2you_visual.predictions import read_prediction_csv, read_prediction_csvs

DATA = Path(__file__).parent / "data"
FACES = ["--detect-every", "8", "--detect-scale", "0.25", "--batch-size", "24",
         "--min-face-size", "40"]

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def label_csv(path, seconds):
    """Labels every 40 ms (as annotation tools write them), not at the frames' times."""
    times = np.arange(0, seconds + 1e-9, 0.04)
    path.write_text("time,arousal,valence\n" + "".join(
        f"{t:.2f},{np.sin(4 * t):.3f},{np.cos(3 * t):.3f}\n" for t in times))
    return path


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    rows = []
    # single_face.mp4: 72 frames at 30 fps; no_face.mp4: 96 frames at 24 fps.
    for stem, video, seconds, split in (("a", "single_face.mp4", 2.4, "train"),
                                        ("b", "single_face.mp4", 2.4, "valid"),
                                        ("c", "no_face.mp4", 3.9, "valid"),
                                        ("d", "single_face.mp4", 2.4, "test"),
                                        ("e", "no_face.mp4", 3.9, "test")):
        shutil.copy(DATA / video, root / f"{stem}{Path(video).suffix}")
        label_csv(root / f"{stem}.csv", seconds)
        rows.append(f"{stem}{Path(video).suffix},{stem}.csv,{split}\n")
    (root / "input.csv").write_text("raw_file,label_file,split\n" + "".join(rows))
    run("generate", root / "input.csv", "--out", root / "h5", "--size", "32", *FACES)
    run("train", root / "h5", "--out", root / "run", "--split-by", "split", "--window", "8",
        "--arch", "resnet_tiny", "--hidden-size", "8", "--num-layers", "1", "--epochs", "1",
        "--batch-size", "2", "--num-workers", "0", "--no-progress", "--no-tensorboard",
        "--device", "cpu")
    model = root / "run" / "best.pt"
    run("test", root / "h5", "--model", model, "--out", root / "valid", "--split", "valid",
        "--device", "cpu", "--window", "8")
    run("evaluate", "--pred", root / "valid" / "predictions", "--labels",
        root / "valid" / "labels", "--out", root / "chain.json")
    run("test", root / "h5", "--model", model, "--out", root / "test", "--split", "test",
        "--device", "cpu", "--window", "8")
    output = run("evaluate", "--pred", root / "test" / "predictions", "--labels",
                 root / "test" / "labels", "--apply", root / "chain.json",
                 "--out", root / "test" / "post", "--metrics", root / "test" / "post.json")
    return root, output


def test_test_keeps_to_its_split_and_writes_the_labels_of_its_frames(flow):
    root, _ = flow
    assert sorted(p.name for p in (root / "valid" / "predictions").iterdir()) == ["b.csv",
                                                                                 "c.csv"]
    assert sorted(p.name for p in (root / "test" / "labels").iterdir()) == ["d.csv", "e.csv"]
    files = {f.path.stem: f for f in open_files([root / "h5"])}
    for stem, fps, frames in (("b", 30.0, 72), ("c", 24.0, 96)):
        preds = read_prediction_csv(root / "valid" / "predictions" / f"{stem}.csv")
        labels = read_prediction_csv(root / "valid" / "labels" / f"{stem}.csv")
        clip = files[stem].read(0, frames=False)
        assert preds.fps == fps and len(preds.time) == frames
        np.testing.assert_array_equal(labels.time, preds.time)
        np.testing.assert_array_equal(labels.values, np.asarray(clip.labels, np.float32))
        assert files[stem].sequences[0].metadata["split"] == "valid"


def test_the_chain_is_fitted_and_applied_at_each_files_own_rate(flow):
    root, output = flow
    chain = json.loads((root / "chain.json").read_text())
    assert chain["fps"] == [30.0, 24.0]   # b.csv at 30 fps, c.csv at 24 fps
    written = read_prediction_csvs([root / "test" / "post"])
    assert [(f.stem, f.fps, len(f.time)) for f in written] == [("d", 30.0, 72), ("e", 24.0, 96)]
    metrics = json.loads((root / "test" / "post.json").read_text())
    assert sorted(metrics) == ["after", "before"]
    assert metrics["after"]["files"] == ["d", "e"]
    assert output.splitlines()[0] == f"wrote 2 file(s) to {root / 'test' / 'post'}"


def test_evaluate_aligns_label_csvs_at_other_times(flow):
    """The hand-written label CSVs (every 40 ms) against 30 and 24 fps
    predictions: aligned with generate's interpolation, the same labels as
    `test` wrote (generate aligned them the same way)."""
    root, _ = flow
    from end2you_visual.evaluation import pair_with_labels

    preds = read_prediction_csvs([root / "valid" / "predictions"])
    own = pair_with_labels(preds, [root / "b.csv", root / "c.csv"])
    written = pair_with_labels(preds, [root / "valid" / "labels"])
    assert [len(y) for y in own] == [72, 96]
    for a, b in zip(own, written):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
