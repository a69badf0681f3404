# Brain MRI tissue segmentation (docs/segmentation.md): background / grey matter / white matter on axial slices of
# the MNI152 2009a template and its tissue probability maps, shipped inside the nilearn wheel (read with nibabel).
# 2 mm slices of 96 x 80 px; train / val / test are disjoint slice ranges with gaps. Prepared once into
# `data_root` (atomic, cached); nothing is downloaded. The set-up (`make setup`) installs nilearn and nibabel.
dataset_type = 'BrainMRITissueDataset'
data_root = 'data/brain_mri'
crop_size = (96, 80)  # (h, w)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(80, 96), ratio_range=(0.85, 1.15), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, split='train', data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=6,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, split='val', data_root=data_root, pipeline=test_pipeline))
# settings are chosen on 'val' (carved from the training range); 'test' only reports them (tools/test_mmseg.py)
test_dataloader = dict(val_dataloader, dataset=dict(val_dataloader['dataset'], split='test'))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
