"""``--cfg-options KEY=VALUE``: parsed with mmengine's rules, and every key must name something.

mmengine's ``Config.merge_from_dict`` creates any key it is given, so a typo (``max_iter=5``,
``pretrained_exprt=...``) would silently do nothing. :func:`check_keys` rejects a key that is not
in the config with one line naming it and the closest existing key (:func:`mae_dbp.errors.closest`), and a value whose kind
differs from the config's (``model.backbone.drop_path_rate=abc`` where the config has 0.0) with one
line naming the key, the expected kind and the value.
"""

from __future__ import annotations

from typing import Any

from mae_dbp.errors import UserInputError, closest


def parse_cfg_options(items: list[str]) -> dict[str, Any]:
    """``['a.b=1', 'crop_size=(96,96)']`` -> ``{'a.b': 1, 'crop_size': (96, 96)}`` (mmengine's value rules)."""
    from mmengine.config import DictAction

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--cfg-options expects KEY=VALUE, got {item!r}")
        options[key] = DictAction._parse_iterable(value)
    return options


def config_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key path of a config tree (list items by index), e.g. ``train_cfg.max_iters``."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
    keys = []
    for key, value in items:
        path = f"{prefix}{key}"
        keys.append(path)
        keys += config_keys(value, path + ".")
    return keys


def _kind(value: Any) -> str | None:
    """The kind an override must keep: 'bool', 'number', 'text', 'sequence', 'mapping'; None: any."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "sequence"
    if isinstance(value, dict):
        return "mapping"
    return None


def check_value_kind(key: str, existing: Any, value: Any, config_name: str) -> None:
    """Raise when ``value`` is of another kind than the config's ``existing`` value (None: unchecked)."""
    expected, given = _kind(existing), _kind(value)
    if existing is None or value is None or expected is None or expected == given:
        return
    raise UserInputError(f"--cfg-options {key}: expected a {expected} (as in {config_name}: {existing!r}), got {value!r}")


def check_keys(cfg: Any, options: dict[str, Any], config_name: str) -> None:
    """Raise for the first option key whose path does not exist in ``cfg`` or whose value is of
    another kind than the config's."""
    tree = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    keys = None
    for key in options:
        node, found = tree, True
        for part in key.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                found = False
                break
        if not found:
            keys = keys if keys is not None else config_keys(tree)
            near = next(iter(closest(key, keys)), None)
            hint = f"; did you mean {near}?" if near else ""
            raise UserInputError(f"--cfg-options {key}: no such key in {config_name}{hint}")
        check_value_kind(key, node, options[key], config_name)
