import numpy as np
import pytest
from PIL import Image

from end2you_visual.errors import InputError
from end2you_visual.plots import plot_confusion, plot_predictions

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """The pixel size of a PNG file (None: not a PNG)."""
    if path.read_bytes()[:8] != PNG:
        return None
    with Image.open(path) as image:
        return image.size


def test_plot_predictions_with_gaps(tmp_path):
    t = np.arange(100) / 25
    preds = np.stack([np.sin(t), np.cos(t)], axis=1)
    face = np.ones(100, bool)
    face[30:40] = False
    path = plot_predictions(t, preds, preds + 0.1, ["arousal", "valence"],
                            tmp_path / "sub" / "p.png", face_found=face)
    # figsize (11, 2.2 x 2 outputs + 0.8) inches at 100 dpi
    assert path == tmp_path / "sub" / "p.png" and _png_size(path) == (1100, 520)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["p.png"]


def test_plot_predictions_without_labels(tmp_path):
    t = np.arange(10) / 25
    path = plot_predictions(t, np.arange(10.0), None, ["arousal"], tmp_path / "p.png")
    assert _png_size(path) == (1100, 300)


def test_plot_predictions_shape_errors(tmp_path):
    with pytest.raises(InputError):
        plot_predictions(np.arange(5), np.zeros((4, 1)), None, ["a"], tmp_path / "p.png")
    with pytest.raises(InputError):
        plot_predictions(np.arange(5), np.zeros((5, 2)), None, ["a"], tmp_path / "p.png")
    assert not list(tmp_path.iterdir())


def test_plot_confusion(tmp_path):
    path = plot_confusion([[5, 1, 0], [2, 3, 1], [0, 0, 0]], ["neutral", "happy", "sad"],
                          tmp_path / "cm.png")
    assert _png_size(path) == (430, 280)  # (1 + 0.6 x 3 classes + 1.5, 1 + 0.6 x 3) inches
    with pytest.raises(InputError):
        plot_confusion([[1, 2]], ["a"], tmp_path / "bad.png")


EMOTIONS = ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _extents(fig, artist):
    fig.canvas.draw()
    return artist.get_window_extent()


def _probabilities(n, k, seed=0):
    logits = np.random.default_rng(seed).normal(size=(n, k)) * 2
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def test_multiclass_is_one_panel_on_a_shared_probability_axis():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from end2you_visual.plots import prediction_figure

    t = np.arange(40) / 10
    p = _probabilities(40, 7)
    p[:, 1] *= 1e-4  # a class that is never likely stays a sliver, on the same scale
    p /= p.sum(axis=1, keepdims=True)
    face = np.ones(40, bool)
    face[10:15] = False
    fig = prediction_figure(t, p, None, EMOTIONS, face_found=face, title="clip.mp4 · model m",
                            kind="multiclass")
    FigureCanvasAgg(fig)
    [ax] = fig.axes  # one panel, not seven
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.get_ylabel() == "class probability (stacked)" and ax.get_xlabel() == "time (s)"
    assert ax.get_title() == "clip.mp4 · model m"
    legend = ax.get_legend()
    assert [x.get_text() for x in legend.get_texts()] == EMOTIONS + ["no face"]
    assert _extents(fig, legend).x0 > ax.get_window_extent().x1  # right of the curves
    # The top-class strip: one coloured segment per run of the same top class, none
    # where no face was found.
    [strip] = [c for c in ax.collections if c.get_label() == "_top class"]
    top = np.where(face, p.argmax(axis=1), -1)
    runs = [k for i, k in enumerate(top) if k >= 0 and (i == 0 or top[i - 1] != k)]
    assert len(strip.get_segments()) == len(runs)
    bands = [c.get_facecolor()[0][:3] for c in ax.collections[:7]]  # the stacked areas
    np.testing.assert_allclose([c[:3] for c in strip.get_colors()], [bands[k] for k in runs])
    assert [t.get_text() for t in ax.texts] == ["top class "]


def test_multiclass_with_labels_marks_the_true_class_too():
    from end2you_visual.plots import prediction_figure

    t = np.arange(12) / 10
    p = _probabilities(12, 3)
    labels = np.eye(3)[[0] * 6 + [2] * 6]
    fig = prediction_figure(t, p, labels, ["a", "b", "c"], kind="multiclass")
    [ax] = fig.axes
    [true] = [c for c in ax.collections if c.get_label() == "_true class"]
    assert len(true.get_segments()) == 2  # a, then c
    np.testing.assert_allclose([s[0][0] for s in true.get_segments()], [-0.05, 0.55])
    assert sorted(x.get_text() for x in ax.texts) == ["top class ", "true class "]


def test_multilabel_is_one_panel_of_lines_with_a_threshold():
    from end2you_visual.plots import prediction_figure

    t = np.arange(20) / 10
    p = np.random.default_rng(1).uniform(size=(20, 3))
    fig = prediction_figure(t, p, None, ["smile", "frown", "brow"], title="x",
                            kind="multilabel")
    [ax] = fig.axes
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_ylabel() == "label probability"
    assert [x.get_text() for x in ax.get_legend().get_texts()] == [
        "smile", "frown", "brow", "threshold 0.5"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), p[:, 1])


def test_regression_has_a_panel_per_output_titled_with_labels_and_the_legend_outside():
    from end2you_visual.plots import prediction_figure

    t = np.arange(30) / 25
    preds = np.stack([np.sin(t), 3 * np.cos(t)], axis=1)
    fig = prediction_figure(t, preds, preds + 0.1, ["arousal", "valence"],
                            title="p01 · model best.pt")
    top, bottom = fig.axes
    assert (top.get_title(), bottom.get_title()) == ("p01 · model best.pt", "")
    assert (top.get_ylabel(), bottom.get_ylabel()) == ("arousal", "valence")
    legend = top.get_legend()
    assert [x.get_text() for x in legend.get_texts()] == ["ground truth", "prediction"]
    assert _extents(fig, legend).x0 > top.get_window_extent().x1
    with pytest.raises(ValueError, match="kind"):
        prediction_figure(t, preds, None, ["a", "v"], kind="classes")
