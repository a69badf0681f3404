# ShiftAddAug on real offline data (docs/segmentation.md): a tiny MobileNetV2 + FCN whose target network is
# multiplication-free (shift), brain MRI tissue (background / grey matter / white matter), 96 x 80 px slices.
#   python tools/train_mmseg.py configs/mmseg/shiftaddaug_mobilenet-v2-tiny_fcn_1xb8-2000it_brain-mri-tissue-96x80.py \
#       --work-dir work_dirs/brain
# Switch the target operator with --cfg-options model.convert_cfg.op=adder (or mult for the reference).
_base_ = [
    './_base_/models/shiftaddaug_mobilenet-v2-tiny_fcn.py',
    './_base_/datasets/brain_mri_tissue.py',
    './_base_/schedules/shiftaddaug_tiny_sgd_cosine.py',
    './_base_/shiftaddaug_default_runtime.py',
]
num_classes = 3
max_iters = 2000
randomness = dict(seed=0)
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], size=(96, 80))
# output stride 4 (the stem and one stage stride 2): grey matter is a ribbon of 1-3 px at 2 mm, an output stride
# of 8 loses it (measured on the val slices, 500 iterations, Mult: 69.3 mIoU at stride 8, 74.6 at stride 4)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(strides=(1, 1, 2, 1, 1, 1, 1)),
    decode_head=dict(num_classes=num_classes),
    example_input_shape=(2, 3, 96, 80))
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
