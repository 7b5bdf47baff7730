# Industrial folders (any channel count, 8/16-bit tif/png), one folder per split:
#   {data_root}/train/images/<stem>.tif|png, masks/<stem>.png, classes.yaml, stats.json (optional)
#   {data_root}/val/...
# Every dataset's data_root is filled from the top-level data_root at build time (SegRunner), so
# `--cfg-options data_root=DIR` moves all splits. Random 512 x 512 crops at native resolution
# (thin structures: no rescaling), flips; slide inference over the full image.
dataset_type = 'IndustrialSegDataset'
data_root = 'data/wirebond_seg'
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageChannels', channels=2),
    dict(type='LoadIndexMask'),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageChannels', channels=2),
    dict(type='LoadIndexMask'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=None,
        data_prefix=dict(img_path='train/images', seg_map_path='train/masks'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=None,
        data_prefix=dict(img_path='val/images', seg_map_path='val/masks'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
