# UperNet + FCN auxiliary head on an exported MAE ViT-B/16, ADE20K 512x512 (DBP-MAE fine-tune recipe).
# 125 epochs of the 1,021-image 10% ADE20K subset at batch 16: ceil(125 * 1021 / 16) = 7977
# iterations. AdamW lr 2.5e-5, betas (0.9, 0.999), wd 0.05; 500-iteration linear warm-up, then
# polynomial (power 1) decay to 0. No DBP here. layer decay 0.65: the paper does not state it,
# 0.65 is MAE's ADE20K value (1.0 disables it). batch_size is per process: with N GPUs set
# train_dataloader.batch_size=16//N to keep the total at 16.
_base_ = [
    './_base_/models/upernet_timm_vit.py', './_base_/datasets/ade20k.py',
    './_base_/schedules/adamw_layer_decay_poly.py', './_base_/default_runtime.py'
]
data_root = 'data/ade20k_10pct'
pretrained_export = 'exports/mae_vit_b16'
model = dict(
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(arch='vit_base_patch16_224', model_args=dict(img_size=512, in_chans=3),
                  in_channels=3, out_indices=(3, 5, 7, 11)),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
train_cfg = dict(max_iters=7977, val_interval=1000)
