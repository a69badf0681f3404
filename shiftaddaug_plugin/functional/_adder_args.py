"""Argument checking of :func:`shiftaddaug_plugin.functional.adder.adder_conv2d`: tensor ranks, dtypes, devices,
channel/group consistency and conv-style int-or-pair hyper-parameters, each failure named with its fix."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

from torch import Tensor

from ._adder_kernels import AdderGeometry

IntOrPair = Union[int, Sequence[int]]


def pair(value: IntOrPair, name: str, minimum: int) -> Tuple[int, int]:
    """``value`` as ``(h, w)``; ints and 2-sequences of ints at least ``minimum``."""
    if isinstance(value, bool):
        raise TypeError(f"adder_conv2d: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        out = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        out = (int(value[0]), int(value[1]))
    else:
        raise TypeError(
            f"adder_conv2d: {name} must be an int or a pair of ints, got {value!r} "
            f"(string padding such as 'same' is handled by AdderConv2d, not by the functional)"
        )
    if min(out) < minimum:
        raise ValueError(f"adder_conv2d: {name} must be >= {minimum}, got {value!r}")
    return out


def geometry(x: Tensor, weight: Tensor, stride: IntOrPair, padding: IntOrPair, dilation: IntOrPair,
             groups: int) -> AdderGeometry:
    """The layer shape of one call, after checking that ``x`` and ``weight`` can be convolved."""
    if not isinstance(x, Tensor) or not isinstance(weight, Tensor):
        raise TypeError("adder_conv2d: x and weight must be tensors")
    if x.dim() != 4:
        raise ValueError(f"adder_conv2d: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}; "
                         f"add a batch dimension with x.unsqueeze(0)")
    if weight.dim() != 4:
        raise ValueError(f"adder_conv2d: weight must be 4-D (O, C/groups, kh, kw), got {tuple(weight.shape)}")
    if not x.is_floating_point() or not weight.is_floating_point():
        raise TypeError(f"adder_conv2d: x and weight must be floating point, got {x.dtype} and {weight.dtype}")
    if x.device != weight.device:
        raise ValueError(f"adder_conv2d: x is on {x.device} but weight on {weight.device}; move one of them")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"adder_conv2d: groups must be a positive int, got {groups!r}")
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if c % groups or o % groups:
        raise ValueError(f"adder_conv2d: in channels ({c}) and out channels ({o}) must both be divisible by "
                         f"groups ({groups})")
    if cg * groups != c:
        raise ValueError(f"adder_conv2d: weight expects {cg * groups} input channels ({cg} per group x {groups} "
                         f"groups) but x has {c}")
    if min(kh, kw) < 1 or o < 1:
        raise ValueError(f"adder_conv2d: empty weight shape {tuple(weight.shape)}")
    geom = AdderGeometry(n, c, h, w, o, kh, kw, pair(stride, "stride", 1), pair(padding, "padding", 0),
                         pair(dilation, "dilation", 1), groups)
    if geom.ho < 1 or geom.wo < 1:
        raise ValueError(f"adder_conv2d: input {h}x{w} with padding {geom.padding} is smaller than the dilated "
                         f"kernel ({kh}x{kw}, dilation {geom.dilation}); increase padding or the input size")
    return geom
