# A tiny MobileNetV2 (w0.35, dilated d8) + FCN head trained as the target of a ShiftAddAug hybrid network.
# Sized for 64x64 offline scenes on CPU; the same model definition scales to real data.
norm_cfg = dict(type='BN', requires_grad=True)
num_classes = 11
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(64, 64))
model = dict(
    type='ShiftAddAugEncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='MobileNetV2',
        widen_factor=0.35,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(1, 2, 4, 6),
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='FCNHead',
        in_channels=112,
        in_index=3,
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
    # ShiftAddAug (arXiv 2407.02881): target channels shift (DeepShift-Q), augmented channels multiplicative
    convert_cfg=dict(op='shift', aug_width_mult_list=[1.0, 1.6, 2.2], aug_expand_list=[1.0, 1.6, 2.2, 2.8],
                     keep_first_conv_mult=True),
    alpha=1.0,
    example_input_shape=(2, 3, 64, 64),
    sample_seed=0)
