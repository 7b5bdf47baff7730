"""The ``mae-dbp`` command line: one sub-command per product feature.

Each sub-command lives in its own module of :mod:`mae_dbp.commands` with two functions, ``add_arguments(parser)`` and
``run(args) -> int``. Those modules import torch, timm or mmseg only inside ``run`` so that
``mae-dbp --help`` stays fast. Bad user input (:class:`~mae_dbp.errors.UserInputError`, a missing
file, an output that already exists, or a bad DBP setting: :class:`~mae_dbp.decor.DecorError`) is printed as one ``mae-dbp: error: ...`` line, exit code 2.
Any other file-system error (an output folder that cannot be written, a full disk) is one line naming
the path and the OS error, exit code 74 (``EX_IOERR``); a collective that another rank did not
answer within ``train.collective_timeout`` is one line, exit code 1. A training run stopped by SIGTERM / SIGINT /
SIGUSR1 saves ``last/`` and exits 75 (``EX_TEMPFAIL``: requeue it and ``--resume``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mae_dbp import __version__
from mae_dbp.decor.errors import DecorError
from mae_dbp.errors import UserInputError, collective_failure, os_error_line
from mae_dbp.train.stop import EXIT_REQUEUE, Stopped

EXIT_BAD_INPUT = 2
EXIT_IO_ERROR = 74  # EX_IOERR: a file-system error on an output (read-only, full disk)

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("mae_dbp.commands.quickstart", "BP vs DBP end to end on built-in synthetic data"),
    "pretrain": ("mae_dbp.commands.pretrain", "MAE pretraining (BP or DBP) with accelerate"),
    "export": ("mae_dbp.commands.export", "fuse R into the weights and export a plain timm ViT"),
    "segment": ("mae_dbp.commands.segment", "UperNet fine-tuning / testing through mmsegmentation"),
    "classify": ("mae_dbp.commands.classify", "supervised training of the DBP backbone zoo"),
    "data": ("mae_dbp.commands.data", "synthetic data, subsets, tiling, validation and statistics"),
    "bench": ("mae_dbp.commands.bench", "benchmarks that print DBP / BP time ratios"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mae-dbp", description="MAE pretraining of vision transformers with decorrelated backpropagation (DBP).")
    parser.add_argument("--version", action="version", version=f"mae-dbp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=text, description=text)
        command_parser.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # KEY=VALUE overrides may also follow options (`--out DIR train.epochs=2`)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    ok = False
    try:
        code = int(importlib.import_module(args._module).run(args) or 0)
        ok = True
        return code
    except (UserInputError, DecorError, FileNotFoundError, FileExistsError) as error:
        print(f"mae-dbp: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Stopped:  # the loop saved last/ and said so
        return EXIT_REQUEUE
    except OSError as error:
        print(f"mae-dbp: error: {os_error_line(error)}", file=sys.stderr)
        return EXIT_IO_ERROR
    except RuntimeError as error:  # a hung / lost rank: train.collective_timeout
        line = collective_failure(error)
        if line is None:
            raise
        print(f"mae-dbp: error: {line}", file=sys.stderr)
        return 1
    finally:
        leave_process_group(ok)


def leave_process_group(ok: bool) -> None:
    """End a multi-process command's process group before the interpreter exits: after a success,
    all ranks meet once (so rank 0, which hosts the rendezvous store, is not gone while the others
    still talk to it), then each destroys its group. A group left alive to interpreter shutdown let
    torch's C++ threads outlive it: rank 1 of a 2-rank gloo run aborted now and then with
    "terminate called without an active exception" after training had finished."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    try:
        if ok:
            dist.barrier()
        dist.destroy_process_group()
    except Exception:  # a failed rank: torchrun ends the others; nothing to add to its error
        pass


if __name__ == "__main__":
    sys.exit(main())
