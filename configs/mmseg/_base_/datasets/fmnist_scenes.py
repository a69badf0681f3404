# Offline segmentation data (docs/ARCHITECTURE.md): scenes of Fashion-MNIST items pasted on a smooth random background with
# exact masks; 11 classes (background + 10). Generated deterministically into `data_root` on first use from the
# Debian idx files (/usr/share/datasets/fashion-mnist or $SHIFTADDAUG_FMNIST_DIR). Nothing is downloaded.
dataset_type = 'FashionMNISTScenesDataset'
data_root = 'data/fmnist_scenes'
image_size = 64
scene_cfg = dict(image_size=image_size, max_objects=4, scale_range=(1.0, 1.6), seed=0, data_root=data_root)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
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
    dataset=dict(type=dataset_type, split='train', num_images=2000, pipeline=train_pipeline, **scene_cfg))
val_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, split='val', num_images=300, pipeline=test_pipeline, **scene_cfg))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
