import json
import math

import numpy as np
import pytest

from end2you_visual.errors import InputError
from end2you_visual.metrics import (confusion_matrix, evaluate_categorical, evaluate_continuous,
                                    evaluate_multilabel, mae, pearson, rmse, roc_auc)


def test_regression_scores_by_hand():
    x, y = [1, 2, 3, 4], [2, 4, 6, 8]
    assert pearson(x, y) == pytest.approx(1.0, abs=1e-12)
    # errors 1, 2, 3, 4: squares 1, 4, 9, 16 -> mean 7.5
    assert rmse(x, y) == pytest.approx(math.sqrt(7.5), abs=1e-12)
    assert mae(x, y) == pytest.approx(2.5, abs=1e-12)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0, abs=1e-12)
    # x = [1,2,3], y = [1,3,2]: deviations (-1,0,1), (-1,1,0) -> 1 / sqrt(2 * 2)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_pooled_is_ccc_of_concatenation_not_mean_of_files():
    preds = [np.array([0.0, 2.0]), np.array([10.0, 12.0])]
    labels = [np.array([0.0, 2.0]), np.array([0.0, 2.0])]
    report = evaluate_continuous(preds, labels, names=["arousal"], files=["a", "b"])
    assert report.per_file["a"]["arousal"].ccc == pytest.approx(1.0)
    assert report.per_file["b"]["arousal"].ccc == pytest.approx(2 / 102)
    # concatenated (see test_ccc): 2 / 52
    assert report.pooled["arousal"].ccc == pytest.approx(2 / 52)
    assert report.headline == {"arousal": pytest.approx(2 / 52)}
    assert report.pooled["arousal"].n_frames == 4
    # errors: 0, 0, 10, 10
    assert report.pooled["arousal"].mae == pytest.approx(5.0)
    assert report.pooled["arousal"].rmse == pytest.approx(math.sqrt(50.0))


def test_mask_excludes_frames_and_nan_there_is_fine():
    pred = np.array([[1.0, 0.0], [2.0, 0.0], [np.nan, 9.0], [3.0, 1.0]])
    label = np.array([[1.0, 0.0], [2.0, 0.0], [np.nan, -9.0], [3.0, 1.0]])
    mask = np.array([True, True, False, True])
    report = evaluate_continuous([pred], [label], names=["a", "v"], masks=[mask])
    assert report.pooled["a"].ccc == pytest.approx(1.0)
    assert report.pooled["v"].ccc == pytest.approx(1.0)
    assert report.pooled["a"].n_frames == 3
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert json.loads(text)["pooled"]["a"]["n_frames"] == 3


def test_undefined_values_become_none_in_json():
    report = evaluate_continuous([np.ones(4)], [np.arange(4.0)])
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["pooled"]["dim0"]["pearson"] is None
    assert d["pooled"]["dim0"]["ccc"] == 0.0


def test_continuous_errors_name_the_problem():
    with pytest.raises(InputError, match="b.*differ in length"):
        evaluate_continuous([np.zeros(3), np.zeros(3)], [np.zeros(3), np.zeros(4)],
                            files=["a", "b"])
    with pytest.raises(InputError, match="labels contain NaN"):
        evaluate_continuous([np.zeros(3)], [np.array([0.0, np.nan, 1.0])])
    with pytest.raises(InputError, match="empty"):
        evaluate_continuous([np.zeros(0)], [np.zeros(0)])
    with pytest.raises(InputError, match="no predictions"):
        evaluate_continuous([], [])
    with pytest.raises(InputError, match="predictions contain NaN"):
        evaluate_continuous([np.array([np.nan, 1.0])], [np.zeros(2)])


def test_categorical_by_hand():
    target = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    r = evaluate_categorical(pred, target, class_names=["n", "h", "s"])
    assert r.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r.accuracy == pytest.approx(4 / 6)
    # recalls 2/3, 1/2, 1 -> UAR 13/18
    assert r.per_class_recall == {"n": pytest.approx(2 / 3), "h": 0.5, "s": 1.0}
    assert r.uar == pytest.approx(13 / 18)
    # F1 = 2 tp / (true + predicted): 4/5, 2/4, 2/3 -> mean 59/90
    assert r.macro_f1 == pytest.approx(59 / 90)
    json.dumps(r.to_dict(), allow_nan=False)


def test_categorical_scores_argmax_and_absent_class():
    scores = np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0], [0.6, 0.4, 0, 0]])
    r = evaluate_categorical(scores, [0, 1, 1])
    assert r.confusion == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert math.isnan(r.per_class_recall["3"])
    assert r.uar == pytest.approx((1 + 0.5) / 2)       # classes 2, 3 never true
    assert r.to_dict()["per_class_recall"]["3"] is None
    np.testing.assert_array_equal(confusion_matrix([0, 1], [1, 1], 3),
                                  [[0, 0, 0], [1, 1, 0], [0, 0, 0]])


def test_categorical_errors():
    with pytest.raises(InputError):
        evaluate_categorical([0, 1], [0])
    with pytest.raises(InputError):
        evaluate_categorical([], [])
    with pytest.raises(InputError, match="NaN"):
        evaluate_categorical([0, 1], [0.0, np.nan])
    with pytest.raises(InputError, match="out of range"):
        evaluate_categorical([0, 3], [0, 1], num_classes=2)


