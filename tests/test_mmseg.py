"""MMSegmentation integration (docs/algorithms.md §4-§6, docs/ARCHITECTURE.md): segmentor, hook, offline
dataset, configs, export. Skipped (with the reason) only when mmcv's compiled ops cannot be imported."""
from __future__ import annotations

import copy
import glob
import os.path as osp

import numpy as np
import pytest
import torch

try:
    import mmcv.ops  # noqa: F401
    import mmseg  # noqa: F401

    _MMSEG_ERROR = None
except Exception as err:  # noqa: BLE001 - any import failure means the stack is unusable
    _MMSEG_ERROR = f"{type(err).__name__}: {err}"

pytestmark = [
    pytest.mark.mmseg,
    pytest.mark.skipif(_MMSEG_ERROR is not None, reason=f"mmcv with compiled ops / mmseg unusable: {_MMSEG_ERROR}"),
]

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(ROOT, "configs", "mmseg")
EMBEDDED = osp.join(CONFIG_DIR, "shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py")
ALL_CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, "*.py")))


@pytest.fixture(scope="module")
def ext():
    from mmengine.registry import init_default_scope

    import shiftaddaug_plugin.mmseg_ext as ext

    init_default_scope("mmseg")
    return ext


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fmnist_scenes"))


def _small_cfg(data_root: str, work_dir: str, max_iters: int = 4, **model_overrides):
    """The embedded config shrunk to a few CPU-seconds: 48 train / 16 val scenes, batch 4, no dropout (so
    resumed and uninterrupted runs are comparable bit for bit), no worker processes."""
    from mmengine.config import Config

    cfg = Config.fromfile(EMBEDDED)
    cfg.work_dir = work_dir
    for split, n in (("train", 48), ("val", 16)):
        loader = cfg[f"{split}_dataloader"]
        loader.update(batch_size=4, num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=data_root, num_images=n)
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.model.decode_head.dropout_ratio = 0.0
    cfg.model.convert_cfg.update(aug_width_mult_list=[1.0, 1.6], aug_expand_list=[1.0, 1.6, 2.2])
    cfg.model.update(model_overrides)
    cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters // 2)
    cfg.param_scheduler = [dict(type="CosineAnnealingLR", eta_min=1e-4, by_epoch=False, begin=0, end=max_iters)]
    cfg.default_hooks.checkpoint.update(interval=max_iters // 2)
    cfg.default_hooks.logger.update(interval=2)
    cfg.custom_hooks = [dict(type="ShiftAddAugHook", width_aug_end=0.5, sort_interval=1, recalib_images=8,
                             recalib_batch_size=4, recalib_seed=0)]
    cfg.log_level = "WARNING"
    return cfg


def _batch(model, data_root, n=2, split="val"):
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS

    cfg = _small_cfg(data_root, "/tmp/unused")
    dataset = DATASETS.build(cfg[f"{split}_dataloader"].dataset)
    return model.data_preprocessor(pseudo_collate([dataset[i] for i in range(n)]), training=True)


# =============================================================================================== dataset
def test_scene_is_deterministic_and_labelled(ext):
    from shiftaddaug_plugin.data.fashion_mnist import FashionMNIST

    fm = FashionMNIST(split="test", output="tensor", subset=200)
    cfg = ext.SceneConfig(image_size=64, max_objects=3)
    img, mask = ext.compose_scene(fm.data, fm.targets, cfg, seed=3, split="val", index=5)
    img2, mask2 = ext.compose_scene(fm.data, fm.targets, cfg, seed=3, split="val", index=5)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and mask.shape == (64, 64) and mask.dtype == np.uint8
    assert np.array_equal(img, img2) and np.array_equal(mask, mask2)
    other, _ = ext.compose_scene(fm.data, fm.targets, cfg, seed=3, split="val", index=6)
    assert not np.array_equal(img, other)
    labels = set(np.unique(mask).tolist())
    assert labels <= set(range(11)) and len(labels - {0}) >= 1
    # one item on the background: its label is the item's class + 1 and its mask is the thresholded alpha
    one = ext.SceneConfig(image_size=28, max_objects=1, scale_range=(1.0, 1.0))
    items = np.zeros((1, 28, 28), np.uint8)
    items[0, 5:20, 8:12] = 255
    items[0, 5:20, 12] = 40  # alpha 0.157 < threshold 0.3: not labelled
    _, m = ext.compose_scene(items, np.array([7]), one, seed=0, split="train", index=0)
    expected = np.zeros((28, 28), np.uint8)
    expected[5:20, 8:12] = 8
    assert np.array_equal(m, expected)


def test_scene_config_errors(ext):
    with pytest.raises(ValueError, match="image_size"):
        ext.SceneConfig(image_size=16)
    with pytest.raises(ValueError, match="scale_range"):
        ext.SceneConfig(image_size=32, scale_range=(1.0, 2.0))


def test_dataset_files_equal_generator(ext, data_root):
    from mmseg.registry import DATASETS
    from PIL import Image

    from shiftaddaug_plugin.data.fashion_mnist import FashionMNIST

    ds = DATASETS.build(dict(type="FashionMNISTScenesDataset", split="val", num_images=6, data_root=data_root,
                             pipeline=[]))
    assert len(ds) == 6 and ds.metainfo["classes"][0] == "background" and len(ds.metainfo["classes"]) == 11
    fm = FashionMNIST(split="test", output="tensor")
    for i in (0, 5):
        info = ds.get_data_info(i)
        img, mask = ext.compose_scene(fm.data, fm.targets, ds.scene_config, 0, "val", i)
        assert np.array_equal(np.asarray(Image.open(info["img_path"]).convert("RGB")), img)
        assert np.array_equal(np.asarray(Image.open(info["seg_map_path"])), mask)
    with pytest.raises(ValueError, match="fixed by FashionMNISTScenesDataset"):
        DATASETS.build(dict(type="FashionMNISTScenesDataset", data_root=data_root, reduce_zero_label=True))


# =============================================================================================== configs
@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[osp.basename(p)[:-3] for p in ALL_CONFIGS])
def test_every_config_builds(ext, path):
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from shiftaddaug_plugin.layers.hybrid import HybridConv2d

    cfg = Config.fromfile(path)
    assert "shiftaddaug_plugin.mmseg_ext" in cfg.custom_imports["imports"]
    assert any(h["type"] == "ShiftAddAugHook" for h in cfg.custom_hooks)
    model = MODELS.build(cfg.model)
    assert isinstance(model, ext.ShiftAddAugEncoderDecoder)
    convs = [m for m in model.modules() if isinstance(m, HybridConv2d)]
    assert convs and any(c.op != "mult" for c in convs)
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, *model.example_input_shape[1:]), mode="tensor")
    assert logits.shape[:2] == (1, cfg.model.decode_head.num_classes)


