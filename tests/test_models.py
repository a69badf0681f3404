"""timm registrations of the reference tiny networks (docs/algorithms.md §9, docs/ARCHITECTURE.md)."""
from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import shiftaddaug_plugin.models as models
from shiftaddaug_plugin.models import ModelVariant, parse_variant_kwargs
from shiftaddaug_plugin.ops import op_values

MODEL_NAMES = timm.list_models(module="shiftadd_nets")

#: published figures (docs/algorithms.md §9): resolution, MACs (M), params (M), 1000 classes
PUBLISHED = {
    "shiftadd_mcunet": (176, 81.8, 0.74),
    "shiftadd_mbv2_tiny": (144, 23.5, 0.75),
    "shiftadd_proxyless": (160, 35.7, 1.78),
}

# Reference definitions written out independently of the implementation (docs/algorithms.md §9):
# (stem, ds, [(expand list, kernel list, stride, out)], head block (e, k, out), head conv width or 0)
_MB2 = [([6] * n, [3] * n, s, c) for n, s, c in ((2, 2, 8), (3, 2, 16), (4, 2, 24), (3, 1, 32), (3, 2, 56))]
REFERENCE = {
    "shiftadd_mcunet": (16, 8, [([3, 5, 5, 4], [7, 3, 7, 5], 2, 16), ([5, 5, 5], [5, 5, 5], 2, 24),
                                ([5, 6, 4], [3, 7, 5], 2, 40), ([5, 5, 5], [5, 7, 3], 1, 48),
                                ([6, 5, 4], [3, 7, 3], 2, 96)], (5, 7, 160), 0),
    "shiftadd_mbv2_tiny": (16, 8, _MB2, (6, 3, 112), 448),
    "shiftadd_proxyless": (16, 8, [([3, 3], [5, 3], 2, 16), ([3, 3, 3, 3], [7, 3, 5, 5], 2, 16),
                                   ([6, 3, 3, 3], [7, 5, 5, 5], 2, 32), ([6, 3, 3, 3], [5, 5, 5, 5], 1, 32),
                                   ([6, 6, 3, 3], [7, 7, 7, 7], 2, 64)], (6, 7, 112), 1280),
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Any:
    """Tiny convs: one intra-op thread is faster and immune to OpenMP spin-waits on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _divisible8(v: float) -> int:
    new = max(8, int(v + 4) // 8 * 8)
    return new + 8 if new < 0.9 * v else new


@dataclass
class Counts:
    macs: int
    params: int


def count_macs(model: nn.Module, size: int, in_chans: int = 3) -> Counts:
    """MACs by forward hooks on Conv2d/Linear (independent of timm's profilers)."""
    total = [0]

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total[0] += output[0].numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total[0] += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_chans, size, size))
    for h in handles:
        h.remove()
    return Counts(total[0], sum(p.numel() for p in model.parameters()))


def test_registry_lists_the_three_models() -> None:
    assert MODEL_NAMES == sorted(PUBLISHED)
    for name in MODEL_NAMES:
        assert timm.is_model(name)
        assert callable(getattr(models, name))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_create_and_forward(name: str) -> None:
    model = timm.create_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 48))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_published_macs_and_params(name: str) -> None:
    res, macs_m, params_m = PUBLISHED[name]
    counts = count_macs(timm.create_model(name), res)
    assert abs(counts.macs / 1e6 - macs_m) / macs_m < 0.01, counts.macs
    assert abs(counts.params / 1e6 - params_m) / params_m < 0.01, counts.params


def test_mac_counter_agrees_with_torch_flop_counter() -> None:
    model = timm.create_model("shiftadd_mbv2_tiny", num_classes=10).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    assert counter.get_total_flops() // 2 == count_macs(model, 64).macs


@pytest.mark.parametrize("name,expected", [("shiftadd_mcunet", 2.6), ("shiftadd_mbv2_tiny", 1.1)])
def test_cifar_resolution_macs(name: str, expected: float) -> None:
    counts = count_macs(timm.create_model(name, num_classes=100), 32)
    assert round(counts.macs / 1e6, 1) == expected  # the published figures are given to 0.1M


