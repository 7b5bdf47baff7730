"""The one exception type for bad user input (files, configs, arguments), and the closest-name hint.

The command line prints these as a single ``mae-dbp: error: ...`` line instead of a traceback.
It subclasses ``ValueError`` so library callers can catch it the usual way.
"""


import difflib
import errno
import os


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


def os_error_line(error: OSError) -> str:
    """One line for a file-system error: the path, the OS's words and the errno name
    (``runs/x/last: Permission denied (EACCES)``; ``... No space left on device (ENOSPC)``)."""
    words = error.strerror or (str(error.args[0]) if error.args else type(error).__name__)
    code = f" ({errno.errorcode[error.errno]})" if error.errno in errno.errorcode else ""
    where = f"{os.fsdecode(error.filename)}: " if error.filename is not None else ""
    also = f" -> {os.fsdecode(error.filename2)}" if getattr(error, "filename2", None) is not None else ""
    return f"{where.rstrip(': ')}{also}: {words}{code}" if where else f"{words}{code}"


def write_failed(path: "os.PathLike | str", error: BaseException) -> OSError:
    """An OSError naming ``path`` for a write that failed with ``error`` (an OSError keeps its errno;
    torch's zip writer raises a RuntimeError without one: then its first line and the free space)."""
    if isinstance(error, OSError) and error.errno is not None:
        return OSError(error.errno, error.strerror or str(error), os.fsdecode(error.filename or path))
    import re
    import shutil

    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    code = re.search(r"(?:os error |Errno |errno[ =:]+)(\d+)", str(error))
    if code and int(code.group(1)) in errno.errorcode:  # safetensors: "I/O error: File too large (os error 27)"
        return OSError(int(code.group(1)), f"write failed: {os.strerror(int(code.group(1)))}", os.fsdecode(path))
    try:
        free = f"; {shutil.disk_usage(os.path.dirname(os.fspath(path)) or '.').free / 2**20:.0f} MiB free there"
    except OSError:
        free = ""
    return OSError(0, f"write failed ({type(error).__name__}: {first[:200]}){free}", os.fsdecode(path))  # errno unknown


def collective_failure(error: BaseException) -> str | None:
    """One line for a collective (all-reduce, barrier) that failed because another process hung or
    died (gloo's timeout / closed-connection RuntimeError after ``train.collective_timeout``), else None."""
    import re

    text = str(error)
    timed_out = re.search(r"Timed out waiting (\d+)\s*ms|timed out|Timeout", text)
    lost = re.search(r"Connection (closed|reset) by peer|Broken pipe", text)
    if not (isinstance(error, RuntimeError) and (timed_out or lost)):
        return None
    rank = os.environ.get("RANK", "?")
    if timed_out and timed_out.group(1):
        what = f"got no answer from another process within train.collective_timeout ({int(timed_out.group(1)) / 1000:g} s)"
    elif timed_out:
        what = "timed out (train.collective_timeout)"
    else:
        what = "lost its connection to another process (it died)"
    return (f"process {rank}: a collective operation (all-reduce / barrier) {what}: a rank hung or was lost, so the "
            "run stops; last/ holds the last saved state: --resume the run once the machines are well")