def test_conv_cfg_uses_registered_ops(ext):
    from mmcv.cnn import build_conv_layer

    from shiftaddaug_plugin.layers.adder import AdderConv2d
    from shiftaddaug_plugin.layers.shift import ShiftConv2d

    assert isinstance(build_conv_layer(dict(type="ShiftConv2d"), 4, 8, 3, padding=1), ShiftConv2d)
    assert isinstance(build_conv_layer(dict(type="AdderConv2d"), 4, 8, 3, padding=1), AdderConv2d)


# ============================================================================================= segmentor
def _build(data_root, **overrides):
    from mmseg.registry import MODELS

    cfg = _small_cfg(data_root, "/tmp/unused", **overrides)
    return MODELS.build(cfg.model)


def test_loss_has_target_and_weighted_aug_terms(ext, data_root):
    torch.manual_seed(0)
    model = _build(data_root, alpha=1.0)
    model.train()
    batch = _batch(model, data_root)
    model.aug_step = 5
    losses = model(**batch, mode="loss")
    assert {"target.decode.loss_ce", "target.decode.acc_seg", "aug.decode.loss_ce", "aug.decode.acc_seg"} <= set(losses)
    model.alpha = 2.5
    model.aug_step = 5  # same sampled widths
    scaled = model(**batch, mode="loss")
    torch.testing.assert_close(scaled["aug.decode.loss_ce"], 2.5 * losses["aug.decode.loss_ce"])
    torch.testing.assert_close(scaled["target.decode.loss_ce"], losses["target.decode.loss_ce"])
    torch.testing.assert_close(scaled["aug.decode.acc_seg"], losses["aug.decode.acc_seg"])  # metrics unscaled
    assert model.aug_step == 6
    model.alpha = 0.0
    assert not any(k.startswith("aug.") for k in model(**batch, mode="loss"))
    # all parameters exist at build time and receive gradients from the joint loss
    model.alpha = 1.0
    model.zero_grad()
    sum(v for k, v in model(**batch, mode="loss").items() if "loss" in k).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_sampling_depends_only_on_seed_and_step(ext, data_root):
    from shiftaddaug_plugin.convert import sample_active_widths

    model = _build(data_root)
    a = sample_active_widths(model, model.sampling_rng(7))
    b = sample_active_widths(model, model.sampling_rng(7))
    assert a == b
    assert any(sample_active_widths(model, model.sampling_rng(s)) != a for s in range(8, 20))