def _block_table(model: nn.Module) -> list[tuple[int, int, int, int, int, bool]]:
    """(in, mid, out, kernel, stride, has_skip) of every inverted-residual block, in order."""
    rows = []
    for stage in model.blocks[1:]:
        for block in stage:
            rows.append((block.conv_pw.in_channels, block.conv_pw.out_channels, block.conv_pwl.out_channels,
                         block.conv_dw.kernel_size[0], block.conv_dw.stride[0], block.has_skip))
    return rows


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_exact_reference_structure(name: str) -> None:
    stem, ds, stages, (head_e, head_k, head_out), head_conv = REFERENCE[name]
    expected = []
    in_chs = ds
    for expand, kernels, stride, out in [*stages, ([head_e], [head_k], 1, head_out)]:
        for i, (e, k) in enumerate(zip(expand, kernels)):
            s = stride if i == 0 else 1
            expected.append((in_chs, _divisible8(e * in_chs), out, k, s, i > 0 and s == 1 and in_chs == out))
            in_chs = out
    model = timm.create_model(name)
    assert model.conv_stem.out_channels == stem and model.conv_stem.stride == (2, 2)
    dsb = model.blocks[0][0]
    assert (dsb.conv_dw.in_channels, dsb.conv_pw.out_channels, dsb.has_skip) == (stem, ds, False)
    assert _block_table(model) == expected
    if head_conv:
        assert (model.conv_head.in_channels, model.conv_head.out_channels) == (head_out, head_conv)
    else:  # MCUNet: head MB block -> GAP -> FC, no 1x1 head conv
        assert isinstance(model.conv_head, nn.Identity) and isinstance(model.bn2, nn.Identity)
    assert model.num_features == (head_conv or head_out) == model.classifier.in_features
    acts = {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU))}
    assert acts == {nn.ReLU6}


def test_proxyless_stage_first_block_has_no_shortcut() -> None:
    model = timm.create_model("shiftadd_proxyless")
    first = model.blocks[4][0]  # 32 -> 32, stride 1: a shortcut only inside a stage (docs/algorithms.md §9)
    assert first.conv_pw.in_channels == first.conv_pwl.out_channels == 32 and first.conv_dw.stride == (1, 1)
    assert not first.has_skip and model.blocks[4][1].has_skip


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_cfg(name: str) -> None:
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    res = PUBLISHED[name][0]
    assert cfg["input_size"] == (3, res, res)
    assert len(cfg["mean"]) == 3 and len(cfg["std"]) == 3 and cfg["num_classes"] == 1000
    assert isinstance(model.get_submodule(cfg["classifier"]), nn.Linear)
    assert model.get_submodule(cfg["first_conv"]) is model.conv_stem
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == (3, res, res)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_features_only(name: str) -> None:
    feats = timm.create_model(name, features_only=True).eval()
    info = feats.feature_info
    assert info.reduction() == [2, 4, 8, 16, 32]
    with torch.no_grad():
        outs = feats(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == info.channels()
    assert [64 // o.shape[-1] for o in outs] == info.reduction()
    assert info.channels()[-1] == REFERENCE[name][3][2]  # last feature = head MB block output

    picked = timm.create_model(name, features_only=True, out_indices=(1, 3)).eval()
    assert picked.feature_info.channels() == [info.channels()[1], info.channels()[3]]
    with torch.no_grad():
        assert len(picked(torch.randn(1, 3, 64, 64))) == 2


@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride(output_stride: int) -> None:
    feats = timm.create_model("shiftadd_mcunet", features_only=True, output_stride=output_stride).eval()
    with torch.no_grad():
        outs = feats(torch.randn(1, 3, 64, 64))
    assert outs[-1].shape[-1] == 64 // output_stride
    assert max(feats.feature_info.reduction()) == output_stride


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reset_classifier_in_chans_num_classes_drop_rate(name: str) -> None:
    model = timm.create_model(name, num_classes=100, in_chans=1, drop_rate=0.2, drop_path_rate=0.1)
    assert model.conv_stem.in_channels == 1 and model.classifier.out_features == 100 and model.drop_rate == 0.2
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 100)
        model.reset_classifier(10)
        assert model(x).shape == (2, 10)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_width_mult_scales_widths(name: str) -> None:
    base = timm.create_model(name)
    half = timm.create_model(name, width_mult="0.5")  # strings from --model-kwargs are parsed
    wide = timm.create_model(name, width_mult=1.5)
    assert half.conv_stem.out_channels == 8 and wide.conv_stem.out_channels == 24
    params = [sum(p.numel() for p in m.parameters()) for m in (half, base, wide)]
    assert params[0] < params[1] < params[2]
    if name == "shiftadd_proxyless":  # head conv never narrower than 1280 (ProxylessNAS rule), grows past it
        assert half.num_features == 1280
        assert timm.create_model(name, width_mult=3.0).num_features == 1344  # make_divisible(448 * 3)
    if name == "shiftadd_mbv2_tiny":
        assert half.num_features == 224


def test_pretrained_without_weights_is_an_error() -> None:
    with pytest.raises(ValueError, match="no pretrained weights are published"):
        timm.create_model("shiftadd_mcunet", pretrained=True)


def test_pretrained_from_own_checkpoint(tmp_path: Path) -> None:
    source = timm.create_model("shiftadd_mbv2_tiny", num_classes=10)
    path = tmp_path / "ckpt.pth"
    torch.save(source.state_dict(), path)
    loaded = timm.create_model("shiftadd_mbv2_tiny", num_classes=10, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    cfg = timm.models.PretrainedCfg(file=str(path), num_classes=10)  # a full PretrainedCfg object works too
    again = timm.create_model("shiftadd_mbv2_tiny", num_classes=10, pretrained=True, pretrained_cfg=cfg)
    assert torch.equal(again.classifier.weight, source.classifier.weight)


# ---------------------------------------------------------------------------------------------- variant kwargs
ARCH = models.REFERENCE_ARCHS["shiftadd_mcunet"]


def test_parse_defaults_is_plain_mult() -> None:
    kwargs: dict[str, Any] = {"num_classes": 5}
    variant = parse_variant_kwargs(kwargs, ARCH)
    assert variant == ModelVariant() and variant.is_plain
    assert kwargs == {"num_classes": 5}  # non-variant kwargs stay for timm


@pytest.mark.parametrize("raw,expected", [("true", True), ("True", True), ("1", True), (1, True), (True, True),
                                          ("false", False), ("0", False), ("off", False), (False, False)])
def test_parse_aug_bool(raw: Any, expected: bool) -> None:
    assert parse_variant_kwargs({"aug": raw}, ARCH).aug is expected


@pytest.mark.parametrize("raw", ["1.0,1.6", "[1.0, 1.6]", "1.6 1.0", (1.0, 1.6), [1, 1.6], "(1.0,1.6,1.6)"])
def test_parse_float_lists(raw: Any) -> None:
    variant = parse_variant_kwargs({"aug": "true", "aug_width_mult_list": raw, "aug_expand_list": 2.2}, ARCH)
    assert variant.aug_width_mult_list == (1.0, 1.6) and variant.aug_expand_list == (2.2,)


def test_aug_defaults_are_netaug_lists() -> None:
    variant = parse_variant_kwargs({"aug": True}, ARCH)
    assert variant.aug_width_mult_list == (1.0, 1.6, 2.2) and variant.aug_expand_list == (1.0, 1.6, 2.2, 2.8)
    tiny = parse_variant_kwargs({"aug": True}, models.REFERENCE_ARCHS["shiftadd_mbv2_tiny"])
    assert tiny.aug_width_mult_list == (1.0, 1.8, 2.6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"op": "conv"}, "use one of 'shift', 'adder', 'shiftadd', 'mult'"),
        ({"aug": "maybe"}, "not a boolean"),
        ({"aug": 2}, "not a boolean"),
        ({"aug_width_mult_list": "1.0,1.6"}, "pass aug=true"),
        ({"aug": True, "aug_width_mult_list": "1.0,abc"}, "must be a number"),
        ({"aug": True, "aug_expand_list": "0.5,1.0"}, ">= 1.0"),
        ({"aug": True, "aug_expand_list": "[]"}, "is empty"),
        ({"width_mult": "wide"}, "must be a number"),
        ({"width_mult": 0}, "> 0"),
        ({"width_mult": float("nan")}, "finite"),
        ({"convert_kwargs": {"keep_first_conv_mult": False}}, "only apply to converted variants"),
        ({"op": "adder", "convert_kwargs": "x"}, "dict of ConvertConfig"),
    ],
)
def test_parse_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_variant_kwargs(dict(kwargs), ARCH)


