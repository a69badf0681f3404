# Nuclei segmentation (docs/segmentation.md): background / nucleus tiles of the annotated fluorescence image and
# instance mask shipped inside the stardist wheel (installed with --no-deps, read with tifffile). 64 x 64 tiles;
# train / val / test are disjoint column regions with 16 px gaps. Prepared once into `data_root` (atomic, cached).
dataset_type = 'NucleiDataset'
data_root = 'data/nuclei'
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, split='train', data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, split='val', data_root=data_root, pipeline=test_pipeline))
# settings are chosen on 'val' (carved from the training range); 'test' only reports them (tools/test_mmseg.py)
test_dataloader = dict(val_dataloader, dataset=dict(val_dataloader['dataset'], split='test'))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
