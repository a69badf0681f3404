# DeepLabV3+ head (depthwise-separable ASPP + low-level c1 branch) on the tiny MobileNetV2, offline scenes.
_base_ = ['./shiftaddaug_mobilenet-v2-tiny_fcn_1xb16-400it_fmnist-scenes-64x64.py']
model = dict(
    decode_head=dict(
        _delete_=True,
        type='DepthwiseSeparableASPPHead',
        in_channels=112,
        in_index=3,
        channels=32,
        dilations=(1, 2, 3, 4),
        c1_in_channels=8,
        c1_channels=8,
        dropout_ratio=0.1,
        num_classes={{_base_.num_classes}},
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
