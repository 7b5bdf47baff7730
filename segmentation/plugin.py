"""Register everything of the mmseg plugin; configs load it with
``custom_imports = dict(imports=['segmentation.plugin'], allow_failed_imports=False)``.

Applies :mod:`segmentation.compat` first (mmcv-lite stand-in, checkpoint allow-list), then imports
the modules whose classes register themselves in mmseg's registries: ``TimmMAEViT`` (MODELS),
``WeightedCrossEntropyLoss`` (MODELS), ``IndustrialSegDataset`` (DATASETS),
``LoadImageChannels``/``LoadIndexMask`` (TRANSFORMS), ``PerClassIoUMetric`` (METRICS),
``SegMetricsJsonHook``/``SegPreviewHook`` (HOOKS), ``SegRunner`` (RUNNERS).
"""

from segmentation import compat

compat.ensure()

from segmentation import backbone, dataset, hooks, losses, metric, seg_runner, transforms  # noqa: E402,F401  (registration)
