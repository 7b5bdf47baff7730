"""The ``mae-dbp`` sub-commands, one module each (``add_arguments(parser)``, ``run(args) -> int``),
each a thin layer over the library: argument parsing, the call, the printed result. torch, timm and
mmseg are imported only inside ``run`` so that ``mae-dbp --help`` stays fast."""
