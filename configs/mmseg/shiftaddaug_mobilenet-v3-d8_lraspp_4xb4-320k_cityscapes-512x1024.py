# ShiftAddAug variant of mmseg's `mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py` (for users with the dataset under data/):
# the target network is multiplication-free (shift); trained as a sub-model of a wider hybrid network.
_base_ = [
    'mmseg::mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py',
    './_base_/shiftaddaug_plugin.py',
]
model = dict(
    type='ShiftAddAugEncoderDecoder',
    convert_cfg=dict(op='shift', aug_width_mult_list=[1.0, 1.6, 2.2], aug_expand_list=[1.0, 1.6, 2.2, 2.8], keep_first_conv_mult=True),
    alpha=1.0,
    # LRASPP's image pool is a 49x49 average pool on the stride-8 features: trace with inputs of >= 392 px
    example_input_shape=(2, 3, 400, 400))
# mmseg's MobileNetV3 uses mmcv's TF-style Conv2dAdaptivePadding for its stride-2 convs: left dense and
# multiplicative (the converter supports exact nn.Conv2d maths only). BN as above: per-process hybrid BN.
norm_cfg = dict(type='BN', eps=0.001, requires_grad=True)
model.update(
    exclude_types=['Conv2dAdaptivePadding'],
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg))
# Divergence guard (README "What happens when things go wrong"): a NaN/inf loss skips its step; more than
# max_nonfinite_steps of them stop training before the bad update. The other optim_wrapper keys come from the base.
optim_wrapper = dict(type='NonFiniteGuardOptimWrapper', max_nonfinite_steps=0)
