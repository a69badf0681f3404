"""Heterogeneous weight sharing (ShiftAddAug eq. 5, docs/algorithms.md §5): Gaussian -> Laplace remap, FC,
pretraining."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from shiftaddaug_plugin.layers.hybrid import HybridBatchNorm2d, HybridConv2d
from shiftaddaug_plugin.modes import Mode
from shiftaddaug_plugin.sharing import PiecewiseRemap, WeightRemap, gauss_to_laplace, pretrain_remap, remap_modules


@pytest.fixture(autouse=True)
def _eager_adder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run adder convs on the compiler-free path: these tests check maths, not kernels (compiles cost seconds)."""
    monkeypatch.setenv("SHIFTADDAUG_ADDER_BACKEND", "eager")


def _scipy_remap(w: np.ndarray, b: float | None = None, eps: float = 1e-6) -> np.ndarray:
    """Independent float64 reference: Laplace ppf of the clamped Gaussian cdf (scipy.stats)."""
    mu, sigma = w.mean(), w.std(ddof=1)
    u = np.clip(stats.norm.cdf(w, loc=mu, scale=sigma), eps, 1 - eps)
    scale = sigma / math.sqrt(2.0) if b is None else b
    return stats.laplace.ppf(u, loc=mu, scale=scale)


def test_matches_scipy_ppf_of_cdf_float64() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4000, generator=g, dtype=torch.float64) * 0.3 + 0.1
    ours = gauss_to_laplace(w).numpy()
    ref = _scipy_remap(w.numpy())
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    ours_b = gauss_to_laplace(w, b=0.05).numpy()
    np.testing.assert_allclose(ours_b, _scipy_remap(w.numpy(), b=0.05), rtol=1e-10, atol=1e-12)


