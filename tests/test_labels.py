"""Label CSV reading and label-to-frame alignment, with alignments by hand."""

import numpy as np
import pytest

from end2you_visual.errors import InputError
from end2you_visual.labels import (Alignment, LabelTrack, align_labels,
                                   one_hot, read_labels)


def write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def track_file(tmp_path, times, columns=1, name="labels.csv"):
    """A label CSV with time strings ``times``; column c of row r is
    ``r + 100 * c``."""
    header = "time," + ",".join(f"y{c}" for c in range(columns))
    rows = [f"{t}," + ",".join(str(r + 100 * c) for c in range(columns))
            for r, t in enumerate(times)]
    return write(tmp_path, "\n".join([header] + rows) + "\n", name)


# --- read_labels -------------------------------------------------------------

def test_read_labels_values_and_types(tmp_path):
    path = write(tmp_path, "time,arousal,valence\n"
                           "0.0,0.5,-0.25\n"
                           "\n"
                           "0.04, 0.75 ,1\n")
    track = read_labels(path)
    assert isinstance(track, LabelTrack)
    assert track.path == path
    assert track.names == ["arousal", "valence"]
    assert track.times.dtype == np.float64
    assert track.values.dtype == np.float32
    np.testing.assert_array_equal(track.times, [0.0, 0.04])
    np.testing.assert_array_equal(track.values, [[0.5, -0.25], [0.75, 1.0]])
    assert len(track) == 2


def test_read_labels_named_time_column_and_subset(tmp_path):
    path = write(tmp_path, "\ufeffsubject,happy,t,sad,angry\n"
                           "S1,0,0.0,1,0\n"
                           "S1,1,0.5,0,1\n")
    track = read_labels(path, time_column="t",
                        label_columns=["angry", "happy"])
    assert track.names == ["angry", "happy"]
    np.testing.assert_array_equal(track.times, [0.0, 0.5])
    np.testing.assert_array_equal(track.values, [[0, 0], [1, 1]])


@pytest.mark.parametrize("text, kwargs, problem", [
    ("", {}, "empty"),
    ("time,arousal\n", {}, "no data rows"),
    ("time\n0.0\n", {}, "no label columns"),
    ("time,arousal\n0,1\n", {"label_columns": ["valence"]},
     "no label column 'valence'; the columns are ['time', 'arousal']"),
    ("time,arousal\n0,1\n", {"time_column": "seconds"},
     "no time column 'seconds'"),
    ("time,arousal\n0,1\n0.04,abc\n", {},
     "row 3, column 'arousal': 'abc' is not a number"),
    ("time,arousal\n0,1\n,2\n", {}, "row 3, column 'time': '' is not"),
    ("time,arousal\n0,1\nnan,2\n", {}, "row 3: time is NaN"),
    ("time,arousal\n0,1\ninf,2\n", {}, "row 3: time is infinite"),
    ("time,arousal\n0,1\n0.04,NaN\n", {},
     "row 3, column 'arousal': label is NaN"),
    ("time,arousal\n0,1\n0.04,1e50\n", {}, "label is infinite"),
    ("time,arousal\n0,1\n0.08,1\n0.04,1\n", {},
     "row 4: time 0.04 s is not after the previous row's 0.08 s"),
    ("time,arousal\n0,1\n0,1\n", {}, "row 3: time 0 s is not after"),
    ("time,arousal\n-0.04,1\n0,1\n", {}, "row 2: time -0.04 s is negative"),
    ("time,arousal\n0,1\n0.04,1,2\n", {}, "row 3 has 3 cells"),
    ("time,arousal,arousal\n0,1,1\n", {}, "repeats column"),
])
def test_read_labels_bad_input(tmp_path, text, kwargs, problem):
    path = write(tmp_path, text, "bad_labels.csv")
    with pytest.raises(InputError) as caught:
        read_labels(path, **kwargs)
    assert "bad_labels.csv" in str(caught.value)
    assert problem in str(caught.value)


def test_read_labels_missing_file(tmp_path):
    with pytest.raises(InputError, match="nowhere.csv: label file not found"):
        read_labels(tmp_path / "nowhere.csv")


# --- align="video" -----------------------------------------------------------

