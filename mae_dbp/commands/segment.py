"""``mae-dbp segment``: UperNet fine-tuning and testing through mmsegmentation's Runner.

::

    mae-dbp segment train CONFIG [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--resume | --force]
    mae-dbp segment test CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--cfg-options ...]

The arguments are mmsegmentation's ``tools/train.py`` / ``tools/test.py`` ones (plus
``--launcher``), so ``tools/train.py`` and ``tools/test.py`` are this command. ``--cfg-options``
merge as in mmengine (``train_cfg.max_iters=100``); the shipped configs also take the top-level
``data_root`` and ``pretrained_export``. A key that names nothing in the config is an error. Both
print mIoU and per-class IoU, write ``<work dir>/metrics.json`` and save preview PNGs (input |
ground truth | prediction) to ``<work dir>/vis`` (test: ``--show-dir``). ``test`` uses the config
the training run dumped beside the checkpoint. torch / mmseg are imported only inside :func:`run`.
"""

from __future__ import annotations

import argparse

from segmentation.cfg_options import parse_cfg_options

LAUNCHERS = ("none", "pytorch", "slurm", "mpi")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", default=None, metavar="DIR",
                        help="output folder (train default: work_dirs/<config name>; "
                             "test default: <checkpoint folder>/test_<checkpoint name>)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. data_root=DIR pretrained_export=DIR "
                             "train_cfg.max_iters=100 train_dataloader.batch_size=8")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none",
                        help="job launcher (pytorch: under torchrun, e.g. tools/dist_train.sh)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``train`` and ``test`` sub-commands of ``mae-dbp segment``."""
    sub = parser.add_subparsers(dest="segment_command", required=True, metavar="ACTION")
    text = "fine-tune a segmentation config"
    train = sub.add_parser("train", help=text, description=text)
    train.add_argument("config", help="mmengine python config, e.g. configs/segmentation/upernet_tiny_cpu.py")
    _add_common(train)
    existing = train.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the work dir")
    existing.add_argument("--force", action="store_true",
                          help="replace the run a work dir holds (its checkpoints and metrics are removed first)")
    test = sub.add_parser("test", help="evaluate a checkpoint", description="evaluate a checkpoint")
    test.add_argument("config", help="the config the checkpoint was trained with (the run's dumped copy is used "
                                     "when it lies beside the checkpoint)")
    test.add_argument("checkpoint", help="a .pth checkpoint written by `mae-dbp segment train`")
    _add_common(test)
    test.add_argument("--show-dir", default=None, metavar="DIR",
                      help="where to save prediction previews (default: <work dir>/vis)")


def run(args: argparse.Namespace) -> int:
    from segmentation import runner

    options = parse_cfg_options(args.cfg_options)
    if args.segment_command == "train":
        record = runner.train(args.config, args.work_dir, options, resume=args.resume, force=args.force,
                              launcher=args.launcher)
    else:
        record = runner.test(args.config, args.checkpoint, args.work_dir, args.show_dir, options,
                             launcher=args.launcher)
    if not record:
        print("no evaluation was run (no metrics.json written)")
        return 0
    print(runner.format_metrics(record))
    return 0
