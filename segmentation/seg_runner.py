"""``SegRunner``: mmengine's Runner that resolves the config's data- and encoder-derived sizes first.

Configs select it with ``runner_type = 'SegRunner'`` (``_base_/default_runtime.py``), so it is
used by ``mae-dbp segment``, ``tools/train.py`` and mmseg's own ``tools/train.py`` alike. It also

- runs under ``--launcher pytorch`` without GPUs: a gloo process group, a CPU DDP wrapper and
  plain BN (mmengine alone would call ``torch.cuda.set_device``; SyncBN needs GPUs);
- keeps the console readable: the full config, environment, hook order and parameter-group dumps
  go to the work dir's log file only, not to the terminal.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging

import torch
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from segmentation.resolve import resolve

# INFO messages that go to the log file only (mmengine's config / environment dumps, mmseg's
# layer-decay parameter groups: thousands of lines for a ViT-B)
_FILE_ONLY = ("Config:", "Param groups", "\n------------", "Hooks will be executed")


class _FileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip(" ").startswith(_FILE_ONLY)


@RUNNERS.register_module()
class SegRunner(Runner):
    """A Runner whose :meth:`from_cfg` first calls :func:`segmentation.resolve.resolve`."""

    @classmethod
    def from_cfg(cls, cfg) -> "SegRunner":
        cfg = copy.deepcopy(cfg)  # Config.copy() is shallow: resolve() would edit the caller's dicts
        resolve(cfg)
        if cfg.get("launcher", "none") != "none" and not torch.cuda.is_available():
            _init_cpu_distributed(cfg)
        return super().from_cfg(cfg)

    def build_logger(self, *args, **kwargs):
        logger = super().build_logger(*args, **kwargs)
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                handler.addFilter(_FileOnly())
        return logger

    def build_optim_wrapper(self, optim_wrapper):
        """mmseg's layer-decay constructor ``print``s every parameter group: send that to the log file."""
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            wrapper = super().build_optim_wrapper(optim_wrapper)
        if captured.getvalue():
            self.logger.info("Param groups (optimizer constructor output):\n" + captured.getvalue())
        return wrapper


def _init_cpu_distributed(cfg) -> None:
    """Join the launcher's process group with gloo and wrap the model with a CPU DDP (no device ids)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)
    _sync_bn_to_bn(cfg.model)


def _sync_bn_to_bn(node) -> None:
    """``norm_cfg type='SyncBN'`` -> ``'BN'`` everywhere (torch's SyncBatchNorm runs on GPUs only)."""
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for value in node.values():
            _sync_bn_to_bn(value)
    elif isinstance(node, list):
        for value in node:
            _sync_bn_to_bn(value)
