"""Input discovery: the input CSV, video folders, image folders, sharding."""

import numpy as np
import pytest
from PIL import Image

from end2you_visual.errors import InputError
from end2you_visual.inputs import (InputItem, discover_inputs,
                                   list_sequence_frames, read_input_csv,
                                   scan_image_classes, scan_image_sequences,
                                   scan_video_dir, select_shard,
                                   shard_from_env)


def touch(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def png(path, size=(4, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=128).save(path)
    return path


# --- read_input_csv ----------------------------------------------------------

def test_input_csv_relative_paths_metadata_and_empty_label(tmp_path):
    csv_path = touch(tmp_path / "data" / "input.csv",
                     "raw_file,label_file,split,subject\n"
                     "sub/clip.mp4,sub/clip.csv,train,S1\n"
                     "\n"
                     "other.avi,,devel,S2\n")
    items = read_input_csv(csv_path)
    assert [item.name for item in items] == ["sub__clip", "other"]
    first, second = items
    assert isinstance(first, InputItem)
    assert first.kind == "video"
    assert first.raw == tmp_path / "data" / "sub" / "clip.mp4"
    assert first.label_file == tmp_path / "data" / "sub" / "clip.csv"
    assert first.label is None
    assert first.metadata == {"split": "train", "subject": "S1"}
    assert second.label_file is None            # empty cell: unlabelled
    assert second.metadata == {"split": "devel", "subject": "S2"}
    # Raw files that do not exist are left to the generator to record.
    assert not first.raw.exists()


def test_input_csv_without_label_column(tmp_path):
    csv_path = touch(tmp_path / "in.csv", "raw_file\na.mp4\nb.mp4\n")
    items = read_input_csv(csv_path)
    assert [(i.name, i.label_file, i.metadata) for i in items] == [
        ("a", None, {}), ("b", None, {})]


def test_input_csv_names_made_unique(tmp_path):
    csv_path = touch(tmp_path / "in.csv",
                     "raw_file,label_file\n"
                     "a/clip.mp4,\n"
                     "a/clip.avi,\n"
                     "a__clip.mp4,\n"
                     "my clip.mp4,\n")
    names = [item.name for item in read_input_csv(csv_path)]
    assert names == ["a__clip", "a__clip__2", "a__clip__3", "my_clip"]


def test_input_csv_names_of_absolute_and_outside_paths(tmp_path):
    inside = tmp_path / "data" / "sub" / "a.mp4"
    outside = tmp_path / "elsewhere" / "deep" / "b.mp4"
    csv_path = touch(tmp_path / "data" / "in.csv",
                     f"raw_file\n{inside}\n{outside}\n../other/c.mp4\n"
                     "./sub/../d.mp4\n")
    items = read_input_csv(csv_path)
    assert [item.name for item in items] == ["sub__a", "b", "c", "d"]
    assert items[1].raw == outside


def test_input_csv_same_raw_file_with_two_label_files(tmp_path):
    csv_path = touch(tmp_path / "in.csv",
                     "raw_file,label_file\nclip.mp4,a.csv\n./clip.mp4,b.csv\n"
                     "clip.mp4,\n")
    items = read_input_csv(csv_path)
    assert [(item.name, item.label_file) for item in items] == [
        ("clip", tmp_path / "a.csv"), ("clip__2", tmp_path / "./b.csv"),
        ("clip__3", None)]


def test_input_csv_same_row_twice(tmp_path):
    csv_path = touch(tmp_path / "in.csv",
                     "raw_file,label_file\nclip.mp4,a.csv\nb.mp4,\n"
                     "./clip.mp4,sub/../a.csv\n")
    with pytest.raises(InputError) as caught:
        read_input_csv(csv_path)
    message = str(caught.value)
    assert "in.csv: row 4 repeats row 2" in message


@pytest.mark.parametrize("text, problem", [
    ("", "is empty"),
    ("video,labels\nclip.mp4,clip.csv\n", "has no 'raw_file' column"),
    ("raw_file,label_file\n", "no data rows"),
    ("raw_file,label_file\n,clip.csv\n", "row 2: raw_file is empty"),
    ("raw_file,label_file\nclip.mp4,clip.csv,x\n", "row 2 has 3 cells"),
    ("raw_file,raw_file\na.mp4,b.mp4\n", "repeated column"),
])
def test_input_csv_bad(tmp_path, text, problem):
    csv_path = touch(tmp_path / "bad_input.csv", text)
    with pytest.raises(InputError) as caught:
        read_input_csv(csv_path)
    assert "bad_input.csv" in str(caught.value)
    assert problem in str(caught.value)


def test_input_csv_missing(tmp_path):
    with pytest.raises(InputError, match="none.csv: input CSV not found"):
        read_input_csv(tmp_path / "none.csv")


# --- scan_video_dir ----------------------------------------------------------

def test_scan_video_dir(tmp_path):
    touch(tmp_path / "b" / "clip2.MP4")
    touch(tmp_path / "b" / "clip2.csv", "time,y\n0,1\n")
    touch(tmp_path / "b" / "clip10.webm")
    touch(tmp_path / "a" / "x.avi")
    touch(tmp_path / "a" / ".hidden.mp4")
    touch(tmp_path / "a" / "notes.txt")
    touch(tmp_path / "top.mkv")
    items = scan_video_dir(tmp_path)
    assert [item.name for item in items] == [
        "a__x", "b__clip2", "b__clip10", "top"]
    assert [item.raw for item in items] == [
        tmp_path / "a" / "x.avi", tmp_path / "b" / "clip2.MP4",
        tmp_path / "b" / "clip10.webm", tmp_path / "top.mkv"]
    assert [item.label_file for item in items] == [
        None, tmp_path / "b" / "clip2.csv", None, None]
    assert {item.kind for item in items} == {"video"}


def test_scan_video_dir_empty(tmp_path):
    touch(tmp_path / "readme.txt")
    with pytest.raises(InputError, match="has no video files"):
        scan_video_dir(tmp_path)
    with pytest.raises(InputError, match="folder not found"):
        scan_video_dir(tmp_path / "nope")


# --- image folders -----------------------------------------------------------

def make_fer(root):
    png(root / "happy" / "img10.png")
    png(root / "happy" / "img2.png")
    png(root / "happy" / "._img1.png")          # macOS resource fork: hidden
    touch(root / "happy" / "readme.txt")
    png(root / "angry" / "a.jpg")
    (root / "sad").mkdir()                      # an empty class still counts
    return root


def test_scan_image_classes(tmp_path):
    items, classes = scan_image_classes(make_fer(tmp_path))
    assert classes == ["angry", "happy", "sad"]
    assert [item.name for item in items] == [
        "angry__a", "happy__img2", "happy__img10"]
    assert [item.raw.name for item in items] == ["a.jpg", "img2.png",
                                                 "img10.png"]
    assert {item.kind for item in items} == {"image"}
    assert [item.metadata for item in items] == [
        {"class": "angry"}, {"class": "happy"}, {"class": "happy"}]
    labels = np.stack([item.label for item in items])
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels, [[1, 0, 0], [0, 1, 0], [0, 1, 0]])


def make_ck(root):
    for name in ("frame10.png", "frame2.png", "frame1.png"):
        png(root / "surprise" / "S005_001" / name)
    png(root / "fear" / "S010_002" / "00001.png")
    return root


def test_scan_image_sequences(tmp_path):
    items, classes = scan_image_sequences(make_ck(tmp_path))
    assert classes == ["fear", "surprise"]
    assert [item.name for item in items] == ["fear__S010_002",
                                             "surprise__S005_001"]
    assert [item.kind for item in items] == ["image_sequence"] * 2
    assert items[1].raw == tmp_path / "surprise" / "S005_001"
    assert items[1].metadata == {"class": "surprise"}
    np.testing.assert_array_equal(items[1].label, [0, 1])
    frames = list_sequence_frames(items[1].raw)
    assert [frame.name for frame in frames] == [
        "frame1.png", "frame2.png", "frame10.png"]


def test_scan_image_sequences_empty_sequence(tmp_path):
    make_ck(tmp_path)
    (tmp_path / "fear" / "S011_001").mkdir()
    with pytest.raises(InputError, match="S011_001: sequence folder has no"):
        scan_image_sequences(tmp_path)


# --- discover_inputs ---------------------------------------------------------

def test_discover_each_layout(tmp_path):
    csv_path = touch(tmp_path / "csv" / "in.csv", "raw_file\nclip.mp4\n")
    items, names = discover_inputs(csv_path)
    assert [item.name for item in items] == ["clip"] and names is None

    touch(tmp_path / "videos" / "s1" / "clip.mov")
    items, names = discover_inputs(tmp_path / "videos")
    assert [item.name for item in items] == ["s1__clip"] and names is None

    items, names = discover_inputs(make_fer(tmp_path / "fer"))
    assert names == ["angry", "happy", "sad"]
    assert {item.kind for item in items} == {"image"}

    items, names = discover_inputs(make_ck(tmp_path / "ck"))
    assert names == ["fear", "surprise"]
    assert {item.kind for item in items} == {"image_sequence"}


def test_discover_forced_layout(tmp_path):
    make_ck(tmp_path)
    png(tmp_path / "fear" / "stray.png")    # now ambiguous for "auto"
    with pytest.raises(InputError, match="ambiguous"):
        discover_inputs(tmp_path)
    items, _ = discover_inputs(tmp_path, layout="image_sequences")
    assert len(items) == 2
    items, _ = discover_inputs(tmp_path, layout="image_classes")
    assert [item.name for item in items] == ["fear__stray"]
    with pytest.raises(InputError, match="needs a CSV file"):
        discover_inputs(tmp_path, layout="csv")


def test_discover_nothing_usable(tmp_path):
    touch(tmp_path / "empty" / "notes.txt")
    (tmp_path / "empty" / "class_without_images").mkdir()
    with pytest.raises(InputError) as caught:
        discover_inputs(tmp_path / "empty")
    assert "empty: found nothing to read" in str(caught.value)
    with pytest.raises(InputError, match="input not found"):
        discover_inputs(tmp_path / "missing")
    with pytest.raises(InputError, match="neither an input CSV"):
        discover_inputs(touch(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="layout"):
        discover_inputs(tmp_path, layout="hdf5")


# --- sharding ----------------------------------------------------------------

def test_select_shard_round_robin():
    items = list(range(10))
    shards = [select_shard(items, 3, k) for k in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert select_shard(items, 1, 0) == items
    assert select_shard(items[:2], 4, 3) == []
    with pytest.raises(ValueError):
        select_shard(items, 3, 3)
    with pytest.raises(ValueError):
        select_shard(items, 0, 0)


def test_shard_from_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert shard_from_env() == (1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert shard_from_env() == (4, 2)
    assert shard_from_env({"WORLD_SIZE": "2", "RANK": "1"}) == (2, 1)
    for env in ({"WORLD_SIZE": "2"}, {"WORLD_SIZE": "two", "RANK": "0"},
                {"WORLD_SIZE": "2", "RANK": "2"}):
        with pytest.raises(InputError):
            shard_from_env(env)


def test_a_single_video_file_is_one_item(tmp_path):
    video = tmp_path / "Clip One.MP4"
    video.write_bytes(b"")
    items, names = discover_inputs(video)
    assert names is None and [(i.name, i.kind, i.raw, i.label_file) for i in items] == [
        ("Clip_One", "video", video, None)]
    (tmp_path / "Clip One.csv").write_text("time,a\n0,1\n")
    (item,) = discover_inputs(video)[0]
    assert item.label_file == tmp_path / "Clip One.csv"
