# Embedded OFFLINE default: ShiftAddAug training of a tiny MobileNetV2 + FCN whose target network is
# multiplication-free (shift), on 64x64 Fashion-MNIST scenes (11 classes). A few minutes on 2 CPU cores.
#   python .venv/lib/python3.11/site-packages/mmseg/.mim/tools/train.py \
#       configs/mmseg/shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py --work-dir work_dirs/x
_base_ = [
    './_base_/models/shiftaddaug_mobilenet-v2-tiny_fcn.py',
    './_base_/datasets/fmnist_scenes.py',
    './_base_/schedules/shiftaddaug_tiny_sgd_cosine.py',
    './_base_/shiftaddaug_default_runtime.py',
]
max_iters = 400
randomness = dict(seed=0)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-4, by_epoch=False, begin=20, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=200)
custom_hooks = [
    dict(type='ShiftAddAugHook', width_aug_end=0.5, sort_interval=50, block_variant_end=None,
         recalib_images=256, recalib_seed=0, export=True)
]
