"""The operator table (shiftaddaug_plugin.ops) is the one list every component reads: parametrised over its rows."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from shiftaddaug_plugin.convert import ConvertConfig, convert
from shiftaddaug_plugin.cost import count_ops
from shiftaddaug_plugin.layers import HybridConv2d, HybridLinear
from shiftaddaug_plugin.models import parse_variant_kwargs
from shiftaddaug_plugin.models.shiftadd_nets import REFERENCE_ARCHS
from shiftaddaug_plugin.nas.space import BlockArch
from shiftaddaug_plugin.ops import OP_TABLE, Op, check_op_kwargs, op_spec, op_values

SPECS = list(OP_TABLE.values())


@pytest.fixture(autouse=True)
def _eager_adder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")


def test_table_covers_every_member_once() -> None:
    assert list(OP_TABLE) == list(Op)
    assert all(spec.op is op for op, spec in OP_TABLE.items())
    assert op_values() == ("shift", "adder", "shiftadd", "mult")
    assert op_values(linear=True) == ("shift", "mult")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.op.value)
def test_every_component_accepts_every_op(spec) -> None:
    op = spec.op.value
    assert ConvertConfig(op=spec.op).op == op and type(ConvertConfig(op=spec.op).op) is str  # plain: checkpoints
    assert ConvertConfig(op_overrides={"x": op.upper()}).op_overrides["x"] == op
    assert parse_variant_kwargs({"op": op}, REFERENCE_ARCHS["shiftadd_mcunet"]).op == op
    assert BlockArch(3, 3.0, op).op == op
    layer = HybridConv2d(8, 8, 3, padding=1, target_in_channels=4, target_out_channels=4, op=op)
    assert layer.op is spec.op and str(layer.op) == op
    if spec.linear:
        assert HybridLinear(8, 2, target_in_features=4, op=op).op is spec.op
    else:
        with pytest.raises(ValueError, match="has no linear layer"):
            HybridLinear(8, 2, target_in_features=4, op=op)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.op.value)
def test_every_allowed_kwarg_reaches_the_layer(spec) -> None:
    """``quantize_input`` is a shift kwarg: ConvertConfig used to reject what the layers accept."""
    values = {"weight_bits": 4, "act_int_bits": 8, "act_frac_bits": 8, "act_rounding": "round",
              "quantize_input": False, "eta": 0.1}
    kwargs = {k: values[k] for k in spec.kwargs}
    config = ConvertConfig(op=spec.op, op_kwargs=kwargs, keep_first_conv_mult=False)
    assert config.kwargs_for(spec.op) == kwargs
    model = convert(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8)), config,
                    example_input=torch.randn(1, 4, 8, 8))
    assert model[0].op_kwargs == kwargs
    if spec.has_shift:
        assert model[0].quant_config.quantize_input is False
    with pytest.raises(ValueError, match="unknown op_kwargs"):
        check_op_kwargs("HybridConv2d", spec.op, {"nonsense": 1})


@pytest.mark.parametrize("spec", [s for s in SPECS if s.op is not Op.SHIFTADD], ids=lambda s: s.op.value)
def test_cost_rule_of_the_table_is_what_count_ops_reports(spec) -> None:
    """A target-mode hybrid conv without bias costs exactly ``spec.cost(macs)`` (naive MAC count here)."""
    layer = HybridConv2d(6, 6, 3, padding=1, bias=False, target_in_channels=3, target_out_channels=5, op=spec.op)
    from shiftaddaug_plugin.modes import Mode, set_mode

    set_mode(layer, Mode.TARGET)
    h = w = 7
    macs = h * w * 5 * 3 * 9
    report = count_ops(layer, (3, h, w))
    expected = spec.cost(macs)
    assert (report.mults, report.shifts, report.adds) == (expected.mults, expected.shifts, expected.adds)
    assert report.macs == macs


def test_shiftadd_cost_adds_the_adder_conv() -> None:
    spec = OP_TABLE[Op.SHIFTADD]
    assert spec.cost(10, 4) == (0, 10 + 8, 10, 14)
    assert OP_TABLE[Op.SHIFT].cost(10, 4) == (0, 10, 10, 10)  # no adder part: adder MACs are ignored


@pytest.mark.parametrize("bad", ["conv", "", "Shift-Add", 3])
def test_unknown_op_names_the_valid_ones(bad) -> None:
    with pytest.raises(ValueError, match="use one of 'shift', 'adder', 'shiftadd', 'mult'"):
        op_spec(bad, where="test")


# ------------------------------------------------------------------------- every registry covers every layer
def _our_layer_classes() -> list[type]:
    import shiftaddaug_plugin.layers as layers

    return [getattr(layers, name) for name in layers.__all__]


@pytest.mark.parametrize("cls", _our_layer_classes(), ids=lambda c: c.__name__)
def test_every_layer_has_a_cost_rule(cls: type) -> None:
    """Cost rules are keyed by ``module.QualName`` strings: moving a class must move its key (a silent 0 count)."""
    from shiftaddaug_plugin.cost.rules import DEFAULT_RULES, type_key

    assert type_key(cls) in DEFAULT_RULES


def test_every_handler_builds_a_layer_with_a_cost_rule() -> None:
    """Each entry of the converter's exact-type table converts to a layer the cost model prices."""
    from shiftaddaug_plugin.convert.handlers import handler_table
    from shiftaddaug_plugin.cost.rules import DEFAULT_RULES, type_key

    table = handler_table()
    assert {nn.Conv2d, nn.Linear, nn.BatchNorm2d} <= set(table)
    for cls, handler in table.items():
        assert type_key(cls) in DEFAULT_RULES, cls  # the dense layer itself is priced
        assert handler.kind in ("conv", "linear", "bn")
