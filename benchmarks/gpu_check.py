"""GPU readiness check: the MF operators on an accelerator, correct first, then timed (one command).

Usage::

    .venv/bin/python benchmarks/gpu_check.py [--device cuda] [--quick] [--json PATH] [--rounds R] [--warmup W]

1. **Correctness** (asserted; the script exits 1 on a failure): ``AdderConv2d`` and ``ShiftConv2d`` forward and
   backward (input and weight gradients) on ``--device`` against the same layer evaluated in float64 on the CPU, and
   the adder's forward against a naive float64 formula ``Y = -sum_{c,k} |X - W|`` (unfold, no shared code with the
   kernels); under ``torch.autocast`` (float16 on CUDA, bfloat16 on CPU) the adder must still accumulate in float32
   (output dtype float32, error at float32 level, not float16 level).
2. **Speed**: ``AdderConv2d`` / ``ShiftConv2d`` forward + backward against ``F.conv2d`` of the same shape (cuDNN on
   CUDA), and one training step (``ShiftAddAugTask`` forward, backward, SGD) of ``shiftadd_mcunet`` and
   ``shiftadd_mbv2_tiny``: plain, MF shift, MF adder, NetAug and ShiftAddAug (adder), as in ``train_step.py``.
   Same-run ratios in alternating rounds (``benchmarks/_timing.py``); every timed call ends with a device
   synchronisation so asynchronous kernels are charged to the call that launched them.

Without CUDA it runs on the CPU (``--device cpu``, the default when no GPU is visible), which is what the test suite
checks; the numbers that matter come from a CUDA machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (  # noqa: E402
    add_common_args,
    alternating_rounds,
    machine_info,
    markdown_table,
    ratios,
    resolve_common_args,
    summarize,
    write_json,
)

#: (name, in, out, kernel, stride, groups, spatial) at batch --batch
SHAPES = [
    ("pw 64->128 @16", 64, 128, 1, 1, 1, 16),
    ("dw 128 k3 @16", 128, 128, 3, 1, 128, 16),
    ("dense 32->32 k3 @32", 32, 32, 3, 1, 1, 32),
]
QUICK_SHAPES = SHAPES[:2]
STEP_VARIANTS = ["plain", "mf-shift", "mf-adder", "netaug", "saa-adder"]


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def naive_adder_float64(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int, groups: int) -> torch.Tensor:
    """``Y[n, o, p] = -sum_{c, k} |X_patch[n, c, k, p] - W[o, c, k]|`` in float64 (AdderNet eq. 2), via unfold."""
    x, w = x.double().cpu(), w.double().cpu()
    n, c, h, _ = x.shape
    o, cg, kh, kw = w.shape
    patches = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (N, C*k, L)
    out_hw = (h + 2 * padding - kh) // stride + 1
    patches = patches.view(n, groups, cg * kh * kw, 1, -1)  # (N, G, Cg*k, 1, L)
    weights = w.view(groups, o // groups, cg * kh * kw).permute(0, 2, 1).unsqueeze(-1)  # (G, Cg*k, Og, 1)
    y = -(patches - weights.unsqueeze(0)).abs().sum(2)  # (N, G, Og, L)
    return y.reshape(n, o, out_hw, out_hw)


def _layer(kind: str, cin: int, cout: int, k: int, stride: int, groups: int) -> nn.Module:
    from shiftaddaug_plugin.layers import AdderConv2d, ShiftConv2d

    cls = AdderConv2d if kind == "adder" else ShiftConv2d
    return cls(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)


def _fwd_bwd(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(grad)
    return y.detach(), x.grad.detach(), layer.weight.grad.detach()


def check_correctness(device: torch.device, shapes: List[tuple], batch: int) -> List[Dict[str, Any]]:
    """Max relative errors of device results vs float64 references; ``ok`` per check."""
    rows: List[Dict[str, Any]] = []
    for name, cin, cout, k, stride, groups, size in shapes:
        for kind in ("adder", "shift"):
            torch.manual_seed(0)
            ref_layer = _layer(kind, cin, cout, k, stride, groups).double()
            dev_layer = _layer(kind, cin, cout, k, stride, groups).to(device)
            dev_layer.load_state_dict({key: v.float() for key, v in ref_layer.state_dict().items()})
            x = torch.randn(batch, cin, size, size, dtype=torch.float64)
            y64 = ref_layer(x)
            grad = torch.randn_like(y64)
            ref = _fwd_bwd(ref_layer, x, grad)
            got = _fwd_bwd(dev_layer, x.float().to(device), grad.float().to(device))
            errs = [float((g.double().cpu() - r).abs().max() / r.abs().max().clamp_min(1e-12))
                    for g, r in zip(got, ref)]
            # shift: input quantisation rounds x * 2^16 in float32 vs float64, a last-bit difference at most
            tol = 1e-4
            row = dict(shape=name, op=kind, check="fwd/dX/dW vs float64 (same layer)", errors=errs,
                       ok=all(e <= tol for e in errs))
            rows.append(row)
            if kind == "adder":
                naive = naive_adder_float64(x, ref_layer.weight.detach(), stride, k // 2, groups)
                err = float((got[0].double().cpu() - naive).abs().max() / naive.abs().max())
                rows.append(dict(shape=name, op=kind, check="fwd vs naive float64 formula", errors=[err],
                                 ok=err <= 1e-5))
                amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
                with torch.autocast(device_type=device.type, dtype=amp_dtype):
                    y_amp = dev_layer(x.float().to(device)).detach()
                err = float((y_amp.double().cpu() - naive).abs().max() / naive.abs().max())
                rows.append(dict(shape=name, op=kind, check=f"autocast {str(amp_dtype).split('.')[-1]}: "
                                 f"float32 accumulation (out {str(y_amp.dtype).split('.')[-1]})", errors=[err],
                                 ok=y_amp.dtype == torch.float32 and err <= 1e-5))
    return rows


def _time_shape(device: torch.device, shape: tuple, batch: int, rounds: int, warmup: int) -> Dict[str, Any]:
    """One layer shape: conv, adder and shift forward + backward in alternating rounds."""
    name, cin, cout, k, stride, groups, size = shape
    sync = _sync(device)
    torch.manual_seed(0)
    x = torch.randn(batch, cin, size, size, device=device, requires_grad=True)
    conv_w = torch.randn(cout, cin // groups, k, k, device=device, requires_grad=True)
    layers = {kind: _layer(kind, cin, cout, k, stride, groups).to(device) for kind in ("adder", "shift")}
    out = (size + 2 * (k // 2) - k) // stride + 1
    grad = torch.randn(batch, cout, out, out, device=device)

    def conv_step() -> None:
        x.grad = conv_w.grad = None
        F.conv2d(x, conv_w, None, stride, k // 2, 1, groups).backward(grad)
        sync()

    def layer_step(layer: nn.Module) -> Callable[[], None]:
        def step() -> None:
            x.grad = layer.weight.grad = None
            layer(x).backward(grad)
            sync()
        return step

    fns = {"conv": conv_step, **{kind: layer_step(layer) for kind, layer in layers.items()}}
    times = alternating_rounds(fns, rounds, warmup=warmup)
    return dict(shape=name, conv=summarize(times["conv"]),
                **{f"{kind}_vs_conv": ratios(times, kind, "conv") for kind in layers})


def time_layers(device: torch.device, shapes: List[tuple], batch: int, rounds: int, warmup: int) -> List[Dict]:
    return [_time_shape(device, shape, batch, rounds, warmup) for shape in shapes]


def time_steps(device: torch.device, models: List[str], batch: int, rounds: int, warmup: int) -> List[Dict]:
    from train_step import VARIANTS, StepRunner

    sync = _sync(device)
    step_args = argparse.Namespace(seed=0, num_classes=10, in_chans=3)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    targets = torch.randint(0, 10, (batch,), generator=g).to(device)
    rows = []
    for model_name in models:
        runners = {}
        for name in STEP_VARIANTS:
            kwargs, augment = VARIANTS[name]
            runner = StepRunner(name, model_name, kwargs, augment, step_args, images, targets)
            runner.model.to(device)  # in place: the optimizer keeps the same parameters

            def step(r: StepRunner = runner) -> None:
                r.step()
                sync()

            runners[name] = step
        times = alternating_rounds(runners, rounds, warmup=warmup)
        rows.append(dict(model=model_name, plain=summarize(times["plain"]),
                         **{f"{n}_vs_plain": ratios(times, n, "plain") for n in STEP_VARIANTS[1:]},
                         saa_adder_vs_netaug=ratios(times, "saa-adder", "netaug")))
    return rows


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, "gpu_check", rounds=20, quick_rounds=3, warmup=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device to check (default cuda when visible, else cpu)")
    parser.add_argument("--batch", type=int, default=64, help="batch of the layer and step timings (default 64)")
    parser.add_argument("--no-steps", action="store_true", help="skip the whole-network training steps")
    args = parser.parse_args(argv)
    rounds, warmup = resolve_common_args(parser, args, rounds=20, quick_rounds=3, warmup=3)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device; run on a GPU machine or pass --device cpu")
    shapes = QUICK_SHAPES if args.quick else SHAPES
    batch = 8 if args.quick else args.batch

    checks = check_correctness(device, shapes, batch=4)
    print(markdown_table(["shape", "op", "check", "max rel. error", "ok"],
                         [[c["shape"], c["op"], c["check"], ", ".join(f"{e:.1e}" for e in c["errors"]),
                           "yes" if c["ok"] else "**NO**"] for c in checks]))
    layers = time_layers(device, shapes, batch, rounds, warmup)
    print()
    print(markdown_table(["shape", "conv median ms", "adder / conv", "shift / conv"],
                         [[r["shape"], f"{r['conv'].median_ms:.3f}", f"{r['adder_vs_conv']['median']:.2f}x",
                           f"{r['shift_vs_conv']['median']:.2f}x"] for r in layers]))
    steps: List[Dict] = []
    if not args.no_steps:
        models = ["shiftadd_mbv2_tiny"] if args.quick else ["shiftadd_mcunet", "shiftadd_mbv2_tiny"]
        steps = time_steps(device, models, batch, rounds, warmup)
        print()
        print(markdown_table(["model", "plain ms", *[f"{n} / plain" for n in STEP_VARIANTS[1:]],
                              "saa-adder / netaug"],
                             [[s["model"], f"{s['plain'].median_ms:.2f}",
                               *[f"{s[f'{n}_vs_plain']['median']:.2f}x" for n in STEP_VARIANTS[1:]],
                               f"{s['saa_adder_vs_netaug']['median']:.2f}x"] for s in steps]))
    info = machine_info(args.threads)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    write_json(args.json, dict(machine=info, device=str(device), batch=batch, rounds=rounds, warmup=warmup,
                               checks=checks, layers=layers, steps=steps))
    failed = [c for c in checks if not c["ok"]]
    if failed:
        print(f"gpu_check: {len(failed)} correctness check(s) failed on {device}", file=sys.stderr)
        return 1
    print(f"\ngpu_check: all {len(checks)} correctness checks passed on {device}; JSON -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
