# Loads the ShiftAddAug plugin and its schedule hook. Add this base next to a complete mmseg config
# ('mmseg::...' already holding a runtime); configs without a runtime use ./shiftaddaug_default_runtime.py.

# registers ShiftAddAugEncoderDecoder, ShiftAddAugHook, FashionMNISTScenesDataset, the MF conv ops
# (conv_cfg=dict(type='ShiftConv2d'|'AdderConv2d')) and the shiftadd_* timm models (TIMMBackbone)
custom_imports = dict(imports=['shiftaddaug_plugin.mmseg_ext'], allow_failed_imports=False)

# Iteration-based ShiftAddAug schedule (fractions of train_cfg.max_iters, docs/algorithms.md §4-§6):
#  width augmentation for the first half, channel sorting every `sort_interval` iterations while it is on,
#  BN recalibration on `recalib_images` training images before validation/test/export,
#  the MF target exported next to every checkpoint (iter_N_mf_target.pth).
custom_hooks = [
    dict(type='ShiftAddAugHook', width_aug_end=0.5, sort_interval=1000, block_variant_end=None,
         recalib_images=2000, recalib_seed=0, export=True)
]
