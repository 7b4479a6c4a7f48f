"""The input stretch against the formulas its documentation states, computed here on their own:
``log1p(100 x) / log1p(100)`` and ``asinh(100 x) / asinh(100)``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lensing.data.stretch import apply_stretch, stretch_of

POINTS = [0.0, 1e-4, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 1.0]


def stated(stretch: str, x: float) -> float:
    """The documented formula at ``x``, in plain float64 math."""
    if stretch == "log":
        return math.log1p(100 * x) / math.log1p(100)
    if stretch == "arcsinh":
        return math.asinh(100 * x) / math.asinh(100)
    return x


@pytest.mark.parametrize("stretch", ["log", "arcsinh", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_each_stretch_is_its_stated_formula(stretch, dtype):
    images = torch.tensor(POINTS, dtype=dtype).reshape(2, 1, 5)
    out = apply_stretch(images, stretch)
    assert out.shape == images.shape and out.dtype == dtype
    expected = np.array([stated(stretch, x) for x in POINTS]).reshape(2, 1, 5)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    np.testing.assert_allclose(out.numpy(), expected, rtol=tolerance, atol=tolerance)


def test_stated_values_by_hand():
    # Worked out without the formulas' code: ln 2 / ln 101, asinh 1 / asinh 100, and the ends.
    x = torch.tensor([0.0, 0.01, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(
        apply_stretch(x, "log").numpy(), [0.0, 0.6931471805599453 / 4.61512051684126, 1.0]
    )
    np.testing.assert_allclose(
        apply_stretch(x, "arcsinh").numpy(),
        [0.0, 0.881373587019543 / 5.298342365610589, 1.0],
    )
    # Near 0 both are linear: slopes 100 / asinh(100) and 100 / log1p(100).
    tiny = torch.tensor([1e-7], dtype=torch.float64)
    assert apply_stretch(tiny, "arcsinh").item() == pytest.approx(1e-5 / 5.298342365610589)
    assert apply_stretch(tiny, "log").item() == pytest.approx(1e-5 / 4.61512051684126, rel=1e-4)


def test_the_stretch_lifts_faint_values_and_keeps_the_order():
    x = torch.linspace(0, 1, 1001, dtype=torch.float64)
    for stretch in ("log", "arcsinh"):
        y = apply_stretch(x, stretch)
        assert (torch.diff(y) > 0).all()  # monotone: the brightest pixel stays the brightest
        assert (y[1:-1] > x[1:-1]).all()  # faint (and every inner) value lifted


def test_unknown_stretch_and_the_checkpoint_s_stretch():
    with pytest.raises(ValueError, match="unknown stretch 'sqrt'"):
        apply_stretch(torch.zeros(3), "sqrt")
    assert stretch_of({"config": {"stretch": "log"}}) == "log"
    assert stretch_of({}) == "none"  # checkpoints from before the stretch existed
    assert stretch_of({"config": None}) == "none"
