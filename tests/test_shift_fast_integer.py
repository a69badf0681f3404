"""The fast integer shift executor equals the int64 reference bit for bit, falls back to it when float64 could
round, and raises the reference's errors."""
from __future__ import annotations

import pytest
import torch

from shiftaddaug_plugin.functional import (
    ShiftQuantConfig,
    input_to_fixed_point_int,
    shift_conv2d_integer,
    shift_conv2d_integer_fast,
    shift_linear_integer,
    shift_linear_integer_fast,
    weight_to_sign_shift,
)
from shiftaddaug_plugin.functional import shift_fast_integer as fast
from shiftaddaug_plugin.layers import ShiftConv2d, ShiftLinear


@pytest.mark.parametrize("cin, cout, k, stride, padding, dilation, groups, bias, dtype, cfg", [
    (8, 16, 3, 1, 1, 1, 1, True, torch.float32, ShiftQuantConfig()),
    (16, 16, 3, 2, 1, 1, 16, False, torch.float32, ShiftQuantConfig()),  # depthwise, stride 2
    (6, 9, 5, 1, "same", 1, 3, True, torch.float64, ShiftQuantConfig(4, 8, 8, "round", True)),
    (4, 4, 3, 1, 2, 2, 1, True, torch.float64, ShiftQuantConfig(6, 10, 12, "floor", True)),  # dilation 2
    (12, 5, 1, 1, 0, 1, 1, True, torch.float32, ShiftQuantConfig(3, 16, 16, "round", True)),  # pointwise
])
def test_fast_executor_equals_the_int64_reference_bit_for_bit(cin, cout, k, stride, padding, dilation, groups,
                                                              bias, dtype, cfg) -> None:
    g = torch.Generator().manual_seed(cin * 31 + cout)
    x = (torch.randn(3, cin, 11, 10, generator=g) * 4).to(dtype)
    w = (torch.randn(cout, cin // groups, k, k, generator=g) * 0.4).to(dtype)
    b = (torch.randn(cout, generator=g)).to(dtype) if bias else None
    ref = shift_conv2d_integer(x, w, b, stride, padding, dilation, groups, cfg)
    got = shift_conv2d_integer_fast(x, w, b, stride, padding, dilation, groups, cfg)
    assert got.dtype == ref.dtype == dtype and torch.equal(got, ref)


def test_beyond_2_pow_53_it_falls_back_to_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ShiftQuantConfig(5, 30, 16, "floor", True)  # X_int = 2^36: sums up to 2^56, float64 would round
    x = torch.full((1, 4, 3, 3), 2.0 ** 20 + 0.5 ** 16, dtype=torch.float64)
    w = torch.ones(2, 4, 3, 3, dtype=torch.float64)
    x_int = input_to_fixed_point_int(x, cfg)
    _, shift = weight_to_sign_shift(w, cfg)
    assert fast.accumulator_bound(x_int, shift, 36, None, 0) >= fast.EXACT_FLOAT64_LIMIT
    calls = []
    real = fast.accumulate_int64
    monkeypatch.setattr(fast, "accumulate_int64", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = shift_conv2d_integer_fast(x, w, None, 1, 1, 1, 1, cfg)
    assert calls == [1] and torch.equal(out, shift_conv2d_integer(x, w, None, 1, 1, 1, 1, cfg))
    # and the exact case does not run the int64 accumulation
    calls.clear()
    shift_conv2d_integer_fast(torch.randn(1, 4, 3, 3), torch.randn(2, 4, 3, 3), None, 1, 1, 1, 1)
    assert calls == []


def test_linear_and_layers_default_to_the_fast_executor_with_identical_results() -> None:
    torch.manual_seed(3)
    lin = ShiftLinear(7, 5)
    x = torch.randn(2, 4, 7) * 3
    expected = shift_linear_integer(x, lin.weight, lin.bias)
    assert torch.equal(shift_linear_integer_fast(x, lin.weight, lin.bias), expected)
    assert torch.equal(lin.integer_forward(x), lin.integer_forward(x, reference=True))
    conv = ShiftConv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="reflect")
    xc = torch.randn(2, 4, 9, 9) * 2
    assert torch.equal(conv.integer_forward(xc), conv.integer_forward(xc, reference=True))


def test_errors_are_the_references() -> None:
    with pytest.raises(ValueError, match="channel mismatch"):
        shift_conv2d_integer_fast(torch.randn(1, 3, 4, 4), torch.randn(2, 4, 1, 1))
    with pytest.raises(ValueError, match="quantize_input=True"):
        shift_conv2d_integer_fast(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 1, 1),
                                  config=ShiftQuantConfig(5, 16, 16, "floor", False))
    with pytest.raises(ValueError, match="in_features"):
        shift_linear_integer_fast(torch.randn(2, 5), torch.randn(3, 4))
