"""The online linear probe (``eval.probe``): how useful the encoder's features are, during pretraining.

    config.py    ProbeConfig / EvalConfig: the ``eval`` section of a pretraining config
    data.py      the labelled folder, read once and cached as normalised tensors + targets
    features.py  frozen encoder features: patch tokens (segmentation) or pooled tokens (classes)
    ridge.py     closed-form ridge regression on the cached features
    score.py     mIoU / accuracy
    probe.py     LinearProbe: due(epoch) -> run(encoder) -> {probe_score, probe_metric, probe_seconds}
"""

from mae_dbp.probe.config import EvalConfig, ProbeConfig
from mae_dbp.probe.probe import LinearProbe, best_probe

__all__ = ["EvalConfig", "ProbeConfig", "LinearProbe", "best_probe"]
