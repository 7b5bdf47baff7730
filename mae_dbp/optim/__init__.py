"""Optimizers for the trainers and benches: timm's factory (AdamW, Muon, LAMB, Lion, ...) through
:func:`build_optimizer`, and :class:`Mud`, MomentUm Decorrelation, which timm does not ship."""

from mae_dbp.optim.factory import build_optimizer, fused_available, optimizer_names
from mae_dbp.optim.mud import Mud

__all__ = ["build_optimizer", "fused_available", "optimizer_names", "Mud"]
