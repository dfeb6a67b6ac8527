import numpy as np
import pytest
from PIL import Image

from end2you_visual.errors import InputError
from end2you_visual.plots import plot_confusion, plot_predictions, plot_training_curves

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG


def test_plot_predictions_with_gaps(tmp_path):
    t = np.arange(100) / 25
    preds = np.stack([np.sin(t), np.cos(t)], axis=1)
    face = np.ones(100, bool)
    face[30:40] = False
    path = plot_predictions(t, preds, preds + 0.1, ["arousal", "valence"],
                            tmp_path / "sub" / "p.png", face_found=face)
    assert path == tmp_path / "sub" / "p.png" and _is_png(path)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["p.png"]


def test_plot_predictions_without_labels(tmp_path):
    t = np.arange(10) / 25
    path = plot_predictions(t, np.arange(10.0), None, ["arousal"], tmp_path / "p.png")
    assert _is_png(path)


def test_plot_predictions_shape_errors(tmp_path):
    with pytest.raises(InputError):
        plot_predictions(np.arange(5), np.zeros((4, 1)), None, ["a"], tmp_path / "p.png")
    with pytest.raises(InputError):
        plot_predictions(np.arange(5), np.zeros((5, 2)), None, ["a"], tmp_path / "p.png")
    assert not list(tmp_path.iterdir())


def test_plot_confusion(tmp_path):
    path = plot_confusion([[5, 1, 0], [2, 3, 1], [0, 0, 0]], ["neutral", "happy", "sad"],
                          tmp_path / "cm.png")
    assert _is_png(path)
    with pytest.raises(InputError):
        plot_confusion([[1, 2]], ["a"], tmp_path / "bad.png")


def test_training_curves_from_logs(tmp_path):
    for run, accs in (("a", [0.4, 0.5]), ("b", [0.55])):
        (tmp_path / run).mkdir()
        rows = "\n".join(f"{e},{a},100,10" for e, a in enumerate(accs, 1))
        (tmp_path / run / "log.csv").write_text(
            "epoch,valid_accuracy,train_seconds,valid_seconds\n" + rows + "\n")
    logs = [tmp_path / "a" / "log.csv", tmp_path / "b" / "log.csv"]
    out = plot_training_curves(logs, "accuracy", tmp_path / "curve.png")
    assert Image.open(out).format == "PNG"
    with pytest.raises(InputError, match="valid_ccc"):
        plot_training_curves(logs, "ccc", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