def test_export_reproduces_target_logits(ext, data_root):
    torch.manual_seed(0)
    model = _build(data_root).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        target = model(x, mode="tensor")
    ckpt = ext.exported_checkpoint(model, iteration=3)
    from mmengine.config import Config

    deploy = ext.build_deploy_model(Config(dict(model=_small_cfg(data_root, "/tmp/unused").model)), ckpt)
    from shiftaddaug_plugin.layers.hybrid import HybridConv2d

    assert not any(isinstance(m, HybridConv2d) for m in deploy.modules())
    with torch.no_grad():
        assert torch.equal(deploy(x, mode="tensor"), target)


def test_sort_keeps_target_and_permutes_optimizer_state(ext, data_root):
    from shiftaddaug_plugin.convert import set_max_widths, sort_channels

    torch.manual_seed(0)
    model = _build(data_root)
    batch = _batch(model, data_root)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    sum(v for k, v in model(**batch, mode="loss").items() if "loss" in k).backward()
    opt.step()
    model.eval()
    set_max_widths(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before_t = model(x, mode="tensor")
        before_a = model.parts()(x)[0]
    params_before = {id(p) for p in model.parameters()}
    moms = {n: opt.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters() if p in opt.state}
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    changed = sort_channels(model, optimizer=opt, scope="augmented")
    assert changed, "random weights must leave some mid group unsorted"
    assert {id(p) for p in model.parameters()} == params_before  # same Parameter objects (optimizer / DDP refs)
    with torch.no_grad():
        assert torch.equal(model(x, mode="tensor"), before_t)  # target slice untouched
        # widest net: same function up to summation order (which can flip a fixed-point floor of a shift input)
        torch.testing.assert_close(model.parts()(x)[0], before_a, rtol=1e-3, atol=2e-3)
    moved = 0
    for n, p in model.named_parameters():  # each momentum entry moved together with its weight entry
        if n not in moms or torch.equal(p.detach(), weights[n]):
            continue
        moved += 1
        before = torch.stack([weights[n].flatten(), moms[n].flatten()], 1).tolist()
        after = torch.stack([p.detach().flatten(), opt.state[p]["momentum_buffer"].flatten()], 1).tolist()
        assert sorted(map(tuple, before)) == sorted(map(tuple, after)), n
    assert moved > 0


def test_hook_block_variant_schedule(ext, data_root):
    """``block_variant_end=0.5`` of 8 iterations: target layers turn MF shallow -> deep over iterations 0..4 (exact
    layer sets; docs/algorithms.md §6), all MF from iteration 4 on; recomputed from the iteration alone (resume)."""
    from types import SimpleNamespace

    from shiftaddaug_plugin.layers import HybridConv2d, HybridLinear

    model = _build(data_root)
    order = [n for n, m in model.named_modules() if isinstance(m, (HybridConv2d, HybridLinear)) and m.op != "mult"]
    kept = [n for n, m in model.named_modules() if isinstance(m, (HybridConv2d, HybridLinear)) and m.op == "mult"]
    n = len(order)
    assert n >= 4 and order[0].startswith("backbone.") and order[-1].startswith("decode_head.")
    hook = ext.ShiftAddAugHook(sort_interval=None, block_variant_end=0.5)
    runner = SimpleNamespace(model=model, max_iters=8)
    for it, count in ((0, 0), (1, n // 4), (2, n // 2), (3, 3 * n // 4), (4, n), (7, n), (2, n // 2)):
        hook._apply_schedule(runner, it)
        assert [name for name in order if model.get_submodule(name).mf_enabled] == order[:count], it
        assert all(model.get_submodule(name).mf_enabled for name in kept)  # kept multiplicative: never switched
    with pytest.raises(ValueError, match="block_variant_end"):  # nothing to switch: a config error, not a no-op
        hook._apply_schedule(SimpleNamespace(model=_build(data_root, convert_cfg=dict(op="mult")), max_iters=8), 0)


def test_segmentor_argument_errors(ext, data_root):
    with pytest.raises(ValueError, match="alpha"):
        _build(data_root, alpha=-1.0)
    with pytest.raises(ValueError, match="example_input_shape"):
        _build(data_root, example_input_shape=(3, 64, 64))
    with pytest.raises(ValueError, match="op"):
        _build(data_root, convert_cfg=dict(op="nope"))


# ================================================================================================== hook
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(width_aug_end=1.5), ValueError, "width_aug_end"),
    (dict(width_aug_end="half"), ValueError, "width_aug_end"),
    (dict(sort_interval=0), ValueError, "sort_interval"),
    (dict(sort_interval=2.5), ValueError, "sort_interval"),
    (dict(sort_scope="target"), ValueError, "sort scope"),
    (dict(sort_remap="no"), TypeError, "sort_remap"),
    (dict(block_variant_end=0.0), ValueError, "block_variant_end"),
    (dict(block_variant_end=-0.1), ValueError, "block_variant_end"),
    (dict(recalib_images=0), ValueError, "recalib_images"),
    (dict(recalib_batch_size=0), ValueError, "recalib_batch_size"),
    (dict(recalib_seed=-1), ValueError, "recalib_seed"),
    (dict(export="yes"), TypeError, "export"),
    (dict(export_suffix="_mf.pt"), ValueError, "export_suffix"),
])
def test_hook_argument_errors(ext, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ext.ShiftAddAugHook(**kwargs)


def test_hook_is_registered(ext):
    from mmengine.registry import HOOKS

    hook = HOOKS.build(dict(type="ShiftAddAugHook", sort_interval=None))
    assert isinstance(hook, ext.ShiftAddAugHook) and hook.priority == "LOWEST"


# ======================================================================================== runner end-to-end
def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_runner_train_sort_val_checkpoint_resume_export(ext, data_root, tmp_path):
    """train -> sort -> validate (target, recalibrated BN) -> checkpoint + export -> resume; the exported model's
    mIoU equals the last validation's, and the resumed run ends in the uninterrupted run's state."""
    from mmengine.runner import Runner

    # uninterrupted 4 iterations (checkpoints, exports and validations at 2 and 4)
    cfg = _small_cfg(data_root, str(tmp_path / "full"))
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, ext.ShiftAddAugHook))
    assert hook.num_sorts == 1 and hook.last_sort_iter == 1  # width aug stops at iter 2: sorts only at iter 1
    full_state = _state(runner.model)
    exported = [osp.join(cfg.work_dir, f"iter_{i}_mf_target.pth") for i in (2, 4)]
    assert hook.exported_paths == exported and all(osp.isfile(p) for p in exported)
    val_metrics = runner.val()  # recalibrates again (deterministic) and validates the target
    ckpt = ext.load_exported(exported[-1])  # weights_only=True loadable

    # the exported MF target, evaluated by a plain Runner with model.deploy=True, scores the same mIoU
    dcfg = _small_cfg(data_root, str(tmp_path / "deploy"))
    dcfg.model.deploy = True
    dcfg.load_from = exported[-1]
    deploy_runner = Runner.from_cfg(dcfg)
    test_metrics = deploy_runner.test()
    assert test_metrics["mIoU"] == val_metrics["mIoU"]
    assert ckpt["meta"]["shiftaddaug"]["iter"] == 4
    # training checkpoints load with weights_only=True too (torch >= 2.6 default; mmengine --resume)
    torch.load(osp.join(cfg.work_dir, "iter_4.pth"), map_location="cpu", weights_only=True)

    # interrupted at 2, resumed from the checkpoint: same final state as the uninterrupted run
    cfg_a = _small_cfg(data_root, str(tmp_path / "resumed"))
    cfg_a.train_cfg.max_iters = 2  # stop at 2; keep the 4-iteration schedule otherwise
    cfg_a.train_cfg.val_interval = 2
    cfg_a.param_scheduler = copy.deepcopy(cfg.param_scheduler)
    # the width switch is a fraction of max_iters: pin it to the full run's iteration 2
    cfg_a.custom_hooks[0]["width_aug_end"] = 1.0
    Runner.from_cfg(cfg_a).train()
    cfg_b = _small_cfg(data_root, str(tmp_path / "resumed"))
    cfg_b.resume = True
    cfg_b.load_from = osp.join(cfg_b.work_dir, "iter_2.pth")
    runner_b = Runner.from_cfg(cfg_b)
    runner_b.train()
    hook_b = next(h for h in runner_b.hooks if isinstance(h, ext.ShiftAddAugHook))
    assert hook_b.num_sorts == 1 and hook_b.last_sort_iter == 1  # restored from the checkpoint, no re-sort
    resumed_state = _state(runner_b.model)
    assert resumed_state.keys() == full_state.keys()
    for key in full_state:
        torch.testing.assert_close(resumed_state[key], full_state[key], rtol=0, atol=0, msg=key)
