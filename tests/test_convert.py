"""Converter, plan, width sampling, export and audit (docs/algorithms.md §3-§4, §5, §6)."""
from __future__ import annotations

import copy
import io
import random

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

from shiftaddaug_plugin import Mode, set_mode  # noqa: E402
from shiftaddaug_plugin.convert import (  # noqa: E402
    ConvertConfig,
    analyze,
    audit,
    augmented_width,
    convert,
    export,
    get_plan,
    make_divisible,
    sample_active_widths,
    set_max_widths,
    set_target_widths,
    set_widths,
    sort_channels,
)
from shiftaddaug_plugin.layers.hybrid import HybridBatchNorm2d, HybridConv2d, HybridLinear  # noqa: E402

TIMM_MODELS = ["test_efficientnet", "mobilenetv3_small_050", "mobilenetv2_035", "lcnet_035", "mnasnet_small",
               "tinynet_e", pytest.param("efficientnet_b0", marks=pytest.mark.slow)]


def _input(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _dense(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10).eval()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ================================================================================================ full pipeline
@pytest.mark.parametrize("name", TIMM_MODELS)
def test_pipeline_timm(name: str) -> None:
    """convert -> fwd/bwd both modes -> every parameter gets a gradient -> sample -> sort -> export == target."""
    dense, x = _dense(name), _input()
    before = _state(dense)
    model = convert(dense, ConvertConfig(), example_input=x)
    # the dense model is untouched (inplace=False)
    assert all(torch.equal(before[k], v) for k, v in dense.state_dict().items())
    assert not any(isinstance(m, (HybridConv2d, HybridLinear, HybridBatchNorm2d)) for m in dense.modules())
    plan = get_plan(model)
    assert plan.layers and all(type(model.get_submodule(n)).__name__.startswith("Hybrid") for n in plan.layers)
    assert not any(type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d) for m in model.modules())

    # every parameter receives a (non-zero) gradient in AUGMENTED mode at max widths (eval BN: no batch centring)
    set_max_widths(model)
    with set_mode(model, Mode.AUGMENTED):
        y = model(x)
        (y * torch.randn_like(y)).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not no_grad, no_grad

    # train-mode forward/backward in both modes, at sampled widths
    model.train()
    rng = random.Random(0)
    for mode in (Mode.TARGET, Mode.AUGMENTED):
        sample_active_widths(model, rng)
        with set_mode(model, mode):
            out = model(x)
            assert out.shape == (2, 10) and torch.isfinite(out).all()
            out.logsumexp(1).mean().backward()
    model.eval()

    # sorting leaves the target network bit-identical and keeps Parameter objects
    params = {n: p for n, p in model.named_parameters()}
    with set_mode(model, Mode.TARGET):
        y_target = model(x)
    changed = sort_channels(model, scope="augmented")
    assert changed, "expected some augmented mid channels to be re-ordered"
    assert all(p is params[n] for n, p in model.named_parameters())
    with set_mode(model, Mode.TARGET):
        assert torch.equal(model(x), y_target)

    # export: pure, equal to TARGET mode, multiplication-free except the kept stem
    hybrid_state = _state(model)
    slim = export(model)
    assert all(torch.equal(hybrid_state[k], v) for k, v in model.state_dict().items())
    assert get_plan(model) is plan and isinstance(model.get_submodule(next(iter(plan.layers))), HybridConv2d)
    with torch.no_grad():
        y_slim = slim(x)
    assert (y_slim - y_target).abs().max().item() <= 1e-5
    assert not any(isinstance(m, (HybridConv2d, HybridLinear, HybridBatchNorm2d)) for m in slim.modules())
    report = audit(slim)
    assert [e.name for e in report.multiplicative] == [plan.kept_mult[0]] and report.unexpected == ()

    # exported state dict: tensors only (weights_only load), round trip gives identical logits
    buf = io.BytesIO()
    torch.save(slim.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    twin = copy.deepcopy(slim)
    with torch.no_grad():
        for p in twin.parameters():
            p.normal_()
    twin.load_state_dict(loaded)
    with torch.no_grad():
        assert torch.equal(twin(x), y_slim)


@pytest.mark.parametrize("name", ["test_efficientnet", "mobilenetv3_small_050", "mobilenetv2_035"])
def test_mult_conversion_reproduces_dense_model(name: str) -> None:
    """op='mult': the target slice is the dense model (weights copied into the leading slice), in TARGET mode and
    in AUGMENTED mode at target widths."""
    dense, x = _dense(name), _input()
    with torch.no_grad():
        ref = dense(x)
    model = convert(dense, ConvertConfig(op="mult"), example_input=x)
    with torch.no_grad(), set_mode(model, Mode.TARGET):
        assert (model(x) - ref).abs().max().item() <= 1e-5
    set_target_widths(model)
    with torch.no_grad(), set_mode(model, Mode.AUGMENTED):
        assert (model(x) - ref).abs().max().item() <= 1e-5
    kept = {n for n, lp in get_plan(model).layers.items() if lp.kind != "bn"}
    assert set(get_plan(model).kept_mult) == kept
    report = audit(export(model))  # everything multiplicative, all of it by configuration
    assert not report.unexpected and {e.name for e in report.allowed} == kept


# ================================================================================================ plan
def test_plan_groups_mobilenetv2() -> None:
    """Residual-coupled stages share a group; mid groups use the expand list; input/logits groups are fixed."""
    cfg = ConvertConfig(aug_width_mult_list=[1.0, 2.0], aug_expand_list=[1.0, 3.0])
    plan = analyze(_dense("mobilenetv2_035"), cfg, _input())
    text = str(plan)
    assert "mid" in text and "fixed" in text and "model input" in text
    lay = plan.layers
    # stage 2 of mobilenetv2 has 3 blocks joined by residual adds: one group
    stage = {lay[f"blocks.2.{i}.conv_pwl"].out_group for i in range(3)}
    assert len(stage) == 1 and plan.groups[stage.pop()].residual
    # expand -> depthwise -> project inside a block: one mid group with the expand multipliers
    mid = plan.groups[lay["blocks.2.1.conv_pw"].out_group]
    assert mid.kind == "mid" and mid.multipliers == (1.0, 3.0)
    assert lay["blocks.2.1.conv_dw"].kind == "dwconv" and lay["blocks.2.1.conv_dw"].in_group == mid.gid
    assert mid.project == ("blocks.2.1.conv_pwl",) and mid.max_channels == augmented_width(mid.channels, 3.0)
    stem = plan.groups[lay["conv_stem"].out_group]
    assert stem.kind == "width" and stem.multipliers == (1.0, 2.0)
    assert plan.groups[lay["conv_stem"].in_group].kind == "fixed"
    cls = lay["classifier"]
    assert cls.role == "output" and plan.groups[cls.out_group].kind == "fixed"
    assert plan.groups[cls.in_group].kind == "width" and cls.max_in > cls.target_in  # classifier input widens
    assert lay["conv_stem"].role == "first" and lay["conv_stem"].op == "mult"
    assert "kind" in plan.layer_table()


def test_make_divisible_and_widths() -> None:
    assert augmented_width(24, 1.0) == 24 and augmented_width(3, 1.0) == 3
    assert augmented_width(24, 1.6) == 40 and augmented_width(4, 1.6) == 8
    assert make_divisible(179.2) == 176 and make_divisible(10) == 16  # never > 10 % below
    assert all(augmented_width(c, m) >= c for c in range(1, 80) for m in (1.0, 1.1, 1.6, 2.8))


class _CatNet(nn.Module):
    """Two branches concatenated along channels, a per-channel parameter scale, a depthwise block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 1)
        self.b = nn.Conv2d(8, 8, 1)
        self.fuse = nn.Conv2d(16, 16, 1)
        self.bn = nn.BatchNorm2d(16)
        self.scale = nn.Parameter(torch.ones(1, 16, 1, 1))
        self.block = nn.ModuleDict(dict(expand=nn.Conv2d(16, 32, 1), dw=nn.Conv2d(32, 32, 3, padding=1, groups=32),
                                        project=nn.Conv2d(32, 16, 1)))
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))
        y = torch.cat([self.a(s), self.b(s)], 1)
        y = self.bn(self.fuse(y)) * self.scale
        b = self.block
        z = b["project"](torch.relu(b["dw"](torch.relu(b["expand"](y)))))
        return self.head(z.mean((2, 3)))


def test_plan_fixes_cat_and_parameter_scales() -> None:
    plan = analyze(_CatNet(), ConvertConfig(), torch.randn(2, 3, 8, 8))
    g = {n: plan.groups[lp.out_group] for n, lp in plan.layers.items()}
    assert g["a"].kind == g["b"].kind == "fixed" and any("cat" in r for r in g["a"].fixed_reasons)
    assert g["fuse"].kind == "fixed" and any("per-channel" in r for r in g["fuse"].fixed_reasons)
    assert g["stem"].kind == "width" and g["block.expand"].kind == "mid" and g["block.project"].kind == "width"
    model = convert(_CatNet(), ConvertConfig(), example_input=torch.randn(2, 3, 8, 8))
    for mode in (Mode.TARGET, Mode.AUGMENTED):
        with set_mode(model, mode):
            assert model(torch.randn(2, 3, 8, 8)).shape == (2, 5)


class _Indexing(nn.Module):
    def __init__(self, index) -> None:  # noqa: ANN001 - any index expression
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(self.c2(self.c1(x)[self.index]).relu())


@pytest.mark.parametrize("index, widened", [
    ((Ellipsis, slice(1, None)), True),  # spatial crop keeps the channel layout
    ((slice(None), slice(None), slice(0, 3)), True),
    ((slice(None), slice(0, 8)), False),  # explicit channel slice: layout may change
    ((slice(None), torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])), False),  # channel permutation
    ((torch.tensor([1, 0]),), True),  # batch gather
])
def test_plan_indexing_rules(index: tuple, widened: bool) -> None:
    plan = analyze(_Indexing(index), ConvertConfig(), torch.randn(2, 3, 6, 6))
    assert (plan.groups[plan.layers["c1"].out_group].kind == "width") == widened
    assert plan.groups[plan.layers["c2"].out_group].kind == "width"


# ================================================================================================ config / ops
def test_op_overrides_and_keep_switches() -> None:
    cfg = ConvertConfig(op="adder", op_overrides={"blocks.3.0.conv_pwl": "shift", r"blocks\.1\..*": "mult"},
                        keep_first_conv_mult=False, keep_classifier_mult=True, op_kwargs={"eta": 0.1, "weight_bits": 4})
    plan = analyze(_dense("test_efficientnet"), cfg, _input())
    ops = {n: lp.op for n, lp in plan.layers.items()}
    assert ops["conv_stem"] == "adder" and ops["classifier"] == "mult"
    assert ops["blocks.3.0.conv_pwl"] == "shift" and ops["blocks.1.0.conv_exp"] == ops["blocks.1.0.conv_pwl"] == "mult"
    assert ops["blocks.3.0.conv_pw"] == "adder" and ops["bn1"] is None
    # adder outputs need a batch norm right after them: the (un-normalised) squeeze-excite convs use shift
    assert ops["blocks.3.0.se.conv_reduce"] == ops["blocks.3.0.se.conv_expand"] == "shift"
    assert set(plan.kept_mult) == {"classifier", "blocks.1.0.conv_exp", "blocks.1.0.conv_pwl"}
    # linear layers get only shift or mult; adder/shiftadd config falls back to shift for them
    plan = analyze(_dense("test_efficientnet"), ConvertConfig(op="shiftadd"), _input())
    assert plan.layers["classifier"].op == "shift"
    with pytest.raises(ValueError, match="linear layer 'classifier'.*'adder'"):
        analyze(_dense("test_efficientnet"), ConvertConfig(op_overrides={"classifier": "adder"}), _input())


@pytest.mark.parametrize("kwargs, err", [
    (dict(op="mul"), "ConvertConfig.op: unknown op 'mul'"),
    (dict(op_overrides={"a": "conv"}), "op_overrides"),
    (dict(op_overrides={"a(": "shift"}), "regular expression"),
    (dict(aug_width_mult_list=[0.5, 1.0]), ">= 1.0"),
    (dict(aug_expand_list=[]), "empty"),
    (dict(op_kwargs={"bits": 4}), "unknown keys"),
    (dict(divisor=0), "divisor"),
])
def test_config_validation(kwargs: dict, err: str) -> None:
    with pytest.raises(ValueError, match=err):
        ConvertConfig(**kwargs)
    with pytest.raises(TypeError):
        ConvertConfig(keep_first_conv_mult="yes")  # type: ignore[arg-type]


# ================================================================================================ errors
def test_error_conv_subclass_names_module_and_fix() -> None:
    from timm.layers import Conv2dSame

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), Conv2dSame(8, 8, 3, stride=2), nn.Conv2d(8, 4, 1))
    with pytest.raises(ValueError, match=r"'2' of type timm\.layers\.conv2d_same\.Conv2dSame.*filter_fn"):
        convert(net, example_input=torch.randn(2, 3, 16, 16))
    # the suggested fix works: excluded layer untouched, its channels fixed
    model = convert(net, example_input=torch.randn(2, 3, 16, 16), filter_fn=lambda m, n: n != "2")
    assert type(model[2]) is Conv2dSame and torch.equal(model[2].weight, net[2].weight)
    plan = get_plan(model)
    assert plan.excluded == ("2",) and plan.groups[plan.layers["0"].out_group].kind == "fixed"
    with set_mode(model, Mode.AUGMENTED):
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4, 7, 7)
    report = audit(export(model))
    allowed = {e.name: e.why for e in report.allowed}
    assert allowed == {"0": "kept multiplicative by config", "2": "excluded by filter_fn"}


def test_error_grouped_conv() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 4, 1))
    with pytest.raises(ValueError, match=r"conv '1': groups=2 .*neither dense.*nor depthwise.*filter_fn"):
        convert(net, example_input=torch.randn(2, 3, 8, 8))


class _SeqWithAttention(nn.Module):
    """conv -> tokens -> multi-head attention -> pooled linear head (the attention has no MF counterpart)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(x).flatten(2).transpose(1, 2)
        return self.head(self.attn(tokens, tokens, tokens)[0].mean(1))


class _WithConv1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.temporal = nn.Conv1d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.conv(x).flatten(2))


