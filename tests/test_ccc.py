import math

import numpy as np
import pytest
import torch

from end2you_visual.ccc import ccc, ccc_loss, ccc_per_column
from end2you_visual.errors import InputError


def test_ccc_by_hand():
    # x = [1,2,3,4], y = [2,4,6,8]: mean 2.5 and 5; population variances
    # var(x) = (2.25+0.25+0.25+2.25)/4 = 1.25, var(y) = 4*1.25 = 5,
    # cov = 2*1.25 = 2.5, (2.5-5)^2 = 6.25
    # -> rho_c = 2*2.5 / (1.25 + 5 + 6.25) = 5 / 12.5 = 0.4
    assert ccc([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(0.4, abs=1e-12)
    # y = -x: cov = -1.25, var 1.25 each, (2.5+2.5)^2 = 25 -> -2.5/27.5 = -1/11
    assert ccc([1, 2, 3, 4], [-1, -2, -3, -4]) == pytest.approx(-1 / 11, abs=1e-12)
    assert ccc([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert isinstance(ccc([1, 2], [1, 3]), float)


def test_ccc_matches_plain_numpy_formula():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal(200)
        y = 0.6 * x + rng.standard_normal(200) * 0.7 + 0.3
        cov = np.mean((x - x.mean()) * (y - y.mean()))
        expected = 2 * cov / (np.var(x) + np.var(y) + (x.mean() - y.mean()) ** 2)
        assert ccc(x, y) == pytest.approx(expected, abs=1e-6)
        assert ccc(x.astype(np.float32), y) == pytest.approx(
            ccc(x.astype(np.float32).astype(np.float64), y), abs=0)


def test_ccc_constant_sequences():
    assert ccc([1, 1, 1], [1, 2, 3]) == 0.0
    assert ccc([1, 1, 1], [2, 2, 2]) == 0.0          # different constants
    assert math.isnan(ccc([1, 1, 1], [1, 1, 1]))    # 0/0: undefined


def test_ccc_per_column():
    x = np.array([[1, 1], [2, -2], [3, 3], [4, -4.0]])
    y = np.array([[2, 1], [4, -2], [6, 3], [8, -4.0]])
    np.testing.assert_allclose(ccc_per_column(x, y), [0.4, 1.0], atol=1e-12)


@pytest.mark.parametrize("x, y", [([1, 2, 3], [1, 2]), ([], []), ([1, np.nan], [1, 2]),
                                  ([[1, 2]], [[1, 2]])])
def test_ccc_bad_input(x, y):
    with pytest.raises(InputError):
        ccc(x, y)


def _seqs():
    # seq 1: pred [0, 2], target [0, 2] -> CCC 1
    # seq 2: pred [10, 12], target [0, 2]: cov 1, var 1 and 1, (11-1)^2 = 100
    #        -> CCC 2/102
    pred = torch.tensor([[[0.0], [2.0]], [[10.0], [12.0]]])
    target = torch.tensor([[[0.0], [2.0]], [[0.0], [2.0]]])
    return pred, target


def test_ccc_loss_per_sequence_not_flattened():
    pred, target = _seqs()
    # per sequence: mean(1 - 1, 1 - 2/102) = 50/102
    assert ccc_loss(pred, target).item() == pytest.approx(50 / 102, rel=1e-6)
    # flattened: x = [0,2,10,12] (mean 6, var 26), y = [0,2,0,2] (mean 1, var 1),
    # cov = (6 - 4 - 4 + 6)/4 = 1 -> CCC = 2/(26 + 1 + 25) = 2/52, loss 50/52
    flat = ccc_loss(pred.reshape(1, 4, 1), target.reshape(1, 4, 1)).item()
    assert flat == pytest.approx(50 / 52, rel=1e-6)


def test_ccc_loss_per_dimension_mean():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    pred = torch.stack([x, x], dim=-1)[None]             # (1, 4, 2)
    target = torch.stack([2 * x, -x], dim=-1)[None]
    # dim 0: CCC 0.4, dim 1: CCC -1/11 -> loss mean(0.6, 1 + 1/11)
    assert ccc_loss(pred, target).item() == pytest.approx((0.6 + 12 / 11) / 2, rel=1e-6)


def test_ccc_loss_mask_excludes_frames():
    pred, target = _seqs()
    pred = torch.cat([pred, torch.tensor([[[float("nan")]], [[99.0]]])], dim=1)
    target = torch.cat([target, torch.tensor([[[5.0]], [[-7.0]]])], dim=1)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert ccc_loss(pred, target, mask).item() == pytest.approx(50 / 102, rel=1e-6)
    # a sequence without valid frames leaves the mean
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert ccc_loss(pred, target, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_ccc_loss_all_masked_is_zero_and_attached():
    pred = torch.randn(2, 3, 1, requires_grad=True)
    loss = ccc_loss(pred, torch.randn(2, 3, 1), torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_ccc_loss_gradient_flows():
    torch.manual_seed(0)
    pred = torch.randn(3, 20, 2, requires_grad=True)
    target = torch.randn(3, 20, 2)
    loss = ccc_loss(pred, target)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0
    # a small step against the gradient lowers the loss
    with torch.no_grad():
        lower = ccc_loss(pred - 0.1 * pred.grad, target)
    assert lower < loss


def test_ccc_loss_constant_sequences_are_finite():
    pred = torch.ones(1, 5, 1, requires_grad=True)
    loss = ccc_loss(pred, torch.ones(1, 5, 1))
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_ccc_loss_float32_under_bf16_autocast():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    x = torch.randn(2, 10, 4)
    target = torch.randn(2, 10, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = layer(x)
        assert pred.dtype == torch.bfloat16
        loss = ccc_loss(pred, target)
    assert loss.dtype == torch.float32
    expected = ccc_loss(pred.float(), target)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()


def test_ccc_loss_shape_errors():
    with pytest.raises(ValueError):
        ccc_loss(torch.zeros(2, 3, 1), torch.zeros(2, 3, 2))
    with pytest.raises(ValueError):
        ccc_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        ccc_loss(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), torch.ones(2, 4, dtype=torch.bool))
