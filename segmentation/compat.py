"""Make mmsegmentation 1.2.2 import and run with ``mmcv-lite`` and torch >= 2.6.

Two gaps, both closed by :func:`ensure` (idempotent, cheap after the first call):

- ``mmcv-lite`` ships ``mmcv/ops/*.py`` but not the compiled ``mmcv._ext``, so ``import mmcv.ops``
  fails and with it ``import mmseg.models``. We register a stand-in module as ``mmcv.ops``: it
  exposes mmcv's pure-Python ``point_sample`` (loaded from mmcv's own file) and, for every other
  public name of the real ``mmcv.ops``, a placeholder class whose use raises a clear error.
  Placeholders are classes (not functions) so ``isinstance(m, DeformConv2d)`` checks in
  mmengine / mmseg simply return False. With a full mmcv build installed, nothing is replaced.
- torch >= 2.6 loads checkpoints with ``weights_only=True``; mmengine 0.10.7 checkpoints hold
  non-tensor objects (the message hub's ``HistoryBuffer``, numpy arrays, bound methods pickled via
  ``getattr``), so ``resume`` and ``load_from`` fail. mmengine's *local checkpoint loader* is
  replaced by one that loads with ``weights_only=False`` (see :func:`trust_mmengine_checkpoints`
  for why an allow-list is not an option); ``torch.load`` elsewhere keeps its safe default.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
import warnings
from pathlib import Path

_OPS = "mmcv.ops"
_PURE_PYTHON_OPS = ("point_sample",)  # files of mmcv/ops that need no compiled extension
_INFO_FUNCTIONS = ("get_compiler_version", "get_compiling_cuda_version")  # used by env reports
_done = False


class _UnavailableOp:
    """Base of the placeholders: constructing (or calling) one raises with an explanation."""

    _op_name = "?"

    def __new__(cls, *args: object, **kwargs: object) -> "_UnavailableOp":
        raise NotImplementedError(
            f"mmcv.ops.{cls._op_name} needs the compiled mmcv package (mmcv-full); this environment "
            f"has mmcv-lite, whose stand-in mmcv.ops only provides {', '.join(_PURE_PYTHON_OPS)}. "
            "Use a model/config that does not need this op, or install a full mmcv build."
        )


def _placeholder(name: str) -> type:
    return type(name, (_UnavailableOp,), {"_op_name": name, "__module__": _OPS})


def _ops_dir() -> Path:
    spec = importlib.util.find_spec("mmcv")
    if spec is None or spec.origin is None:
        raise ImportError("mmcv is not installed: pip install 'mae-dbp[seg]' (mmcv-lite==2.1.0)")
    return Path(spec.origin).parent / "ops"


def _public_names(init_file: Path) -> list[str]:
    """The names in ``__all__`` of mmcv/ops/__init__.py, read without executing it."""
    try:
        tree = ast.parse(init_file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return []
    for node in tree.body:
        is_all = isinstance(node, (ast.Assign, ast.AugAssign)) and any(
            isinstance(t, ast.Name) and t.id == "__all__"
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
        if is_all and isinstance(node.value, (ast.List, ast.Tuple)):
            return [e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _not_available_info() -> str:
    return "n/a (mmcv-lite)"


def install_mmcv_ops_standin() -> bool:
    """Register the stand-in ``mmcv.ops`` unless a real (compiled) one is usable. True if installed."""
    if _OPS in sys.modules:
        return getattr(sys.modules[_OPS], "_mae_dbp_standin", False)
    if importlib.util.find_spec("mmcv._ext") is not None:
        return False  # full mmcv: the real mmcv.ops imports fine
    ops_dir = _ops_dir()
    standin = types.ModuleType(_OPS, "Stand-in for mmcv.ops under mmcv-lite (see segmentation.compat).")
    standin.__path__ = []  # a package, so `mmcv.ops.point_sample` resolves from sys.modules
    standin._mae_dbp_standin = True
    sys.modules[_OPS] = standin
    real: dict[str, object] = {}
    for file_name in _PURE_PYTHON_OPS:
        module = _load_file(f"{_OPS}.{file_name}", ops_dir / f"{file_name}.py")
        setattr(standin, file_name, module)
        real.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    names = _public_names(ops_dir / "__init__.py") or list(_PURE_PYTHON_OPS)
    for name in names:
        if name in _INFO_FUNCTIONS:
            value: object = _not_available_info
        elif name in real:
            value = real[name]
        else:
            value = _placeholder(name)
        setattr(standin, name, value)
    standin.__all__ = names
    import mmcv

    mmcv.ops = standin
    return True


def trust_mmengine_checkpoints() -> None:
    """Load local mmengine checkpoints (resume, ``load_from``, test) with ``weights_only=False``.

    An allow-list cannot do it safely: besides ``HistoryBuffer`` and numpy arrays, mmengine's
    message-hub state pickles bound methods through ``builtins.getattr``, and allowing ``getattr``
    in the weights-only unpickler would re-open arbitrary code execution anyway. So, as mmengine
    did before torch 2.6, its local checkpoint loader trusts the file the user points it to;
    everything else keeps torch's default. Only resume from / test checkpoints you trust.
    """
    import os.path as osp

    import torch
    from mmengine.runner.checkpoint import CheckpointLoader

    def load_from_local_trusted(filename: str, map_location=None):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f"{filename} can not be found.")
        return torch.load(filename, map_location=map_location, weights_only=False)

    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_trusted, force=True)


def ensure() -> None:
    """Apply both fixes; call before importing mmseg. Safe to call any number of times."""
    global _done
    if _done:
        return
    if install_mmcv_ops_standin():
        # mmcv.cnn tries an optional compiled import and warns once; the stand-in explains itself.
        warnings.filterwarnings("ignore", message="Fail to import ``MultiScaleDeformableAttention``")
    trust_mmengine_checkpoints()
    _done = True
