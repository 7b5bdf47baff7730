"""Load an mmengine config with ``--cfg-options``, where top-level settings are re-evaluated.

mmengine merges ``--cfg-options`` into the *evaluated* config, so overriding a top-level variable
such as ``pretrained_export`` or ``crop_size`` would not reach the values computed from it
(``model.backbone.export_dir``, the pipelines, ...). Here an option whose key has no dot and names
a variable assigned at the top of the config file replaces that assignment *before* the file is
evaluated; everything derived from it follows. Dotted keys are merged as usual afterwards.

Limitation: the rewritten file is evaluated from a temporary folder; relative ``_base_`` paths are
made absolute, other file-relative constructs (``{{fileDirname}}``) are not supported with
top-level overrides.
"""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path
from typing import Any

from mae_dbp.errors import UserInputError


def top_level_names(source: str) -> set[str]:
    """Names assigned by a plain ``name = ...`` statement at the top level of a config's source."""
    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def _literal(key: str, value: Any) -> ast.expr:
    text = repr(value)
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError) as error:
        raise UserInputError(f"--cfg-options {key}: {text} is not a literal value") from error
    return ast.parse(text, mode="eval").body


def rewrite_source(source: str, overrides: dict[str, Any], config_dir: Path) -> str:
    """``source`` with each top-level ``name = ...`` in ``overrides`` replaced by the given value."""
    tree = ast.parse(source)
    for node in tree.body:
        if not isinstance(node, ast.Assign) or not all(isinstance(t, ast.Name) for t in node.targets):
            continue
        names = [t.id for t in node.targets]
        hit = [n for n in names if n in overrides]
        if hit:
            node.value = _literal(hit[0], overrides[hit[0]])
        elif "_base_" in names:
            bases = ast.literal_eval(node.value)
            bases = [bases] if isinstance(bases, str) else list(bases)
            node.value = _literal("_base_", [str((config_dir / b).resolve()) for b in bases])
    return ast.unparse(ast.fix_missing_locations(tree))


def load_config(path: str | Path, cfg_options: dict[str, Any] | None = None):
    """``mmengine.Config`` from ``path`` with ``cfg_options`` applied (top-level keys before evaluation)."""
    from mmengine.config import Config

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: config file does not exist")
    options = dict(cfg_options or {})
    early: dict[str, Any] = {}
    if path.suffix == ".py":
        source = path.read_text(encoding="utf-8")
        names = top_level_names(source)
        early = {k: v for k, v in options.items() if "." not in k and k in names}
    if not early:
        cfg = Config.fromfile(str(path))
    else:
        with tempfile.TemporaryDirectory(prefix="mae_dbp_cfg_") as tmp:
            rewritten = Path(tmp) / path.name
            rewritten.write_text(rewrite_source(source, early, path.parent.resolve()), encoding="utf-8")
            cfg = Config.fromfile(str(rewritten))
    late = {k: v for k, v in options.items() if k not in early}
    if late:
        cfg.merge_from_dict(late)
    return cfg
