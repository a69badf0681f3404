# Baseline: the SAME multiplication-free target network trained directly (no augmented network, alpha=0),
# same data, schedule and BN recalibration, for comparison with the ShiftAddAug-trained one.
_base_ = ['./shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py']
model = dict(alpha=0.0, convert_cfg=dict(aug_width_mult_list=[1.0], aug_expand_list=[1.0]))
custom_hooks = [
    dict(type='ShiftAddAugHook', width_aug_end=0.0, sort_interval=None, block_variant_end=None,
         recalib_images=256, recalib_seed=0, export=True)
]
