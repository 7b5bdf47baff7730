"""The DBP library's own error type and range check, so that ``mae_dbp.decor`` depends on nothing else
in the package."""

from __future__ import annotations


from typing import Any


class DecorError(ValueError):
    """A bad argument to the DBP API (a module pattern, a setting, an unsupported layer); the message
    names it. An application shows it as it shows its own input errors (``mae-dbp`` prints one line)."""


def expect(ok: bool, key: str, expected: str, value: Any, error: type[ValueError] = DecorError) -> None:
    """Raise ``error("KEY: expected EXPECTED, got VALUE")`` unless ``ok``: the one range / choice check
    of the DBP settings and of the application's configs (which pass their own error type)."""
    if not ok:
        raise error(f"{key}: expected {expected}, got {value!r}")
