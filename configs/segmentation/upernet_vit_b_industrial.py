# UperNet + FCN auxiliary head on an exported MAE ViT-B/16 (2 input channels), industrial wire-bond data.
# 2-channel 16-bit 2048x2048 images; classes background/wire/ball/wedge/epoxy (checked against
# {data_root}/train/classes.yaml). Random 512x512 crops at native resolution, flips; slide
# inference with 512x512 windows. Normalisation from {data_root}/train/stats.json (raw units,
# written by `mae-dbp data stats`), else the export's pretraining mean/std. Same optimiser and
# schedule as the ADE20K recipe: 125 epochs of 5,560 images at batch 16 = 43438 iterations.
# batch_size is per process: with N GPUs set train_dataloader.batch_size=16//N.
_base_ = [
    './_base_/models/upernet_timm_vit.py', './_base_/datasets/industrial.py',
    './_base_/schedules/adamw_layer_decay_poly.py', './_base_/default_runtime.py'
]
data_root = 'data/wirebond_seg'
pretrained_export = 'exports/mae_vit_b16_wirebond'
model = dict(
    backbone=dict(arch='vit_base_patch16_224', model_args=dict(img_size=512, in_chans=2),
                  in_channels=2, out_indices=(3, 5, 7, 11)),
    # class 0 (background) weighs 0.2: thin structures cover a few % of the pixels. The plugin's
    # WeightedCrossEntropyLoss, not mmseg's CrossEntropyLoss: that one raises IndexError with
    # class_weight on any ignored (255) pixel, e.g. the seg_pad_val border of an image padded to the crop
    decode_head=dict(
        num_classes=5,
        loss_decode=dict(_delete_=True, type='WeightedCrossEntropyLoss', class_weight=[0.2, 1.0, 1.0, 1.0, 1.0])),
    auxiliary_head=dict(
        num_classes=5,
        loss_decode=dict(_delete_=True, type='WeightedCrossEntropyLoss', class_weight=[0.2, 1.0, 1.0, 1.0, 1.0],
                         loss_weight=0.4)))
train_dataloader = dict(dataset=dict(classes=('background', 'wire', 'ball', 'wedge', 'epoxy')))
val_dataloader = dict(dataset=dict(classes=('background', 'wire', 'ball', 'wedge', 'epoxy')))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=43438, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