def test_unknown_op_through_create_model() -> None:
    with pytest.raises(ValueError, match="unknown op 'conv'"):
        timm.create_model("shiftadd_proxyless", op="conv")


def test_ops_are_parsed_case_insensitively() -> None:
    for op in op_values():
        assert parse_variant_kwargs({"op": op.upper()}, ARCH).op == op


def test_plain_variant_strings_build_plain_model() -> None:
    model = timm.create_model("shiftadd_mcunet", op="mult", aug="false", width_mult="1.0")
    assert type(model).__name__ == "EfficientNet"
    assert count_macs(model, 176).params == count_macs(timm.create_model("shiftadd_mcunet"), 176).params


class _FakeConverter:
    """Stands in for shiftaddaug_plugin.convert to check the plumbing against its contract."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.example_shapes: list[tuple[int, ...]] = []
        outer = self

        class ConvertConfig:
            def __init__(self, **kwargs: Any) -> None:
                self.kwargs = kwargs

        def convert(model: nn.Module, config: Any, *, example_input: torch.Tensor) -> nn.Module:
            outer.calls.append(("convert", config.kwargs))
            outer.example_shapes.append(tuple(example_input.shape))
            model.converted = True  # type: ignore[assignment]
            return model

        def export(model: nn.Module) -> nn.Module:
            outer.calls.append(("export", getattr(model, "converted", False)))
            model.exported = True  # type: ignore[assignment]
            return model

        self.module = types.ModuleType("shiftaddaug_plugin.convert")
        self.module.ConvertConfig = ConvertConfig  # type: ignore[attr-defined]
        self.module.convert = convert  # type: ignore[attr-defined]
        self.module.export = export  # type: ignore[attr-defined]


@pytest.fixture()
def fake_converter(monkeypatch: pytest.MonkeyPatch) -> _FakeConverter:
    from shiftaddaug_plugin.models import shiftadd_nets

    fake = _FakeConverter()
    for name in ("ConvertConfig", "convert", "export"):  # what apply_variant calls, as the models module sees it
        monkeypatch.setattr(shiftadd_nets, name, getattr(fake.module, name))
    return fake


def test_mf_variant_is_exported_conversion(fake_converter: _FakeConverter) -> None:
    model = timm.create_model("shiftadd_mcunet", op="adder", num_classes=10, in_chans=1)
    assert fake_converter.example_shapes == [(1, 1, 64, 64)]  # small traced pass with the model's channels
    assert fake_converter.calls == [
        ("convert", {"op": "adder", "aug_width_mult_list": [1.0], "aug_expand_list": [1.0]}),
        ("export", True),
    ]
    assert model.exported and model.pretrained_cfg["architecture"] == "shiftadd_mcunet"


def test_aug_variant_is_hybrid_conversion(fake_converter: _FakeConverter) -> None:
    model = timm.create_model("shiftadd_mbv2_tiny", op="shift", aug="true", aug_expand_list="1.0,2.2",
                              convert_kwargs={"keep_first_conv_mult": True})
    assert fake_converter.calls == [("convert", {"op": "shift", "aug_width_mult_list": [1.0, 1.8, 2.6],
                                                 "aug_expand_list": [1.0, 2.2], "keep_first_conv_mult": True})]
    assert model.converted and not hasattr(model, "exported")


def test_features_only_wraps_the_converted_model(fake_converter: _FakeConverter) -> None:
    feats = timm.create_model("shiftadd_proxyless", op="shiftadd", features_only=True, out_indices=(2, 4))
    assert [c[0] for c in fake_converter.calls] == ["convert", "export"]
    assert feats.feature_info.channels() == [16, 112]


# ---------------------------------------------------------------------------------------------- real converter
@pytest.mark.parametrize("op", ["shift", "adder", "shiftadd"])
def test_real_mf_variant_has_no_multiplicative_layer_but_the_stem(op: str) -> None:
    model = timm.create_model("shiftadd_mcunet", op=op, num_classes=10)
    plain = [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert plain == ["conv_stem"]  # ConvertConfig.keep_first_conv_mult=True: only the stem stays multiplicative


def test_real_shift_variants_forward() -> None:
    x = torch.randn(2, 3, 32, 32)
    slim = timm.create_model("shiftadd_mbv2_tiny", op="shift", num_classes=10).eval()
    hybrid = timm.create_model("shiftadd_mbv2_tiny", op="shift", aug=True, num_classes=10).eval()
    feats = timm.create_model("shiftadd_mbv2_tiny", op="shift", features_only=True, out_indices=(3, 4)).eval()
    with torch.no_grad():
        assert slim(x).shape == (2, 10) and torch.isfinite(slim(x)).all()
        assert hybrid(x).shape == (2, 10)
        assert [f.shape[1] for f in feats(x)] == feats.feature_info.channels() == [32, 112]
    assert sum(p.numel() for p in hybrid.parameters()) > sum(p.numel() for p in slim.parameters())


def _plugin_models() -> list[str]:
    import shiftaddaug_plugin

    shiftaddaug_plugin.register_timm_models()
    return sorted(n for n in timm.list_models("shiftadd_*"))


@pytest.mark.parametrize("name", _plugin_models())
@pytest.mark.parametrize("op", ["mult", "shift"])
def test_every_registered_model_builds_runs_and_is_priced(name: str, op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every timm entry point the plugin registers, ``shiftadd_custom`` (a NAS arch) included."""
    from shiftaddaug_plugin.cost import count_ops
    from shiftaddaug_plugin.nas.space import SPACE_PRESETS

    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")
    kwargs: dict[str, Any] = {"op": op}
    if name == "shiftadd_custom":
        space = next(iter(SPACE_PRESETS.values()))
        kwargs["arch"] = space.min_arch().to_dict()
    model = timm.create_model(name, num_classes=5, in_chans=1, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    report = count_ops(model, (1, 32, 32))
    assert report.uncounted == [] and report.macs > 0
    assert (report.totals()["shifts"] > 0) == (op == "shift")