def test_matches_spec_formula_in_float32() -> None:
    """The log_ndtr formulation equals the literal eq. 5 formula (u clamp, sign, ln) where fp32 can resolve it."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 8, 3, 3, generator=g) * 0.05
    mu, sigma = w.mean(), w.std()
    u = torch.special.ndtr((w.double() - mu.double()) / sigma.double()).clamp(1e-6, 1 - 1e-6)
    literal = mu.double() - sigma.double() / math.sqrt(2) * torch.sign(u - 0.5) * torch.log(1 - 2 * (u - 0.5).abs())
    ours = gauss_to_laplace(w)
    assert ours.dtype == torch.float32 and ours.shape == w.shape
    torch.testing.assert_close(ours.double(), literal, rtol=1e-5, atol=1e-7)


def test_remapped_gaussian_is_laplace() -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(200_000, generator=g) * 0.2 - 0.05
    r = gauss_to_laplace(w).double().numpy()
    assert stats.kurtosis(w.numpy(), fisher=False) == pytest.approx(3.0, abs=0.1)
    assert stats.kurtosis(r, fisher=False) == pytest.approx(6.0, abs=0.3)  # Laplace: 6
    # mean kept, variance matched by b = sigma/sqrt(2)
    assert r.mean() == pytest.approx(-0.05, abs=3e-3)
    assert r.std() == pytest.approx(0.2, rel=0.02)
    # goodness of fit against the Laplace it should be
    ks = stats.kstest(r, stats.laplace(loc=w.mean().item(), scale=w.std().item() / math.sqrt(2)).cdf)
    assert ks.pvalue > 1e-3


def test_monotone_and_dtype_preserved() -> None:
    w = torch.linspace(-1, 1, 101, dtype=torch.bfloat16)
    r = gauss_to_laplace(w)
    assert r.dtype == torch.bfloat16
    assert (r.float().diff() >= 0).all()
    r16 = gauss_to_laplace(torch.linspace(-1, 1, 101, dtype=torch.float16))
    assert r16.dtype == torch.float16 and torch.isfinite(r16).all()


def test_extreme_inputs_are_finite_and_clamped() -> None:
    eps = 1e-6
    w = torch.tensor([-1e15, -50.0, -1.0, 0.0, 1.0, 50.0, 1e15] + [0.0] * 50, requires_grad=True)
    r = gauss_to_laplace(w, eps=eps)
    assert torch.isfinite(r).all()
    r.sum().backward()
    assert torch.isfinite(w.grad).all()
    with torch.no_grad():
        mu, sigma = w.mean(), w.std()
        bound = -(sigma / math.sqrt(2)) * math.log(2 * eps)
        assert (r - mu).abs().max() <= bound * (1 + 1e-5)
        # the extreme values hit the clamp exactly (u clamped to eps / 1 - eps)
        torch.testing.assert_close(r[0] - mu, -bound)
        torch.testing.assert_close(r[6] - mu, bound)


def test_eps_clamp_bounds_tails() -> None:
    w = torch.cat([torch.randn(1000, generator=torch.Generator().manual_seed(3)), torch.tensor([40.0])]).double()
    mu, sigma = w.mean(), w.std()
    for eps in (1e-2, 1e-4, 1e-6):
        r = gauss_to_laplace(w, eps=eps)
        expected = mu - sigma / math.sqrt(2) * math.log(2 * eps)
        torch.testing.assert_close(r[-1], expected)


def test_gradient_finite_and_correct() -> None:
    g = torch.Generator().manual_seed(4)
    w = (torch.randn(64, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    with torch.no_grad():
        mu, sigma = w.mean(), w.std()

    def fixed_stats(x: torch.Tensor) -> torch.Tensor:  # r with mu/sigma as constants (they are detached)
        u = torch.special.ndtr((x - mu) / sigma)
        return mu - sigma / math.sqrt(2) * torch.sign(u - 0.5) * torch.log(1 - 2 * (u - 0.5).abs())

    r = gauss_to_laplace(w)
    (grad,) = torch.autograd.grad(r.sum(), w)
    (ref,) = torch.autograd.grad(fixed_stats(w).sum(), w)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, ref)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="eps"):
        gauss_to_laplace(torch.randn(10), eps=0.0)
    with pytest.raises(ValueError, match="b must be > 0"):
        gauss_to_laplace(torch.randn(10), b=-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        gauss_to_laplace(torch.randn(1))
    with pytest.raises(TypeError):
        gauss_to_laplace(torch.arange(10))
    with pytest.raises(ValueError, match="kernel"):
        WeightRemap(3)(torch.randn(4, 4, 1, 1))


def test_weight_remap_identity_init_and_fc() -> None:
    remap = WeightRemap(3)
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(5)) * 0.1
    torch.testing.assert_close(remap(w), gauss_to_laplace(w))
    assert [n for n, _ in remap.named_parameters()] == ["fc.weight", "fc.bias"]
    assert remap.fc.weight.shape == (9, 9)
    with torch.no_grad():
        remap.fc.weight.copy_(torch.eye(9).flip(0))  # reverses each kernel's taps
    expected = gauss_to_laplace(w.reshape(-1, 9).flip(1).reshape(w.shape))
    torch.testing.assert_close(remap(w), expected)
    assert WeightRemap(1, fc=False)(w[:, :, :1, :1]).shape == (8, 4, 1, 1)
    assert list(WeightRemap(1, fc=False).parameters()) == []


def test_frozen_state_persists_in_state_dict() -> None:
    remap = WeightRemap(3)
    assert not remap.frozen and all(p.requires_grad for p in remap.parameters())
    remap.freeze()
    assert remap.frozen and not any(p.requires_grad for p in remap.parameters())
    fresh = WeightRemap(3)
    fresh.load_state_dict(remap.state_dict())
    assert fresh.frozen and not any(p.requires_grad for p in fresh.parameters())
    remap.unfreeze()
    assert not remap.frozen and all(p.requires_grad for p in remap.parameters())


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = HybridConv2d(3, 12, 3, padding=1, target_in_channels=3, target_out_channels=6, op="adder",
                                  remap=True)
        self.bn1 = HybridBatchNorm2d(12, target_num_features=6)
        self.conv2 = HybridConv2d(12, 8, 1, target_in_channels=6, target_out_channels=4, op="shift")
        self.bn2 = HybridBatchNorm2d(8, target_num_features=4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean((2, 3)))


def test_pretrain_remap_trains_only_remap_then_freezes() -> None:
    torch.manual_seed(0)
    net = _TinyNet()
    net.conv1.mf_enabled = False  # block-variant state must come back after pretraining
    net.eval()
    g = torch.Generator().manual_seed(6)
    data = [(torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(3)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    assert remap_modules(net) == [net.conv1]

    losses = pretrain_remap(net, data, nn.functional.cross_entropy, steps=5, lr=1e-2)

    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"conv1.remap.fc.weight", "conv1.remap.fc.bias", "conv1.remap.frozen_flag"}
    assert net.conv1.remap.frozen
    assert not any(p.requires_grad for p in net.conv1.remap.parameters())
    for n, p in net.named_parameters():
        if not n.startswith("conv1.remap."):
            assert p.requires_grad == flags[n]
    assert net.conv1.mf_enabled is False and not net.training
    assert net.conv1.mode == Mode.AUGMENTED


def test_pretrain_remap_errors() -> None:
    plain = nn.Sequential(HybridConv2d(3, 4, 1, target_in_channels=3, target_out_channels=2, op="adder"))
    with pytest.raises(ValueError, match="no hybrid adder layer"):
        pretrain_remap(plain, [], nn.functional.mse_loss, steps=1)
    net = _TinyNet()
    with pytest.raises(ValueError, match="empty loader"):
        pretrain_remap(net, [], nn.functional.cross_entropy, steps=1)
    with pytest.raises(TypeError, match="pairs"):
        pretrain_remap(net, [torch.randn(2, 3, 4, 4)], nn.functional.cross_entropy, steps=1)
    with pytest.raises(ValueError, match="steps"):
        pretrain_remap(net, [], nn.functional.cross_entropy, steps=0)


def test_piecewise_remap_identity_init_monotone_and_kl() -> None:
    g = torch.Generator().manual_seed(7)
    w = torch.randn(16, 8, 3, 3, generator=g) * 0.1
    pw = PiecewiseRemap(num_bins=100, bound=4.0)
    torch.testing.assert_close(pw(w), w, rtol=1e-5, atol=1e-6)  # slopes 1: identity (also beyond the bound)
    with torch.no_grad():
        pw.log_slopes.normal_(0, 0.5)
    z = torch.linspace(-6, 6, 2001).double()
    out = pw(z)
    assert (out.diff() > 0).all()  # monotone, continuous (no jumps larger than the slope allows)
    assert out.diff().max() < z.diff()[0] * pw.log_slopes.exp().max().double() * 1.0001
    out.sum().backward()
    assert pw.log_slopes.grad is not None and (pw.log_slopes.grad != 0).any()
    # the KL penalty: ~0 for Laplace samples, clearly larger for Gaussian ones, differentiable
    lap = torch.distributions.Laplace(0.0, 1.0).sample((20_000,))
    gauss = torch.randn(20_000, generator=g)
    kl_lap, kl_gauss = PiecewiseRemap.kl_to_laplace(lap), PiecewiseRemap.kl_to_laplace(gauss)
    assert 0 <= kl_lap < 0.02 < kl_gauss
    assert float(PiecewiseRemap.kl_to_laplace(gauss_to_laplace(gauss))) < 0.02
    ww = gauss.clone().requires_grad_(True)
    PiecewiseRemap.kl_to_laplace(ww).backward()
    assert torch.isfinite(ww.grad).all() and (ww.grad != 0).any()
    # a few steps of the ShiftAddNAS recipe (minimise the KL of the remapped weights) move it towards Laplace
    opt = torch.optim.Adam(pw.parameters(), lr=0.05)
    with torch.no_grad():
        pw.log_slopes.zero_()
    start = float(PiecewiseRemap.kl_to_laplace(pw(gauss)).detach())
    for _ in range(30):
        opt.zero_grad()
        PiecewiseRemap.kl_to_laplace(pw(gauss)).backward()
        opt.step()
    assert float(PiecewiseRemap.kl_to_laplace(pw(gauss)).detach()) < 0.5 * start
    layer = HybridConv2d(4, 4, 3, target_in_channels=2, target_out_channels=2, op="adder", remap=pw)
    assert layer.remap is pw and layer(torch.randn(1, 4, 5, 5)).shape == (1, 4, 3, 3)
    with pytest.raises(ValueError, match="num_bins"):
        PiecewiseRemap(num_bins=0)
