# UperNet + FCN auxiliary head on a tiny ViT, on CPU, tens of iterations (tests, quickstart, tour).
# Data: `mae-dbp data synthetic --out {data_root}/train ...` and `.../val` (2-channel 16-bit,
# classes background/wire/ball/wedge/epoxy). Encoder: pretrained_export=DIR (an `mae-dbp export`
# folder) or, when None, the random-init ViT below. Override with --cfg-options, e.g.
#   data_root=data/seg pretrained_export=exports/tiny_dbp train_cfg.max_iters=100
_base_ = [
    './_base_/models/upernet_timm_vit.py', './_base_/datasets/industrial.py',
    './_base_/schedules/adamw_layer_decay_poly.py', './_base_/default_runtime.py'
]
data_root = 'data/synthetic_seg'
pretrained_export = None
crop_size = (64, 64)
model = dict(
    # pad to a multiple of the patch, not to the crop: images smaller than the crop get no ignored border
    data_preprocessor=dict(size=None, size_divisor=8),
    backbone=dict(
        arch='vit_tiny_patch16_224',
        model_args=dict(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=4, in_chans=2),
        img_size=crop_size,
        in_channels=2,
        drop_path_rate=0.0),
    # class 0 (background) weighs 0.2: thin structures cover a few % of the pixels; the plugin's
    # WeightedCrossEntropyLoss (mmseg's CrossEntropyLoss fails with class_weight on ignored pixels)
    decode_head=dict(
        channels=64,
        loss_decode=dict(_delete_=True, type='WeightedCrossEntropyLoss', class_weight=[0.2, 1.0, 1.0, 1.0, 1.0])),
    auxiliary_head=dict(
        channels=32,
        loss_decode=dict(_delete_=True, type='WeightedCrossEntropyLoss', class_weight=[0.2, 1.0, 1.0, 1.0, 1.0],
                         loss_weight=0.4)),
    test_cfg=dict(crop_size=crop_size, stride=(42, 42)))
train_pipeline = [
    dict(type='LoadImageChannels', channels=2),
    dict(type='LoadIndexMask'),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-3), paramwise_cfg=dict(decay_rate=0.75))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=5),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=5, end=None),
]
train_cfg = dict(max_iters=40, val_interval=20)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=20, save_best=None))
custom_hooks = [dict(type='SegMetricsJsonHook'), dict(type='SegPreviewHook', num_images=4)]
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
