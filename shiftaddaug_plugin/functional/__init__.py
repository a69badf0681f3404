"""The maths of the multiplication-free operators, without module state.

* ``shift``: DeepShift-Q power-of-two weights and fixed-point inputs (docs/algorithms.md §1), float and integer paths.
* ``adder``: AdderNet ``-Σ|x - w|`` with its full-precision / adaptive-scaled backward (docs/algorithms.md §2).
"""
from .adder import adder_conv2d, autotune_choices, clear_autotune_cache, eager_adders, resolve_backend
from .shift import (
    ShiftQuantConfig,
    input_to_fixed_point_int,
    quantize_input_fixed_point,
    round_weight_to_power_of_two,
    shift_conv2d,
    shift_linear,
    weight_to_sign_shift,
)
from .shift_fast_integer import shift_conv2d_integer_fast, shift_linear_integer_fast
from .shift_integer import shift_conv2d_integer, shift_linear_integer

__all__ = [
    "ShiftQuantConfig",
    "adder_conv2d",
    "autotune_choices",
    "clear_autotune_cache",
    "eager_adders",
    "input_to_fixed_point_int",
    "quantize_input_fixed_point",
    "resolve_backend",
    "round_weight_to_power_of_two",
    "shift_conv2d",
    "shift_conv2d_integer",
    "shift_conv2d_integer_fast",
    "shift_linear",
    "shift_linear_integer",
    "shift_linear_integer_fast",
    "weight_to_sign_shift",
]
