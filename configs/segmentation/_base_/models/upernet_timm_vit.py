# UperNet + FCN auxiliary head on a timm ViT encoder (TimmMAEViT), as mmseg's configs/mae.
# Sizes left None are filled at build time by the SegRunner (runner_type in default_runtime.py)
# from the data and the encoder; a value written here is checked against them instead:
#   backbone.export_dir            <- top-level pretrained_export (an `mae-dbp export` folder)
#   backbone.out_indices           <- the encoder's last four blocks
#   neck.embed_dim, heads' in_channels, optim_wrapper.paramwise_cfg.num_layers <- the encoder
#   heads' num_classes             <- the training split's classes.yaml (or the dataset's classes)
#   data_preprocessor.mean / std   <- {train split}/stats.json, else the export's pretraining stats
pretrained_export = None  # export folder (config.json + model.safetensors); None: backbone.arch, random init
norm_cfg = dict(type='SyncBN', requires_grad=True)  # plain BN when not distributed (mmengine converts it)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=None,
    std=None,
    bgr_to_rgb=False,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='TimmMAEViT',
        export_dir=None,
        img_size=(512, 512),
        out_indices=None,
        in_channels=None,
        drop_path_rate=0.1),
    neck=dict(type='Feature2Pyramid', embed_dim=None, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    decode_head=dict(
        type='UPerHead',
        in_channels=None,
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=768,
        dropout_ratio=0.1,
        num_classes=None,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=None,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=None,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
