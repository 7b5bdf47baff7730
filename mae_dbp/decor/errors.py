"""The DBP library's own error type, so that ``mae_dbp.decor`` depends on nothing else in the package."""


class DecorError(ValueError):
    """A bad argument to the DBP API (a module pattern, a setting, an unsupported layer); the message
    names it. An application shows it as it shows its own input errors (``mae-dbp`` prints one line)."""
