# The tiny-net recipe (docs/algorithms.md §4) as an iteration schedule: SGD Nesterov lr 0.05, 20 linear warm-up
# iterations then cosine to 1e-4, no weight decay on norms and biases. A config that inherits it sets its own
# `max_iters` and repeats `param_scheduler` with that end, `train_cfg.max_iters`, and the ShiftAddAugHook.
max_iters = 400
# NonFiniteGuardOptimWrapper: mmengine's OptimWrapper that skips the step of a NaN/inf loss and stops training
# (before the bad update, checkpoints intact) after more than `max_nonfinite_steps` of them.
optim_wrapper = dict(
    type='NonFiniteGuardOptimWrapper',
    max_nonfinite_steps=0,
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
