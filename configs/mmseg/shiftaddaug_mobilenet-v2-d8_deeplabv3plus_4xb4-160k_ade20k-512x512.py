# ShiftAddAug variant of mmseg's `mobilenet_v2/mobilenet-v2-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py` (for users with the dataset under data/):
# the target network is multiplication-free (shift); trained as a sub-model of a wider hybrid network.
_base_ = [
    'mmseg::mobilenet_v2/mobilenet-v2-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py',
    './_base_/shiftaddaug_plugin.py',
]
model = dict(
    type='ShiftAddAugEncoderDecoder',
    convert_cfg=dict(op='shift', aug_width_mult_list=[1.0, 1.6, 2.2], aug_expand_list=[1.0, 1.6, 2.2, 2.8], keep_first_conv_mult=True),
    alpha=1.0,
    example_input_shape=(2, 3, 64, 64))
# The converter turns every BatchNorm into a hybrid (per-process, non-synchronised) BatchNorm, so the target
# network's norm is plain BN; declare it as such (mmengine's SyncBN wrapper class is not a converter input).
norm_cfg = dict(type='BN', requires_grad=True)
model.update(
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
# Divergence guard (README "What happens when things go wrong"): a NaN/inf loss skips its step; more than
# max_nonfinite_steps of them stop training before the bad update. The other optim_wrapper keys come from the base.
optim_wrapper = dict(type='NonFiniteGuardOptimWrapper', max_nonfinite_steps=0)
