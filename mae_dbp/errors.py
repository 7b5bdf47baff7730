"""The one exception type for bad user input (files, configs, arguments), and the closest-name hint.

The command line prints these as a single ``mae-dbp: error: ...`` line instead of a traceback.
It subclasses ``ValueError`` so library callers can catch it the usual way.
"""


import difflib


class UserInputError(ValueError):
    """Bad input from the user: a file, a config key or an argument. The message names it."""


def _similarity(wanted: str, known: str) -> float:
    """difflib ratio of the whole dotted names, or mostly of their last parts (``max_iter`` ~ ``train_cfg.max_iters``)."""
    whole = difflib.SequenceMatcher(None, wanted, known).ratio()
    last = difflib.SequenceMatcher(None, wanted.rsplit(".", 1)[-1], known.rsplit(".", 1)[-1]).ratio()
    return max(whole, 0.9 * last + 0.1 * whole)


def closest(wanted: str, known: list[str], n: int = 1, cutoff: float = 0.4) -> list[str]:
    """Up to ``n`` names of ``known`` most similar to ``wanted`` (a config key, an optimizer), best
    first; none below ``cutoff``: the one hint of every "unknown name" error."""
    scored = sorted(((_similarity(wanted, k), k) for k in known), key=lambda pair: -pair[0])
    return [k for score, k in scored[:n] if score >= cutoff]
