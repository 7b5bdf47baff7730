# UperNet + FCN auxiliary head on an exported MAE ViT-B/16 (2 input channels), industrial wire-bond data.
# 2-channel 16-bit 2048x2048 images; classes background/wire/ball/wedge/epoxy. Training on random
# 512x512 crops at native resolution (fine wires: no rescaling), horizontal and vertical flips;
# slide inference with 512x512 windows over the full image. Same optimiser and schedule as the
# ADE20K recipe (AdamW 2.5e-5, 500-iteration warm-up, poly decay to 0, batch 16).
# Data: {data_root}/{train_split} and {data_root}/{val_split}, each in the industrial layout
#   images/<stem>.tif|png, masks/<stem>.png, classes.yaml; normalisation from {train}/stats.json
#   (raw units, written by the data tools), else the export's pretraining mean/std.
# Every top-level setting can be overridden with --cfg-options NAME=VALUE (derived values follow).
# batch_size is per process: with N GPUs set batch_size=16//N to keep the total at 16.
import importlib
import math

# ---- settings --------------------------------------------------------------------------------
data_root = 'data/wirebond_seg'
train_split = 'train'
val_split = 'val'
pretrained_export = 'exports/mae_vit_b16_wirebond'  # export folder; None: random init (scratch_*)
scratch_arch = 'vit_base_patch16_224'  # used only when pretrained_export is None
in_chans = 2
scratch_args = dict(img_size=512, in_chans=in_chans)
classes = ('background', 'wire', 'ball', 'wedge', 'epoxy')  # must match {split}/classes.yaml
ignore_index = 255
crop_size = (512, 512)
slide_stride = (341, 341)
num_train_images = 5560
epochs = 125
batch_size = 16
max_iters = math.ceil(epochs * num_train_images / batch_size)
warmup_iters = 500
val_interval = 4000
lr = 2.5e-5
layer_decay = 0.65
drop_path_rate = 0.1
num_workers = 4
seed = 0
background_weight = 0.2  # cross-entropy weight of class 0: thin structures cover a few % of pixels

# ---- derived from the data and the encoder ------------------------------------------------------
_settings = importlib.import_module('segmentation.settings')
train_dir = f'{data_root}/{train_split}'
val_dir = f'{data_root}/{val_split}'
num_classes = len(classes)
class_weight = [background_weight] + [1.0] * (num_classes - 1)
mean = _settings.norm_stats(train_dir, pretrained_export)['mean']  # raw pixel units
std = _settings.norm_stats(train_dir, pretrained_export)['std']
encoder = _settings.encoder_shape(pretrained_export, scratch_arch, scratch_args)
embed_dim = encoder['embed_dim']
out_indices = (3, 5, 7, 11)

custom_imports = dict(imports=['segmentation.plugin'], allow_failed_imports=False)
default_scope = 'mmseg'
norm_cfg = dict(type='SyncBN', requires_grad=True)  # plain BN when not distributed (mmengine reverts it)

# ---- model -------------------------------------------------------------------------------------
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=mean, std=std,
                           bgr_to_rgb=False, pad_val=0, seg_pad_val=ignore_index, size=crop_size),
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
        ignore_index=ignore_index,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, class_weight=class_weight)),
    auxiliary_head=dict(
        type='FCNHead', in_channels=embed_dim, in_index=2, channels=256, num_convs=1, concat_input=False,
        dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg, align_corners=False,
        ignore_index=ignore_index,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4, class_weight=class_weight)),
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
_dataset = dict(type='IndustrialSegDataset', classes=classes, ignore_index=ignore_index)
train_dataloader = dict(
    batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(_dataset, data_root=train_dir, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=num_workers, persistent_workers=num_workers > 0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(_dataset, data_root=val_dir, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'], ignore_index=ignore_index)
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
