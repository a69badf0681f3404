# Embedded OFFLINE default: ShiftAddAug training of a tiny MobileNetV2 + FCN whose target network is
# multiplication-free (shift), on 64x64 Fashion-MNIST scenes (11 classes). A few minutes on 2 CPU cores.
#   python .venv/lib/python3.11/site-packages/mmseg/.mim/tools/train.py \
#       configs/mmseg/shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py --work-dir work_dirs/x
_base_ = [
    './_base_/models/shiftaddaug_mobilenet-v2-tiny_fcn.py',
    './_base_/datasets/fmnist_scenes.py',
    './_base_/shiftaddaug_default_runtime.py',
]
max_iters = 400
randomness = dict(seed=0)
# tiny-net recipe (docs/algorithms.md §4): SGD nesterov, cosine with warm-up, no weight decay on norms and biases
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-4, by_epoch=False, begin=20, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=200)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=200),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
custom_hooks = [
    dict(type='ShiftAddAugHook', width_aug_end=0.5, sort_interval=50, block_variant_end=None,
         recalib_images=256, recalib_seed=0, export=True)
]