def test_auc_with_ties_by_hand():
    scores = [0.1, 0.4, 0.4, 0.8, 0.4]
    labels = [0, 0, 1, 1, 1]
    # sorted: 0.1 (rank 1), three 0.4 (ranks 2,3,4 -> 3 each), 0.8 (rank 5).
    # positives' ranks 3 + 5 + 3 = 11; U = 11 - 3*4/2 = 5; AUC = 5 / (3*2) = 5/6.
    # Pairwise: (0.4 vs 0.1) 1 + (0.4 vs 0.4) 0.5, 0.8: 1 + 1, 0.4: 1 + 0.5 -> 5.
    assert roc_auc(scores, labels) == pytest.approx(5 / 6, abs=1e-12)
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert roc_auc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert math.isnan(roc_auc([1, 2], [1, 1]))
    with pytest.raises(InputError):
        roc_auc([1, 2], [0, 2])
    with pytest.raises(InputError):
        roc_auc([1, 2, 3], [0, 1])


def test_multilabel_by_hand():
    scores = np.array([[0.9, 0.2], [0.6, 0.7], [0.3, 0.1], [0.1, 0.4]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    r = evaluate_multilabel(scores, targets, threshold=0.5, label_names=["happy", "sad"])
    # happy: positives 0.9, 0.3; negatives 0.6, 0.1 -> wins 2 + 1 of 4 = 0.75
    # sad: positive 0.7 beats 0.2, 0.1, 0.4 -> 1.0
    assert r.auc == {"happy": pytest.approx(0.75), "sad": 1.0}
    # happy predicted rows 0, 1; true rows 0, 2: tp 1 -> F1 = 2/(2+2) = 0.5
    # sad predicted row 1; true row 1 -> 1.0
    assert r.f1 == {"happy": 0.5, "sad": 1.0}
    assert r.macro_auc == pytest.approx(0.875)
    assert r.macro_f1 == pytest.approx(0.75)
    json.dumps(r.to_dict(), allow_nan=False)


def test_score_is_the_one_dispatch_from_head_to_metrics():
    from end2you_visual.scoring import HEAD_FOR_KIND, HEAD_LABEL_KIND, score

    assert {HEAD_LABEL_KIND[h]: h for h in HEAD_LABEL_KIND} == HEAD_FOR_KIND
    rng = np.random.default_rng(0)
    preds = [rng.normal(size=(5, 2)), rng.normal(size=(4, 2))]
    labels = [rng.normal(size=(5, 2)), rng.normal(size=(4, 2))]
    masks = [np.array([1, 1, 0, 1, 1], bool), np.ones(4, bool)]
    assert score(preds, labels, "regression", masks, ["a", "v"], ["p", "q"]).to_dict() == \
        evaluate_continuous(preds, labels, ["a", "v"], masks, ["p", "q"]).to_dict()
    probs = [np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])]
    onehot = [np.eye(3)[[0, 2, 2]]]
    report = score(probs, onehot, "multiclass", [np.array([1, 1, 0], bool)], ["x", "y", "z"])
    assert report.accuracy == 0.5 and report.class_names == ["x", "y", "z"]
    multi = score([np.array([[0.9, 0.1], [0.4, 0.6]])], [np.array([[1.0, 0.0], [0.0, 0.7]])],
                  "multilabel", names=["p", "q"])
    assert multi.f1 == {"p": 1.0, "q": 1.0}
    with pytest.raises(ValueError, match="head_kind must be one of"):
        score(preds, labels, "ranking")


# ------------------------------------------------ test's headline (issue 25)

def test_the_headline_of_each_label_kind():
    from end2you_visual.testrun import TestResult, format_headline

    continuous = {"label_kind": "continuous", "metrics": {"pooled": {}},
                  "ccc": {"all_frames": {"arousal": 0.5, "valence": None},
                          "face_frames": {"arousal": 0.25, "valence": float("nan")}}}
    assert format_headline(continuous) == ("CCC (all frames): arousal 0.5000, valence n/a\n"
                                           "CCC (face frames): arousal 0.2500, valence n/a")
    multiclass = {"label_kind": "multiclass",
                  "metrics": {"accuracy": 0.75, "uar": 2 / 3, "macro_f1": 0.6}}
    assert format_headline(multiclass) == "accuracy 0.7500, UAR 0.6667, macro F1 0.6000"
    multilabel = {"label_kind": "multilabel", "metrics": {"macro_auc": 0.8, "macro_f1": None}}
    assert format_headline(multilabel) == "macro AUC 0.8, macro F1 null"
    excluded = {"label_kind": "continuous", "metrics": None,
                "error": "every labelled frame is excluded (no face found)"}
    assert format_headline(excluded) == "every labelled frame is excluded (no face found)"
    assert format_headline(None) == format_headline({}) == "no metrics"
    result = TestResult(out_dir=None, label_names=[], sequences=[], csv_paths=[],
                        predictions_path=None, metrics=multiclass)
    assert result.headline() == "accuracy 0.7500, UAR 0.6667, macro F1 0.6000"
