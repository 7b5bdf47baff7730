# Runtime shared by every segmentation config. custom_imports registers the plugin (backbone,
# datasets, transforms, metric, hooks, SegRunner); runner_type makes mmseg's own tools/train.py
# build the SegRunner too, which fills the None sizes of the model from the data and the export.
default_scope = 'mmseg'
custom_imports = dict(imports=['segmentation.plugin'], allow_failed_imports=False)
runner_type = 'SegRunner'
custom_hooks = [dict(type='SegMetricsJsonHook'), dict(type='SegPreviewHook', num_images=8)]
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)  # named after the run
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
