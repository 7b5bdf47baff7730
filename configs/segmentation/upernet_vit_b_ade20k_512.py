# UperNet + FCN auxiliary head on an exported MAE ViT-B/16, ADE20K 512x512 (DBP-MAE fine-tune recipe).
# 125 epochs of the 1,021-image 10% ADE20K subset at batch 16; AdamW lr 2.5e-5, betas (0.9, 0.999),
# wd 0.05; 500-iteration linear warm-up, then polynomial (power 1) decay to 0. No DBP here.
# Data: ADE20K layout, {data_root}/images/{training,validation}/*.jpg and
# {data_root}/annotations/{training,validation}/*.png (the subset builder's symlink mode keeps it).
# Every top-level setting can be overridden with --cfg-options NAME=VALUE (derived values follow).
# batch_size is per process: with N GPUs set batch_size=16//N to keep the total at 16.
import importlib
import math

# ---- settings --------------------------------------------------------------------------------
data_root = 'data/ade20k_10pct'
pretrained_export = 'exports/mae_vit_b16'  # export folder (config.json + model.safetensors); None: random init
scratch_arch = 'vit_base_patch16_224'  # used only when pretrained_export is None
in_chans = 3
scratch_args = dict(img_size=512, in_chans=in_chans)
crop_size = (512, 512)
slide_stride = (341, 341)
num_train_images = 1021
epochs = 125
batch_size = 16
max_iters = math.ceil(epochs * num_train_images / batch_size)  # 7977
warmup_iters = 500
val_interval = 1000
lr = 2.5e-5
layer_decay = 0.65  # the paper does not state it; 0.65 is MAE's ADE20K value, 1.0 disables decay
drop_path_rate = 0.1
num_workers = 4
seed = 0

# ---- derived from the encoder ------------------------------------------------------------------
_settings = importlib.import_module('segmentation.settings')
encoder = _settings.encoder_shape(pretrained_export, scratch_arch, scratch_args)
embed_dim = encoder['embed_dim']
out_indices = (3, 5, 7, 11)
num_classes = 150

custom_imports = dict(imports=['segmentation.plugin'], allow_failed_imports=False)
default_scope = 'mmseg'
norm_cfg = dict(type='SyncBN', requires_grad=True)  # plain BN when not distributed (mmengine reverts it)

# ---- model -------------------------------------------------------------------------------------
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    backbone=dict(
        type='TimmMAEViT',
        export_dir=pretrained_export,
        arch=None if pretrained_export else scratch_arch,
        model_args=None if pretrained_export else scratch_args,
        img_size=crop_size,
        out_indices=out_indices,
        in_channels=in_chans,
        drop_path_rate=drop_path_rate),
    neck=dict(type='Feature2Pyramid', embed_dim=embed_dim, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    decode_head=dict(
        type='UPerHead', in_channels=[embed_dim] * 4, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
        channels=768, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead', in_channels=embed_dim, in_index=2, channels=256, num_convs=1, concat_input=False,
        dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=slide_stride))

# ---- data --------------------------------------------------------------------------------------
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),  # after Resize: evaluate at full resolution
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ADE20KDataset', data_root=data_root,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=num_workers, persistent_workers=num_workers > 0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ADE20KDataset', data_root=data_root,
                 data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ---- schedule ----------------------------------------------------------------------------------
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=encoder['depth'], decay_rate=layer_decay, decay_type='layer_wise'))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# ---- runtime -----------------------------------------------------------------------------------
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=val_interval, max_keep_ckpts=2,
                    save_best='mIoU', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='SegMetricsJsonHook'), dict(type='SegPreviewHook', num_images=8)]
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=seed)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)  # named after the run
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
