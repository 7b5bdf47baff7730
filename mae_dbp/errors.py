"""The one exception type for bad user input (files, configs, arguments).

The command line prints these as a single ``mae-dbp: error: ...`` line instead of a traceback.
It subclasses ``ValueError`` so library callers can catch it the usual way.
"""


class UserInputError(ValueError):
    """Bad input from the user: a file, a config key or an argument. The message names it."""
