"""AdderNet initialisation of adder-only weights and the adder kernels' dynamic batch dimension.

Why the initialisation matters (found while reproducing issue 8): an adder compares weights with batch-normalised
activations through ``|x - w|``. With a conv's Kaiming weights (std ~ 1/sqrt(fan_in)) ``|x - w| ~ |x|`` and every
filter computes almost the same ``-sum |x|``; our adder networks then stayed at chance. AdderNet draws adder
weights from ``N(0, 1)``.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shiftaddaug_plugin import Mode, set_mode
from shiftaddaug_plugin.convert import ConvertConfig, convert, export
from shiftaddaug_plugin.functional import adder as adder_mod
from shiftaddaug_plugin.functional.adder import adder_conv2d
from shiftaddaug_plugin.layers.adder import AdderConv2d
from shiftaddaug_plugin.layers.hybrid import HybridConv2d


class _TinyNet(nn.Module):
    """stem (kept multiplicative) -> dense 3x3 -> depthwise 3x3 -> pointwise -> classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.dense = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(32, 24, 1, bias=False), nn.BatchNorm2d(24))
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(self.dense(self.stem(x))))
        return self.head(x.mean((2, 3)))


def _convert(op: str, **kwargs) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    dense = _TinyNet().eval()
    config = ConvertConfig(op=op, aug_width_mult_list=[1.0, 2.0], aug_expand_list=[1.0], **kwargs)
    return dense, convert(dense, config, example_input=torch.zeros(1, 3, 16, 16))


def _target_block(layer: HybridConv2d) -> torch.Tensor:
    o_t = layer.target_out_channels
    if layer.groups > 1:
        return layer.weight[:o_t]
    return layer.weight[:o_t, : layer.target_in_channels]


def _hybrids(model: nn.Module) -> dict[str, HybridConv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, HybridConv2d)}


def test_adder_conv2d_uses_addernet_initialisation() -> None:
    torch.manual_seed(0)
    layer = AdderConv2d(64, 64, 3, bias=True)
    w = layer.weight.detach()
    assert abs(w.mean().item()) < 0.05
    assert 0.95 < w.std().item() < 1.05  # nn.Conv2d's default would give ~ 1/sqrt(3 * 576) = 0.024
    assert torch.count_nonzero(layer.bias) == 0


def test_converter_redraws_only_adder_only_weights() -> None:
    dense, hybrid = _convert("adder")
    layers = _hybrids(hybrid)
    originals = {name: m for name, m in dense.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(layers) == {"stem.0", "dense.0", "dw.0", "pw.0"}
    assert layers["stem.0"].op == "mult"  # kept multiplicative: weights copied, nothing redrawn
    torch.testing.assert_close(_target_block(layers["stem.0"]), originals["stem.0"].weight)
    for name in ("dense.0", "dw.0", "pw.0"):
        layer = layers[name]
        assert layer.op == "adder"
        block = _target_block(layer).detach()
        assert 0.8 < block.std().item() < 1.2, name
        assert not torch.allclose(block, originals[name].weight)
        # the multiplicative (augmented) parts keep the conv initialisation (Kaiming, fan-out): far below 1
        o_t = layer.target_out_channels
        aug_rows = layer.weight[o_t:].detach()
        assert aug_rows.numel() > 0 and aug_rows.std().item() < 0.5, name


def test_adder_init_none_keeps_copied_weights_and_shift_is_unaffected() -> None:
    dense, hybrid = _convert("adder", adder_init_std=None)
    originals = {name: m for name, m in dense.named_modules() if isinstance(m, nn.Conv2d)}
    for name, layer in _hybrids(hybrid).items():
        torch.testing.assert_close(_target_block(layer), originals[name].weight)
    dense, hybrid = _convert("shift")  # adder_init_std only concerns adders
    for name, layer in _hybrids(hybrid).items():
        torch.testing.assert_close(_target_block(layer), originals[name].weight)


def test_exported_adder_target_reads_the_initialised_block() -> None:
    _, hybrid = _convert("adder")
    hybrid.eval()
    slim = export(hybrid).eval()
    adders = [m for m in slim.modules() if isinstance(m, AdderConv2d)]
    assert len(adders) == 3
    assert all(0.8 < a.weight.std().item() < 1.2 for a in adders)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), set_mode(hybrid, Mode.TARGET):
        expected = hybrid(x)
    torch.testing.assert_close(slim(x), expected)


def test_addernet_initialisation_gives_distinct_filters() -> None:
    """The reason for the change: on normalised activations, Kaiming-scale adder filters all respond alike."""
    x = torch.relu(torch.randn(16, 32, 8, 8, generator=torch.Generator().manual_seed(2)))

    def mean_abs_channel_correlation(std: float) -> float:
        torch.manual_seed(3)
        weight = torch.randn(32, 32, 1, 1) * std
        y = adder_conv2d(x, weight, backend="eager").transpose(0, 1).reshape(32, -1)
        corr = torch.corrcoef(y)
        off_diagonal = corr[~torch.eye(32, dtype=torch.bool)]
        return off_diagonal.abs().mean().item()

    kaiming_std = math.sqrt(2.0 / 32)  # what a converted pointwise conv would carry over (0.25)
    assert mean_abs_channel_correlation(kaiming_std) > 0.9
    assert mean_abs_channel_correlation(1.0) < 0.6


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), True, "1"])
def test_adder_init_std_validation(value) -> None:
    with pytest.raises(ValueError, match="adder_init_std"):
        ConvertConfig(op="adder", adder_init_std=value)


def test_compiled_kernels_do_not_recompile_for_new_batch_sizes(monkeypatch) -> None:
    """One compilation per layer geometry serves every batch size (training, last partial batch, evaluation)."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv(adder_mod.AUTOTUNE_ENV, "0")
    monkeypatch.setattr(adder_mod, "_autotune_cache", {})
    gen = torch.Generator().manual_seed(4)
    weight = torch.randn(12, 5, 3, 3, generator=gen)

    def step(n: int) -> None:
        x = torch.randn(n, 5, 7, 7, generator=gen, requires_grad=True)
        w = weight.clone().requires_grad_()
        y = adder_conv2d(x, w, 1, 1, backend="compiled")
        y.sum().backward()
        ref = adder_conv2d(x.detach(), weight, 1, 1, backend="eager")
        torch.testing.assert_close(y.detach(), ref, rtol=1e-6, atol=1e-5)

    step(6)
    compiled_before = counters["stats"]["unique_graphs"]
    for n in (3, 9, 2):
        step(n)
    assert counters["stats"]["unique_graphs"] == compiled_before
