# UperNet + FCN auxiliary head on a tiny exported ViT, on CPU, tens of iterations.
# For the tests and the quickstart. Industrial data layout (2-channel 16-bit by default):
#   {data_root}/{train_split}/images/*.tif, masks/*.png, classes.yaml, stats.json (optional)
#   {data_root}/{val_split}/...
# Every top-level setting below can be overridden with --cfg-options NAME=VALUE; the values
# derived from it follow (segmentation.config_loader re-evaluates this file with the override).
# Normalisation: {train dir}/stats.json, else the export's pretraining mean/std.
import importlib

# ---- settings --------------------------------------------------------------------------------
data_root = 'data/synthetic_seg'
train_split = 'train'
val_split = 'val'
pretrained_export = None  # export folder (config.json + model.safetensors); None: random init
scratch_arch = 'vit_tiny_patch16_224'  # used only when pretrained_export is None
in_chans = 2
scratch_args = dict(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=4, in_chans=in_chans)
crop_size = (64, 64)
slide_stride = (crop_size[0] * 2 // 3, crop_size[1] * 2 // 3)
max_iters = 40
val_interval = 20
warmup_iters = 5
batch_size = 4
lr = 1e-3
layer_decay = 0.75
head_channels = 64
seed = 0
background_weight = 0.2  # cross-entropy weight of class 0: thin structures cover a few % of pixels

# ---- derived from the data and the encoder ------------------------------------------------------
_settings = importlib.import_module('segmentation.settings')
train_dir = f'{data_root}/{train_split}'
val_dir = f'{data_root}/{val_split}'
classes = _settings.class_names(train_dir)
num_classes = len(classes)
class_weight = [background_weight] + [1.0] * (num_classes - 1)
mean = _settings.norm_stats(train_dir, pretrained_export)['mean']  # raw pixel units
std = _settings.norm_stats(train_dir, pretrained_export)['std']
encoder = _settings.encoder_shape(pretrained_export, scratch_arch, scratch_args)
embed_dim = encoder['embed_dim']
out_indices = tuple(range(encoder['depth'] - 4, encoder['depth']))  # last four blocks

custom_imports = dict(imports=['segmentation.plugin'], allow_failed_imports=False)
default_scope = 'mmseg'
norm_cfg = dict(type='BN', requires_grad=True)

# ---- model -------------------------------------------------------------------------------------
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=mean, std=std,
                           bgr_to_rgb=False, pad_val=0, seg_pad_val=255, size=crop_size),
    backbone=dict(
        type='TimmMAEViT',
        export_dir=pretrained_export,
        arch=None if pretrained_export else scratch_arch,
        model_args=None if pretrained_export else scratch_args,
        img_size=crop_size,
        out_indices=out_indices,
        in_channels=in_chans,
        drop_path_rate=0.0),
    neck=dict(type='Feature2Pyramid', embed_dim=embed_dim, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    decode_head=dict(
        type='UPerHead', in_channels=[embed_dim] * 4, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
        channels=head_channels, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg,
        align_corners=False, loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, class_weight=class_weight)),
    auxiliary_head=dict(
        type='FCNHead', in_channels=embed_dim, in_index=2, channels=head_channels // 2, num_convs=1,
        concat_input=False, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg,
        align_corners=False, loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4, class_weight=class_weight)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=slide_stride))

# ---- data --------------------------------------------------------------------------------------
train_pipeline = [
    dict(type='LoadImageChannels', channels=in_chans),
    dict(type='LoadIndexMask'),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageChannels', channels=in_chans),
    dict(type='LoadIndexMask'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=batch_size, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='IndustrialSegDataset', data_root=train_dir, classes=classes, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='IndustrialSegDataset', data_root=val_dir, classes=classes, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ---- schedule ----------------------------------------------------------------------------------
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=encoder['depth'], decay_rate=layer_decay, decay_type='layer_wise'))
warmup_end = max(0, min(warmup_iters, max_iters - 1))  # very short runs shorten the warm-up
param_scheduler = [
    *([dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_end)] if warmup_end else []),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=warmup_end, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# ---- runtime -----------------------------------------------------------------------------------
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=val_interval, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='SegMetricsJsonHook'), dict(type='SegPreviewHook', num_images=4)]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=seed)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)  # named after the run
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
