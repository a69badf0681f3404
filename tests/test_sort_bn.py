"""Channel sorting and BN recalibration of converted models (docs/algorithms.md §4)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

from shiftaddaug_plugin import Mode, set_mode  # noqa: E402
from shiftaddaug_plugin.convert import (  # noqa: E402
    ConvertConfig,
    convert,
    get_plan,
    recalibrate_bn,
    set_max_widths,
    sort_channels,
)
from shiftaddaug_plugin.layers.hybrid import HybridBatchNorm2d  # noqa: E402


def _input(seed: int = 0, n: int = 2, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _converted(op: str = "shift", dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    dense = timm.create_model("test_efficientnet", num_classes=10).eval().to(dtype)
    return convert(dense, ConvertConfig(op=op), example_input=_input(dtype=dtype))


def _augmented_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    opt.zero_grad()
    with set_mode(model, Mode.AUGMENTED):
        model(x).square().mean().backward()
    opt.step()


# ================================================================================================ sorting
def test_sort_keeps_augmented_function_and_permutes_sgd_state_and_ema() -> None:
    """float64 + op='mult': the widest augmented network computes the same function after sorting."""
    x = _input(dtype=torch.float64)
    model = _converted("mult", torch.float64)
    set_max_widths(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _augmented_step(model, opt, x)
    ema = copy.deepcopy(model)
    momenta = {id(p): opt.state[p]["momentum_buffer"].clone() for p in model.parameters()}
    with torch.no_grad(), set_mode(model, Mode.AUGMENTED):
        before = model(x)
    perms = sort_channels(model, optimizer=opt, ema=ema, scope="augmented")
    assert perms
    with torch.no_grad(), set_mode(model, Mode.AUGMENTED):
        assert (model(x) - before).abs().max().item() < 1e-10
    plan = get_plan(model)
    for gid, perm in perms.items():
        group = plan.groups[gid]
        n = group.channels
        assert group.kind == "mid"
        assert torch.equal(perm[:n], torch.arange(n)) and sorted(perm.tolist()) == list(range(group.max_channels))
        imp = sum(model.get_submodule(p).weight.abs().sum((0, 2, 3)) for p in group.project)
        assert (imp[n:-1] >= imp[n + 1:]).all()  # augmented channels in decreasing importance
        for name in group.producers:  # optimizer state follows its parameter (rows of the producers)
            w = model.get_submodule(name).weight
            assert torch.equal(opt.state[w]["momentum_buffer"], momenta[id(w)][perm])
        for name in group.project:  # ... and the project conv's input columns
            w = model.get_submodule(name).weight
            assert torch.equal(opt.state[w]["momentum_buffer"], momenta[id(w)][:, perm])
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), ema.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1  # the EMA copy is permuted identically
    assert sort_channels(model, scope="augmented") == {}  # already sorted: idempotent


def test_sort_target_bit_exact_with_adam_and_timm_ema() -> None:
    from timm.utils import ModelEmaV3

    x = _input()
    model = _converted("shift")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _augmented_step(model, opt, x)
    ema = ModelEmaV3(model, decay=0.9)
    ema.update(model)
    model.eval()
    ema.module.eval()
    with torch.no_grad(), set_mode(model, Mode.TARGET), set_mode(ema.module, Mode.TARGET):
        y_model, y_ema = model(x), ema.module(x)
    params = dict(model.named_parameters())
    states = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in params.items()}
    perms = sort_channels(model, optimizer=opt, ema=ema, scope="augmented")
    assert perms and all(p is params[n] for n, p in model.named_parameters())
    with torch.no_grad(), set_mode(model, Mode.TARGET), set_mode(ema.module, Mode.TARGET):
        assert torch.equal(model(x), y_model) and torch.equal(ema.module(x), y_ema)
    group = get_plan(model).groups[next(iter(perms))]
    w = params[f"{group.producers[0]}.weight"]
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(opt.state[w][key], states[f"{group.producers[0]}.weight"][key][perms[group.gid]])
    assert torch.equal(opt.state[w]["step"], states[f"{group.producers[0]}.weight"]["step"])


def test_sort_rejects_mismatched_ema() -> None:
    model = _converted("shift")
    with pytest.raises(ValueError, match="EMA copy"):
        sort_channels(model, ema=timm.create_model("test_efficientnet", num_classes=10))
    with pytest.raises(TypeError, match="ema must be"):
        sort_channels(model, ema=object())


# ================================================================================================ BN
def test_recalibrate_bn_cumulative_target_statistics() -> None:
    model = _converted("shift")
    model.train()
    model.blocks[1].eval()  # a mixed train/eval state must come back as it was
    flags = {n: m.training for n, m in model.named_modules()}
    bns = {n: m for n, m in model.named_modules() if isinstance(m, HybridBatchNorm2d)}
    momenta = {n: m.momentum for n, m in bns.items()}
    with torch.no_grad():  # make augmented slices recognisable
        for m in bns.values():
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    aug_before = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in bns.items()}
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in bns}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen[n].append(inp[0].detach().double()))
             for n, m in bns.items()]
    loader = [(_input(i, n=4), torch.zeros(4)) for i in range(3)]
    used = recalibrate_bn(model, loader, num_images=10)
    for h in hooks:
        h.remove()
    assert used == 10 and [x.shape[0] for x in seen["bn1"]] == [4, 4, 2]
    plan = get_plan(model)
    for n, m in bns.items():
        t = plan.layers[n].target_in
        assert all(x.shape[1] == t for x in seen[n])  # target mode: target channels only
        mean = torch.stack([x.mean((0, 2, 3)) for x in seen[n]]).mean(0)  # cumulative average over batches
        var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in seen[n]]).mean(0)
        torch.testing.assert_close(m.running_mean[:t].double(), mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.running_var[:t].double(), var, rtol=1e-4, atol=1e-5)
        assert torch.equal(m.running_mean[t:], aug_before[n][0][t:])
        assert torch.equal(m.running_var[t:], aug_before[n][1][t:])
        assert int(m.num_batches_tracked) == 3 and m.momentum == momenta[n]
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(m.mode == Mode.AUGMENTED for m in bns.values())


def test_recalibrate_bn_plain_model_and_errors() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    x = _input(n=6)
    assert recalibrate_bn(net, [x], num_images=6) == 6 and not net.training
    ref = net[0](x).double()
    torch.testing.assert_close(net[1].running_mean.double(), ref.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var.double(), ref.var((0, 2, 3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="num_images"):
        recalibrate_bn(net, [x], num_images=0)
    before = net[1].running_mean.clone()
    with pytest.raises(ValueError, match="no images"):
        recalibrate_bn(net, [], num_images=4)
    assert torch.equal(net[1].running_mean, before) and net[1].momentum == 0.1  # restored after the failure
    with pytest.raises(ValueError, match="no batch norm"):
        recalibrate_bn(nn.Conv2d(3, 3, 1), [x], num_images=2)
    with pytest.raises(TypeError, match="cannot find the images"):
        recalibrate_bn(net, [[1, 2]], num_images=2)