@pytest.mark.parametrize("make, name, type_name", [
    (_WithConv1d, "temporal", "torch.nn.modules.conv.Conv1d"),
    (_SeqWithAttention, "attn", "torch.nn.modules.activation.MultiheadAttention"),
    (lambda: nn.Sequential(nn.Conv2d(3, 8, 1), nn.ConvTranspose2d(8, 4, 2, stride=2)), "1",
     "torch.nn.modules.conv.ConvTranspose2d"),
])
def test_error_layers_without_mf_counterpart_name_the_layer_and_the_filter_fn_fix(make, name: str,
                                                                                 type_name: str) -> None:
    net, x = make(), torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=rf"'{name}' of type {type_name.replace('.', '[.]')}.*filter_fn=lambda "
                                         rf"module, name: not name\.startswith\('{name}'\)"):
        convert(net, example_input=x)
    model = convert(net, example_input=x, filter_fn=lambda module, n: not n.startswith(name))  # the suggested fix
    assert name in get_plan(model).excluded
    assert type(dict(model.named_modules())[name]) is type(dict(net.named_modules())[name])
    with set_mode(model, Mode.TARGET):
        assert model(x).shape == net(x).shape


def test_error_converting_twice() -> None:
    model = convert(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)), example_input=torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="already converted"):
        convert(model, example_input=torch.randn(2, 3, 4, 4))
    del model._shiftaddaug_plan  # hybrid layers alone are detected too
    with pytest.raises(ValueError, match="already converted: '0' is a HybridConv2d"):
        convert(model, example_input=torch.randn(2, 3, 4, 4))


