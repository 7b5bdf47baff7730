"""``mae-dbp segment``: UperNet fine-tuning and testing through mmsegmentation's Runner.

::

    mae-dbp segment train CONFIG [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--resume]
    mae-dbp segment test CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--cfg-options ...]

Both print mIoU and per-class IoU, write them to ``<work dir>/metrics.json`` and save preview
PNGs (input | ground truth | prediction) of a few validation images to ``<work dir>/vis`` (test:
``--show-dir``). Top-level config settings (``data_root``, ``pretrained_export``, ``max_iters``,
``crop_size``, ...) given in ``--cfg-options`` are applied before the config is evaluated, so
values derived from them follow. torch / mmseg are imported only inside :func:`run`.
"""

from __future__ import annotations

import argparse
from typing import Any

from mae_dbp.errors import UserInputError


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", default=None, metavar="DIR",
                        help="output folder (train default: work_dirs/<config name>; "
                             "test default: <checkpoint folder>/test_<checkpoint name>)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config settings, e.g. pretrained_export=DIR data_root=DIR max_iters=100 "
                             "'crop_size=(256,256)' train_dataloader.batch_size=8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``train`` and ``test`` sub-commands of ``mae-dbp segment``."""
    sub = parser.add_subparsers(dest="segment_command", required=True, metavar="ACTION")
    text = "fine-tune a segmentation config"
    train = sub.add_parser("train", help=text, description=text)
    train.add_argument("config", help="mmengine python config, e.g. configs/segmentation/upernet_tiny_cpu.py")
    _add_common(train)
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the work dir")
    test = sub.add_parser("test", help="evaluate a checkpoint", description="evaluate a checkpoint")
    test.add_argument("config", help="the config the checkpoint was trained with")
    test.add_argument("checkpoint", help="a .pth checkpoint written by `mae-dbp segment train`")
    _add_common(test)
    test.add_argument("--show-dir", default=None, metavar="DIR",
                      help="where to save prediction previews (default: <work dir>/vis)")


def parse_cfg_options(items: list[str]) -> dict[str, Any]:
    """``['a.b=1', 'crop_size=(96,96)']`` -> ``{'a.b': 1, 'crop_size': (96, 96)}`` (mmengine's rules)."""
    from mmengine.config import DictAction

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--cfg-options expects KEY=VALUE, got {item!r}")
        options[key] = DictAction._parse_iterable(value)
    return options


def run(args: argparse.Namespace) -> int:
    from segmentation import runner

    options = parse_cfg_options(args.cfg_options)
    if args.segment_command == "train":
        record = runner.train(args.config, args.work_dir, options, resume=args.resume)
    else:
        record = runner.test(args.config, args.checkpoint, args.work_dir, args.show_dir, options)
    if not record:
        print("no evaluation was run (no metrics.json written)")
        return 0
    print(runner.format_metrics(record))
    return 0