# Labels every 40 ms (rows 0..5 at 0, 0.04, ..., 0.2) on a 30 fps video of 7
# frames at 0, 0.0333, 0.0667, 0.1, 0.1333, 0.1667, 0.2 s.
TIMES_40MS = ["0", "0.04", "0.08", "0.12", "0.16", "0.2"]


def test_align_video_previous_by_hand(tmp_path):
    track = read_labels(track_file(tmp_path, TIMES_40MS, columns=2))
    result = align_labels(track, n_frames=7, fps=30)
    assert isinstance(result, Alignment)
    # frame: 0 (0 s) -> row 0; 1 (0.033) -> row 0 (0 <= t < 0.04);
    # 2 (0.067) -> row 1 (0.04); 3 (0.1) -> row 2 (0.08); 4 (0.133) -> row 3
    # (0.12); 5 (0.167) -> row 4 (0.16); 6 (0.2) -> row 5 (0.2, same time).
    rows = [0, 0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(result.frame_indices, np.arange(7))
    assert result.frame_indices.dtype == np.int64
    np.testing.assert_array_equal(result.timestamps, np.arange(7) / 30)
    assert result.labels.dtype == np.float32
    np.testing.assert_array_equal(result.labels[:, 0], rows)
    np.testing.assert_array_equal(result.labels[:, 1], np.add(rows, 100))
    assert result.names == ["y0", "y1"]
    assert result.dropped_rows == 0


def test_align_video_nearest_by_hand(tmp_path):
    track = read_labels(track_file(tmp_path, TIMES_40MS))
    result = align_labels(track, 7, 30, interpolation="nearest")
    # frame 1 (0.033): 0.04 is 0.007 away, 0 is 0.033 -> row 1;
    # frame 2 (0.067): 0.08 is 0.013 away, 0.04 is 0.027 -> row 2;
    # frame 3 (0.1): 0.08 and 0.12 both 0.02 away -> tie, earlier row 2;
    # frame 4 (0.133) -> row 3 (0.12); frame 5 (0.167) -> row 4 (0.16).
    np.testing.assert_array_equal(result.labels[:, 0], [0, 1, 2, 2, 3, 4, 5])


def test_align_video_linear_by_hand(tmp_path):
    track = read_labels(track_file(tmp_path, TIMES_40MS))
    result = align_labels(track, 7, 30, interpolation="linear")
    # Row r is at r * 0.04 s with value r, so frame i at i / 30 s has value
    # (i / 30) / 0.04 = 5 i / 6.
    expected = [0, 5 / 6, 10 / 6, 15 / 6, 20 / 6, 25 / 6, 5]
    np.testing.assert_allclose(result.labels[:, 0], expected, rtol=1e-6)


def test_align_video_holds_before_first_and_after_last_row(tmp_path):
    path = write(tmp_path, "time,y\n0.5,1\n1.0,3\n")
    track = read_labels(path)
    # 25 fps, 51 frames: 0..2 s; labels cover 0.5-1.0 s (gaps of 0.5 and
    # 1.0 s, within the 1 s tolerance).
    previous = align_labels(track, 51, 25).labels[:, 0]
    assert (previous[:25] == 1).all()       # frames 0-24 (0-0.96 s)
    assert (previous[25:] == 3).all()       # frames 25-50 (1.0-2.0 s)
    linear = align_labels(track, 51, 25, interpolation="linear").labels[:, 0]
    assert (linear[:13] == 1).all()         # up to 0.48 s: first row
    assert linear[19] == pytest.approx(1 + 2 * (0.76 - 0.5) / 0.5)
    assert (linear[25:] == 3).all()


def test_labels_every_thirtieth_on_30fps_map_one_to_one(tmp_path):
    # End2You took int(fps * dt) = int(30 * 0.0333) = 0 frames per label.
    # Times as label tools write them, rounded to 4 decimals: 0.0667 is
    # 3e-5 s after frame 2 (0.066667 s) and must still be frame 2's row.
    times = [f"{k / 30:.4f}" for k in range(90)]
    track = read_labels(track_file(tmp_path, times))
    for interpolation in ("previous", "nearest"):
        result = align_labels(track, 90, 30, interpolation=interpolation)
        np.testing.assert_array_equal(result.labels[:, 0], np.arange(90))
    by_labels = align_labels(track, 90, 30, align="labels")
    np.testing.assert_array_equal(by_labels.frame_indices, np.arange(90))
    np.testing.assert_array_equal(by_labels.labels[:, 0], np.arange(90))
    assert by_labels.dropped_rows == 0


def test_recola_40ms_labels_on_25fps_are_exact(tmp_path):
    # Times written as k * 0.04 computes them: 1.4000000000000001 for k=35,
    # a hair after frame 35 (35 / 25 = 1.4), which must still be row 35.
    times = [repr(k * 0.04) for k in range(250)]
    assert times[35] == "1.4000000000000001"
    track = read_labels(track_file(tmp_path, times))
    for interpolation in ("previous", "nearest", "linear"):
        result = align_labels(track, 250, 25, interpolation=interpolation)
        np.testing.assert_array_equal(result.labels[:, 0], np.arange(250))
    by_labels = align_labels(track, 250, 25, align="labels")
    np.testing.assert_array_equal(by_labels.frame_indices, np.arange(250))
    np.testing.assert_array_equal(by_labels.timestamps, track.times)


# --- align="labels" ----------------------------------------------------------

def test_100hz_labels_on_25fps_align_labels(tmp_path):
    # 1000 rows at k / 100 s (0-9.99 s); 250 frames at 25 fps (0-9.96 s).
    # Row k's nearest frame is k / 4 rounded, halves up: rows 0, 1 -> frame
    # 0 (0, 0.25); rows 2-5 -> frame 1 (0.5-1.25); rows 4j-2 .. 4j+1 ->
    # frame j; rows 998, 999 (9.98, 9.99 s) -> frame 250, past the video's
    # last frame (0.03 s, within tolerance): dropped.
    times = [f"{k / 100:.2f}" for k in range(1000)]
    track = read_labels(track_file(tmp_path, times))
    result = align_labels(track, 250, 25, align="labels")
    np.testing.assert_array_equal(result.frame_indices[:10],
                                  [0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(np.bincount(result.frame_indices),
                                  [2] + [4] * 249)
    assert result.dropped_rows == 2
    np.testing.assert_array_equal(result.timestamps, track.times[:998])
    np.testing.assert_array_equal(result.labels[:, 0], np.arange(998))


# --- coverage ----------------------------------------------------------------

def one_hz_labels(tmp_path, first, last):
    times = [str(t) for t in range(first, last + 1)]
    return read_labels(track_file(tmp_path, times, name="clip_labels.csv"))


@pytest.mark.parametrize("align", ["video", "labels"])
@pytest.mark.parametrize("first, last, problem, durations", [
    (0, 5, "labels end 5 s before the video ends", "0-5 s (5 s)"),
    (2, 10, "labels start 2 s after the video starts", "2-10 s (8 s)"),
    (0, 15, "labels run 5 s past the video's end", "0-15 s (15 s)"),
])
def test_coverage_errors(tmp_path, align, first, last, problem, durations):
    # 251 frames at 25 fps: frames at 0-10 s.
    track = one_hz_labels(tmp_path, first, last)
    with pytest.raises(InputError) as caught:
        align_labels(track, 251, 25, align=align)
    message = str(caught.value)
    assert "clip_labels.csv" in message
    assert problem in message
    assert durations in message
    assert "251 frames at 25 fps covers 0-10 s" in message


def test_coverage_tolerance_edge(tmp_path):
    ok = read_labels(track_file(tmp_path, ["0", "9"]))
    align_labels(ok, 251, 25, tolerance=1.0)            # 1 s short: fine
    with pytest.raises(InputError, match="before the video ends"):
        align_labels(ok, 251, 25, tolerance=0.9)


def test_bad_arguments(tmp_path):
    track = read_labels(track_file(tmp_path, TIMES_40MS))
    with pytest.raises(ValueError, match="align"):
        align_labels(track, 7, 30, align="frames")
    with pytest.raises(ValueError, match="interpolation"):
        align_labels(track, 7, 30, interpolation="cubic")
    with pytest.raises(ValueError, match="fps"):
        align_labels(track, 7, 0)
    with pytest.raises(ValueError, match="n_frames"):
        align_labels(track, 0, 30)


def test_one_hot():
    vector = one_hot(2, 4)
    assert vector.dtype == np.float32
    np.testing.assert_array_equal(vector, [0, 0, 1, 0])
    with pytest.raises(ValueError):
        one_hot(4, 4)
