# ShiftAddAug on real offline data (docs/segmentation.md): a tiny MobileNetV2 + FCN whose target network is
# multiplication-free (shift), nuclei (background / nucleus), 64 x 64 px fluorescence tiles.
#   python tools/train_mmseg.py configs/mmseg/shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-1000it_nuclei-64x64.py \
#       --work-dir work_dirs/nuclei
# Switch the target operator with --cfg-options model.convert_cfg.op=adder (or mult for the reference).
_base_ = [
    './_base_/models/shiftaddaug_mobilenet-v2-tiny_fcn.py',
    './_base_/datasets/nuclei.py',
    './_base_/schedules/shiftaddaug_tiny_sgd_cosine.py',
    './_base_/shiftaddaug_default_runtime.py',
]
num_classes = 2
max_iters = 1000
randomness = dict(seed=0)
data_preprocessor = dict(mean=[40.0, 40.0, 40.0], std=[50.0, 50.0, 50.0], size=(64, 64))
# nuclei are blobs of ~10-20 px: the stock output stride 8 of the base model
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=num_classes),
    example_input_shape=(2, 3, 64, 64))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-4, by_epoch=False, begin=20, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=500)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=500))
custom_hooks = [
    dict(type='ShiftAddAugHook', width_aug_end=0.5, sort_interval=100, block_variant_end=None,
         recalib_images=100, recalib_seed=0, export=True)
]