class _Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Conv2d(3, 4, 1)
        self.aux = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_error_layer_not_run_and_linear_on_3d_and_shared_module() -> None:
    with pytest.raises(ValueError, match=r"never ran.*'aux'.*forward_fn"):
        analyze(_Unused(), example_input=torch.randn(1, 3, 4, 4))
    plan = analyze(_Unused(), example_input=torch.randn(1, 3, 4, 4),
                   forward_fn=lambda m, x: m.aux(m.used(x)))
    assert set(plan.layers) == {"used", "aux"}
    with pytest.raises(ValueError, match=r"linear '1'.*3-D input"):
        analyze(nn.Sequential(nn.Flatten(2), nn.Linear(16, 4)), example_input=torch.randn(2, 3, 4, 4))
    conv = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="same object"):
        analyze(nn.Sequential(conv, nn.ReLU(), conv), example_input=torch.randn(1, 3, 4, 4))


def test_export_and_audit_errors() -> None:
    dense = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1))
    with pytest.raises(ValueError, match="no hybrid layer"):
        export(dense)
    with pytest.raises(ValueError, match=r"'0' \(Conv2d\), '1' \(Conv2d\)"):
        audit(dense)
    assert len(audit(dense, allow=["0", r"\d"]).allowed) == 2
    assert len(audit(dense, expect_mult_free=False).unexpected) == 2


