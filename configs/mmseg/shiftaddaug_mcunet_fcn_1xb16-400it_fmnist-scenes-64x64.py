# timm backbone path: mmseg's TIMMBackbone building our registered `shiftadd_mcunet` (docs/algorithms.md §9) as a
# features_only network (output stride 8), converted to a ShiftAddAug hybrid network with the FCN head.
_base_ = ['./shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='TIMMBackbone',
        model_name='shiftadd_mcunet',
        features_only=True,
        pretrained=False,
        output_stride=8,
        out_indices=(1, 2, 3, 4)),
    decode_head=dict(in_channels=160, in_index=3),
    convert_cfg=dict(aug_width_mult_list=[1.0, 1.6, 2.2], aug_expand_list=[1.0, 1.6, 2.2, 2.8]))
