"""Real offline segmentation data (docs/segmentation.md): brain MRI tissue (MNI152 template from the nilearn wheel)
and nuclei (stardist wheel). Data preparation, split disjointness, the atomic cache and its errors, and a
few-iteration Runner run per dataset whose exported MF target scores the last validation's mIoU."""
from __future__ import annotations

import importlib.util
import os
import os.path as osp
import sys

import numpy as np
import pytest

from shiftaddaug_plugin.data import brain_mri, nuclei
from shiftaddaug_plugin.data.package_files import MissingDataPackageError, package_file
from shiftaddaug_plugin.data.seg_cache import CorruptCacheError, check_cache, prepare_cached, write_split

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(ROOT, "configs", "mmseg")
BRAIN_CONFIG = osp.join(CONFIG_DIR, "shiftaddaug_mobilenet-v2-tiny_fcn_1xb8-2000it_brain-mri-tissue-96x80.py")
NUCLEI_CONFIG = osp.join(CONFIG_DIR, "shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-1000it_nuclei-64x64.py")


# ============================================================================================ data preparation
def test_brain_splits_are_disjoint_with_gaps():
    slices = {k: [z for lo, hi in r for z in range(lo, hi)] for k, r in brain_mri.BRAIN_SPLITS.items()}
    assert (len(slices["train"]), len(slices["val"]), len(slices["test"])) == (84, 12, 12)
    train = np.array(slices["train"])
    for split in ("val", "test"):
        for z in slices[split]:  # no train slice within 3 slices (near-identical neighbours)
            assert np.abs(train - z).min() >= 3, (split, z)
    assert not set(slices["val"]) & set(slices["test"])


def test_brain_labels_are_argmax_of_tissue_maps():
    """One slice against an independent float64 computation straight from the volumes (naive loops)."""
    t1, probs = brain_mri.load_brain_volumes()
    assert probs.shape == (3, *t1.shape) and np.all(probs >= 0)
    image, label = next(brain_mri.brain_samples("test"))
    z = brain_mri.BRAIN_SPLITS["test"][0][0]
    x0, y0 = brain_mri._CROP_X[0], brain_mri._CROP_Y[0]
    rows, cols = label.shape
    assert (rows, cols) == (96, 80) and image.shape == label.shape
    for r in range(0, rows, 7):
        for c in range(0, cols, 5):
            y = y0 + 2 * (rows - 1 - r)  # rows run anterior -> posterior
            x = x0 + 2 * c
            block = probs[:, x:x + 2, y:y + 2, z].reshape(3, -1).mean(axis=1)
            assert label[r, c] == int(np.argmax(block)), (r, c)
            assert image[r, c] == int(np.clip(np.rint(t1[x:x + 2, y:y + 2, z].mean() * 255), 0, 255))
    assert set(np.unique(label)) == {0, 1, 2}


def test_nuclei_regions_are_disjoint_and_tiles_match_the_image():
    image, mask = nuclei.load_nuclei_image()
    assert image.shape == mask.shape == (512, 512) and set(np.unique(mask)) == {0, 1}
    (a0, a1), (b0, b1), (c0, c1) = (nuclei.NUCLEI_SPLITS[k] for k in ("train", "val", "test"))
    assert a1 + 16 <= b0 and b1 + 16 <= c0
    tiles = list(nuclei.nuclei_samples("test"))
    assert len(tiles) == 24
    np.testing.assert_array_equal(tiles[1][0], image[0:64, c0 + 64:c0 + 128])
    np.testing.assert_array_equal(tiles[1][1], mask[0:64, c0 + 64:c0 + 128])
    assert len(list(nuclei.nuclei_samples("train"))) == 29 * 11


def test_bad_split_and_parameters_are_refused():
    with pytest.raises(ValueError, match="split='eval'"):
        next(brain_mri.brain_samples("eval"))
    with pytest.raises(ValueError, match="step=0"):
        next(brain_mri.brain_samples("train", step=0))
    with pytest.raises(ValueError, match="tile=8"):
        next(nuclei.nuclei_samples("val", tile=8))