# ================================================================================================ sampling
def test_sampling_consistent_and_switchable() -> None:
    model = convert(_dense("mobilenetv2_035"), example_input=_input())
    plan = get_plan(model)
    widths = sample_active_widths(model, random.Random(1))
    assert widths == sample_active_widths(model, random.Random(1))  # same seed, same widths (DDP ranks agree)
    for gid, g in plan.groups.items():
        allowed = {g.width(m, 8) for m in g.multipliers} if g.kind != "fixed" else {g.channels}
        assert widths[gid] in allowed
    for lp in plan.layers.values():  # every writer of a group gets the group's width
        if lp.kind in ("conv", "dwconv"):
            assert model.get_submodule(lp.name).active_out_channels == widths[lp.out_group]
    seen_mid, seen_width = set(), set()
    rng = random.Random(0)
    for _ in range(20):
        w = sample_active_widths(model, rng, width=False)
        assert all(w[g.gid] == g.channels for g in plan.groups_of_kind("width"))
        seen_mid |= {w[g.gid] > g.channels for g in plan.groups_of_kind("mid")}
        w = sample_active_widths(model, rng, expand=False)
        assert all(w[g.gid] == g.channels for g in plan.groups_of_kind("mid"))
        seen_width |= {w[g.gid] > g.channels for g in plan.groups_of_kind("width")}
    assert seen_mid == {True, False} and seen_width == {True, False}
    with set_mode(model, Mode.AUGMENTED):
        assert model(_input()).shape == (2, 10)
    with pytest.raises(ValueError, match="outside"):
        set_widths(model, {0: 10_000})
    with pytest.raises(TypeError, match="random.Random"):
        sample_active_widths(model, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="convert it first"):
        set_max_widths(_dense("test_efficientnet"))


