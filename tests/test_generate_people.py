"""`generate --faces all` and the input CSV's ``person`` column (issue 23),
on composites of the bundled clips made in the test."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from end2you_visual.cli.main import cli
from end2you_visual.data import SequenceFile
from end2you_visual.generate import GenerateSettings, generate

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

SETTINGS = dict(size=24, batch_size=24)


@pytest.fixture(scope="module")
def two_people(tmp_path_factory, side_by_side):
    """The bundled man twice, left (single_face.mp4) and right (face_noface.mov), 72 frames."""
    root = tmp_path_factory.mktemp("gen_people")
    return side_by_side(DATA / "single_face.mp4", DATA / "face_noface.mov",
                                  root / "two.mp4", crops=(160, 220), frames=72, swap=72)


@pytest.fixture(scope="module")
def stacked(tmp_path_factory, ffmpeg):
    """Two faces one above the other (the same horizontal position)."""
    root = tmp_path_factory.mktemp("stacked")
    out = root / "stacked.mp4"
    ffmpeg("-i", DATA / "single_face.mp4", "-i", DATA / "face_noface.mov", "-filter_complex",
           "[0:v]fps=25,scale=-2:240,crop=320:240,trim=end_frame=50,setpts=PTS-STARTPTS[a];"
           "[1:v]fps=25,scale=-2:240,crop=320:240,trim=end_frame=50,setpts=PTS-STARTPTS[b];"
           "[a][b]vstack[out]", "-map", "[out]", "-c:v", "libx264", "-crf", "18",
           "-pix_fmt", "yuv420p", out)
    return out


def labels_csv(path, value, seconds=2.8):
    times = np.arange(0, seconds, 0.04)
    path.write_text("time,arousal\n" + "".join(f"{t:.2f},{value}\n" for t in times))
    return path


def test_faces_all_writes_one_sequence_per_person(two_people, tmp_path):
    (result,) = generate(two_people, tmp_path / "out",
                         GenerateSettings(faces="all", **SETTINGS), preview=True,
                         progress=False)
    assert result.status == "written" and result.sequences == 2
    assert [p["id"] for p in result.persons] == [1, 2]
    data = SequenceFile(tmp_path / "out" / "two.h5")
    assert [s.name for s in data.sequences] == ["two_person1", "two_person2"]
    for seq, person in zip(data.sequences, result.persons):
        assert seq.length == 72
        assert json.loads(json.dumps(seq.metadata))["person"] == person
        found = data.read(seq.index).face_found
        assert found.sum() == person["frames"] >= 60
    row = json.loads((tmp_path / "out" / "manifest.json").read_text())["files"][0]
    assert row["persons"] == result.persons
    assert (tmp_path / "out" / "previews" / "two.png").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json",
                                                                    "previews", "two.h5"]


def test_labels_for_left_and_right_land_on_their_people(two_people, tmp_path):
    shutil.copy(two_people, tmp_path / "two.mp4")
    labels_csv(tmp_path / "left.csv", 0.25)
    labels_csv(tmp_path / "right.csv", 0.75)
    (tmp_path / "in.csv").write_text("raw_file,label_file,person\n"
                                     "two.mp4,left.csv,left\ntwo.mp4,right.csv,right\n")
    results = generate(tmp_path / "in.csv", tmp_path / "out", GenerateSettings(**SETTINGS),
                       progress=False)
    assert [r.status for r in results] == ["written", "written"]
    by_value = {}
    for r in results:
        data = SequenceFile(r.output)
        (seq,) = data.sequences
        labels = data.read(0).labels
        by_value[np.unique(labels).item()] = seq.metadata["person"]["mean_x"]
    assert by_value[0.25] < 0.5 < by_value[0.75]


@pytest.mark.parametrize("person, problem", [
    ("7", "person 7 is not among the people found in the video (found: 1, 2)"),
    ("middle", "person column: 'middle' is not main, left, right or a person id (1, 2, ...)"),
])
def test_a_person_that_cannot_be_found_fails_that_row_alone(two_people, tmp_path, person,
                                                            problem):
    shutil.copy(two_people, tmp_path / "two.mp4")
    labels_csv(tmp_path / "a.csv", 0.5)
    labels_csv(tmp_path / "b.csv", 0.5)
    (tmp_path / "in.csv").write_text("raw_file,label_file,person\n"
                                     f"two.mp4,a.csv,{person}\ntwo.mp4,b.csv,left\n")
    bad, good = generate(tmp_path / "in.csv", tmp_path / "out", GenerateSettings(**SETTINGS),
                         progress=False)
    assert bad.status == "failed" and bad.error == f"{tmp_path / 'a.csv'}: {problem}"
    assert good.status == "written"
    assert not Path(bad.output).exists()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_two_people_equally_far_left_are_an_error_not_a_guess(stacked, tmp_path):
    shutil.copy(stacked, tmp_path / "stacked.mp4")
    labels_csv(tmp_path / "a.csv", 0.5, seconds=1.9)
    (tmp_path / "in.csv").write_text("raw_file,label_file,person\nstacked.mp4,a.csv,left\n")
    res = CliRunner().invoke(cli, ["generate", str(tmp_path / "in.csv"), "--out",
                                   str(tmp_path / "out"), "--size", "24"])
    assert res.exit_code == 1
    assert (f"{tmp_path / 'a.csv'}: person left: people 1 and 2 are equally far left"
            in res.output), res.output
    assert "name the person by id instead" in res.output


def test_nobody_in_view_is_an_error_naming_the_label_file(tmp_path):
    shutil.copy(DATA / "no_face.mp4", tmp_path / "cartoon.mp4")
    labels_csv(tmp_path / "a.csv", 0.5, seconds=3.9)
    (tmp_path / "in.csv").write_text("raw_file,label_file,person\ncartoon.mp4,a.csv,right\n")
    (result,) = generate(tmp_path / "in.csv", tmp_path / "out", GenerateSettings(**SETTINGS),
                         progress=False)
    assert result.status == "failed"
    assert result.error.startswith(f"{tmp_path / 'a.csv'}: person right: nobody is visible "
                                   "during its labels' time span")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from end2you_visual.models import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("resnet_tiny", outputs=2, hidden_size=8, num_layers=1,
                        label_names=["arousal", "valence"], input_size=24)
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "tiny.pt")


def test_predict_faces_all_writes_a_csv_and_a_plot_per_person_and_a_timeline(
        two_people, tiny_model, tmp_path):
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["predict", str(two_people), "--model", str(tiny_model),
                                   "--faces", "all", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "two.people.png", "two.person1.csv", "two.person1.png", "two.person2.csv",
        "two.person2.png"]
    assert "person 1: face in " in res.output and str(out / "two.person2.csv") in res.output
    rows = (out / "two.person1.csv").read_text().splitlines()
    assert rows[0] == "time,arousal,valence,face_found" and len(rows) == 73
    # A second run into the folder is refused, as for one face.
    again = CliRunner().invoke(cli, ["predict", str(two_people), "--model", str(tiny_model),
                                     "--faces", "all", "--out", str(out), "--device", "cpu"])
    assert again.exit_code == 1 and "already holds predictions" in again.output


def test_predict_faces_all_from_python_gives_each_person_their_own_predictions(
        two_people, tiny_model):
    from end2you_visual.predict import predict_video

    result = predict_video(two_people, str(tiny_model), device="cpu", faces="all")
    assert [p.person["id"] for p in result.people] == [1, 2]
    a, b = result.people
    assert a.predictions.shape == b.predictions.shape == (72, 2)
    assert not np.allclose(np.nan_to_num(a.predictions), np.nan_to_num(b.predictions))
    assert (result.face_found == (a.face_found | b.face_found)).all()


def test_extract_faces_all_writes_one_sequence_per_person(two_people, tiny_model, tmp_path):
    import h5py

    from end2you_visual.extract import extract_features

    (result,) = extract_features([two_people], str(tiny_model), tmp_path / "ex", device="cpu",
                                 faces="all")
    with h5py.File(result.output) as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["sequences/name"][()]]
        assert names == ["two_person1", "two_person2"]
        assert f["features"].shape[0] == 2 * 72