def test_missing_data_package_names_the_install_command():
    with pytest.raises(MissingDataPackageError, match="pip install --no-deps nothere"):
        package_file("shiftaddaug_no_such_package", "x.tif", "pip install --no-deps nothere")
    with pytest.raises(MissingDataPackageError, match="has no 'data/none.tif'"):
        package_file("stardist", "data/none.tif", "pip install --no-deps stardist")


# ============================================================================================ atomic cache
def _samples(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise KeyboardInterrupt  # a killed preparation
        yield np.full((4, 5), i, np.uint8), (np.arange(20, dtype=np.uint8).reshape(4, 5) % 2)


def test_cache_roundtrip_and_killed_preparation_leaves_nothing(tmp_path):
    from PIL import Image

    folder = str(tmp_path / "split")
    with pytest.raises(KeyboardInterrupt):
        write_split(folder, _samples(3, fail_at=2), {"name": "t"}, num_classes=2)
    assert os.listdir(tmp_path) == []  # no half-written folder, no temporary left
    meta = prepare_cached(folder, lambda: _samples(3), {"name": "t"}, num_classes=2)
    assert meta["num_images"] == 3 and meta["pixel_counts"] == [30, 30]
    np.testing.assert_array_equal(np.asarray(Image.open(osp.join(folder, "img", "000002.png")))[..., 0], 2)
    # reused as is: make_samples is not called again
    assert prepare_cached(folder, lambda: _samples(0, fail_at=0), {"name": "t"}, num_classes=2) == meta


def test_corrupted_cache_names_the_folder_to_delete(tmp_path):
    folder = str(tmp_path / "split")
    write_split(folder, _samples(2), {}, num_classes=2)
    os.remove(osp.join(folder, "ann", "000001.png"))
    with pytest.raises(CorruptCacheError, match=r"missing \['000001.png'\].*rm -r"):
        check_cache(folder)
    os.remove(osp.join(folder, "meta.json"))
    with pytest.raises(CorruptCacheError, match="no meta.json"):
        check_cache(folder)
    with open(osp.join(folder, "meta.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(CorruptCacheError, match="unreadable"):
        check_cache(folder)


def test_concurrent_preparation_keeps_the_first_complete_split(tmp_path):
    """Another process finishes the same split while this one is writing: both end with one valid split."""
    folder = str(tmp_path / "split")

    def racing():
        for i, sample in enumerate(_samples(3)):
            if i == 1:  # the other writer completes first
                write_split(folder, _samples(2), {"writer": "other"}, num_classes=2)
            yield sample

    meta = write_split(folder, racing(), {"writer": "this"}, num_classes=2)
    assert meta["writer"] == "other" and meta["num_images"] == 2 == check_cache(folder)["num_images"]
    assert sorted(os.listdir(tmp_path)) == ["split"]  # this writer's temporary copy is gone


def test_bad_samples_are_refused(tmp_path):
    bad = [(np.zeros((4, 4), np.uint8), np.full((4, 4), 3, np.uint8))]
    with pytest.raises(ValueError, match="label value 3 >= num_classes=2"):
        write_split(str(tmp_path / "s"), bad, {}, num_classes=2)
    assert os.listdir(tmp_path) == []


# ============================================================================================ mmseg
mmseg_only = pytest.mark.mmseg


@pytest.fixture(scope="module")
def ext():
    pytest.importorskip("mmcv.ops")
    from mmengine.registry import init_default_scope

    import shiftaddaug_plugin.mmseg_ext as ext

    init_default_scope("mmseg")
    return ext


def _tiny_cfg(config: str, data_root: str, work_dir: str, max_iters: int = 4):
    """The shipped config shrunk to a few CPU-seconds (first train images, batch 2, no dropout, no workers)."""
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    for split in ("train", "val", "test"):
        loader = cfg[f"{split}_dataloader"]
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=data_root, indices=6 if split == "train" else 4)
    cfg.model.decode_head.dropout_ratio = 0.0
    cfg.model.convert_cfg.update(aug_width_mult_list=[1.0, 1.6], aug_expand_list=[1.0, 1.6])
    cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler = [dict(type="CosineAnnealingLR", eta_min=1e-4, by_epoch=False, begin=0, end=max_iters)]
    cfg.default_hooks.checkpoint.update(interval=max_iters)
    cfg.default_hooks.pop("visualization")
    cfg.custom_hooks = [dict(type="ShiftAddAugHook", width_aug_end=0.5, sort_interval=1, recalib_images=4,
                             recalib_batch_size=2, recalib_seed=0)]
    cfg.log_level = "WARNING"
    return cfg


@mmseg_only
@pytest.mark.parametrize("dataset, n_classes", [("BrainMRITissueDataset", 3), ("NucleiDataset", 2)])
def test_dataset_reads_prepared_files(ext, tmp_path, dataset, n_classes):
    from mmseg.registry import DATASETS

    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    ds = DATASETS.build(dict(type=dataset, split="val", data_root=str(tmp_path), pipeline=pipeline))
    assert len(ds) == (12 if n_classes == 3 else 8) and len(ds.metainfo["classes"]) == n_classes
    sample = ds[0]
    gen = brain_mri.brain_samples("val") if n_classes == 3 else nuclei.nuclei_samples("val")
    image, label = next(iter(gen))
    np.testing.assert_array_equal(sample["data_samples"].gt_sem_seg.data[0].numpy(), label)
    np.testing.assert_array_equal(sample["inputs"][0].numpy(), image)  # grey stored as RGB (BGR identical)
    with pytest.raises(ValueError, match="fixed by"):
        DATASETS.build(dict(type=dataset, data_root=str(tmp_path), reduce_zero_label=True))
    with pytest.raises(ValueError, match="split='eval'"):
        DATASETS.build(dict(type=dataset, split="eval", data_root=str(tmp_path)))


@mmseg_only
def test_corrupted_cache_error_through_mmseg(ext, tmp_path):
    from mmseg.registry import DATASETS

    DATASETS.build(dict(type="NucleiDataset", split="val", data_root=str(tmp_path)))
    folder = next(p for p in tmp_path.iterdir() if p.name.startswith("val-"))
    os.remove(folder / "img" / "000000.png")
    with pytest.raises(CorruptCacheError, match=f"rm -r '{folder}'"):
        DATASETS.build(dict(type="NucleiDataset", split="val", data_root=str(tmp_path)))


@mmseg_only
@pytest.mark.slow
@pytest.mark.parametrize("config", [BRAIN_CONFIG, NUCLEI_CONFIG], ids=["brain", "nuclei"])
def test_runner_trains_validates_and_exports_the_same_miou(ext, tmp_path, capsys, config):
    from mmengine.runner import Runner

    data_root = str(tmp_path / "data")
    cfg = _tiny_cfg(config, data_root, str(tmp_path / "train"))
    runner = Runner.from_cfg(cfg)
    runner.train()
    exported = osp.join(cfg.work_dir, "iter_4_mf_target.pth")
    assert osp.isfile(exported)
    val_metrics = runner.val()
    dcfg = _tiny_cfg(config, data_root, str(tmp_path / "deploy"))
    dcfg.model.deploy = True
    dcfg.load_from = exported
    dcfg.test_dataloader = dcfg.val_dataloader
    test_metrics = Runner.from_cfg(dcfg).test()
    assert 0.0 < val_metrics["mIoU"] <= 100.0
    assert test_metrics["mIoU"] == val_metrics["mIoU"]
    # tools/seg_pictures.py on the same 4 val images: the same exported model, the same mIoU as IoUMetric's
    spec = importlib.util.spec_from_file_location("seg_pictures_under_test", osp.join(ROOT, "tools", "seg_pictures.py"))
    pictures = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pictures  # its dataclass resolves the module by name
    spec.loader.exec_module(pictures)
    png = tmp_path / "pictures.png"
    options = [f"val_dataloader.dataset.data_root={data_root}", "model.convert_cfg.aug_width_mult_list=[1.0,1.6]",
               "model.convert_cfg.aug_expand_list=[1.0,1.6]"]
    assert pictures.main(["--config", config, "--checkpoint", exported, "--cfg-options", *options, "--split", "val",
                          "--num", "4", "--out", str(png)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.endswith(f"({exported})")]
    assert png.stat().st_size > 1000 and len(printed) == 1
    assert abs(float(printed[0].split(": ")[2].split()[0]) - val_metrics["mIoU"]) <= 0.006