@pytest.mark.parametrize("op, remap", [("adder", True), ("shiftadd", None)])
def test_adder_ops_pipeline(op: str, remap: bool | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adder / shift-add targets (with the eq. 5 weight remap): gradients everywhere, export == TARGET mode.

    16x16 inputs and the adder's eager backend keep this fast (no per-shape compilation)."""
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    model = convert(_dense("test_efficientnet"), ConvertConfig(op=op, remap=remap, op_kwargs={"eta": 0.1}),
                    example_input=x)
    convs = [m for m in model.modules() if isinstance(m, HybridConv2d)]
    assert {m.op for m in convs} == {op, "mult", "shift"} and all(m.eta == 0.1 for m in convs if m.op == op)
    assert all((m.remap is not None) == bool(remap) for m in convs if m.op == op)
    model.train()  # batch statistics: untrained adder outputs would saturate eval-mode BN + SiLU (zero gradients)
    with set_mode(model, Mode.AUGMENTED):
        y = model(x)
        (y * torch.randn_like(y)).sum().backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not no_grad, no_grad
    model.eval()
    with torch.no_grad(), set_mode(model, Mode.TARGET):
        y_target = model(x)
    slim = export(model)
    with torch.no_grad():
        assert (slim(x) - y_target).abs().max().item() <= 1e-5
    assert [e.name for e in audit(slim).multiplicative] == ["conv_stem"]


# ================================================================================================ mmseg
try:
    import mmcv.ops  # noqa: F401
    import mmseg  # noqa: F401

    _MMSEG_ERROR = None
except Exception as err:  # noqa: BLE001 - any import failure means the stack is unusable
    _MMSEG_ERROR = f"{type(err).__name__}: {err}"

_NORM = dict(type="BN", requires_grad=True)
_LOSS = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
_MBV2 = dict(type="MobileNetV2", widen_factor=0.35, strides=(1, 2, 2, 1, 1, 1, 1), dilations=(1, 1, 1, 2, 2, 4, 4),
             out_indices=(1, 2, 4, 6), norm_cfg=_NORM)
_MBV3 = dict(type="MobileNetV3", arch="small", out_indices=(0, 1, 12), norm_cfg=_NORM)
_NOT_ADAPTIVE = lambda module, name: type(module).__name__ != "Conv2dAdaptivePadding"  # noqa: E731
MMSEG_CASES = {
    # name: (backbone, head type, head kwargs given the backbone's output channels, input size, filter_fn)
    "mbv2_fcn": (_MBV2, lambda c: dict(type="FCNHead", in_channels=c[3], in_index=3, channels=16, num_convs=2,
                                       concat_input=True), 64, None),
    "mbv2_aspp": (_MBV2, lambda c: dict(type="ASPPHead", in_channels=c[3], in_index=3, channels=16,
                                        dilations=(1, 6, 12)), 64, None),
    "mbv2_dsaspp": (_MBV2, lambda c: dict(type="DepthwiseSeparableASPPHead", in_channels=c[3], in_index=3,
                                          channels=16, dilations=(1, 6, 12), c1_in_channels=c[0], c1_channels=8),
                    64, None),
    # LRASPP pools with a 49x49 window: features must be >= 49 px (input 392 at output stride 8)
    "mbv3_lraspp": (_MBV3, lambda c: dict(type="LRASPPHead", in_channels=tuple(c), in_index=(0, 1, 2), channels=16,
                                          input_transform="multiple_select"), 392, _NOT_ADAPTIVE),
}


def _mmseg_model(case: str) -> tuple[nn.Module, torch.Tensor]:
    import mmseg.models  # noqa: F401 - registers the backbones and heads
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    backbone, head, size, _ = MMSEG_CASES[case]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    probe = MODELS.build(backbone)
    probe.eval()  # (mmseg backbones override train() without returning self)
    with torch.no_grad():
        channels = [f.shape[1] for f in probe(x)]
    head_cfg = dict(head(channels), num_classes=5, norm_cfg=_NORM, align_corners=False, dropout_ratio=0.1,
                    loss_decode=_LOSS)
    model = MODELS.build(dict(type="EncoderDecoder", backbone=backbone, decode_head=head_cfg))
    model.eval()
    return model, x


@pytest.mark.mmseg
@pytest.mark.skipif(_MMSEG_ERROR is not None, reason=f"mmcv with compiled ops / mmseg unusable: {_MMSEG_ERROR}")
@pytest.mark.parametrize("case", list(MMSEG_CASES))
def test_pipeline_mmseg(case: str) -> None:
    """Whole EncoderDecoder (plain call = ``_forward``): convert, train both modes, sort, export == target."""
    dense, x = _mmseg_model(case)
    filter_fn = MMSEG_CASES[case][3]
    with torch.no_grad():
        ref = dense(x)
    model = convert(dense, ConvertConfig(), example_input=x, filter_fn=filter_fn)
    plan = get_plan(model)
    seg = plan.layers["decode_head.conv_seg"]
    assert seg.role == "output" and plan.groups[seg.out_group].kind == "fixed"
    assert plan.groups_of_kind("mid") and plan.groups_of_kind("width")
    model.train()
    with set_mode(model, Mode.AUGMENTED):
        y = model(x)
        (y * torch.randn_like(y)).sum().backward()
    assert y.shape == ref.shape
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    sample_active_widths(model, random.Random(0))
    with set_mode(model, Mode.AUGMENTED):
        assert model(x).shape == ref.shape
    model.eval()
    with torch.no_grad(), set_mode(model, Mode.TARGET):
        y_target = model(x)
    sort_channels(model, scope="augmented")
    slim = export(model)
    with torch.no_grad(), set_mode(model, Mode.TARGET):
        assert torch.equal(model(x), y_target)
        assert (slim(x) - y_target).abs().max().item() <= 1e-5
    report = audit(slim)
    assert not report.unexpected and all(e.why for e in report.allowed)


@pytest.mark.mmseg
@pytest.mark.skipif(_MMSEG_ERROR is not None, reason=f"mmcv with compiled ops / mmseg unusable: {_MMSEG_ERROR}")
def test_mmseg_mult_conversion_reproduces_dense_and_backbone_alone() -> None:
    dense, x = _mmseg_model("mbv2_aspp")
    with torch.no_grad():
        ref = dense(x)
    model = convert(dense, ConvertConfig(op="mult"), example_input=x)
    with torch.no_grad(), set_mode(model, Mode.TARGET):
        assert (model(x) - ref).abs().max().item() <= 1e-5
    # the backbone converted alone: its returned features are model outputs and keep their width
    backbone = convert(dense.backbone, ConvertConfig(), example_input=x)
    plan = get_plan(backbone)
    with torch.no_grad(), set_mode(backbone, Mode.AUGMENTED):
        feats = backbone(x)
    with torch.no_grad():
        assert [f.shape for f in feats] == [f.shape for f in dense.backbone(x)]
    assert any("model output" in g.fixed_reasons for g in plan.groups.values())
