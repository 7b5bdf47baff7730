"""The mmsegmentation side of mae-dbp: UperNet fine-tuning of exported encoders.

Nothing is imported eagerly (``mae-dbp --help`` imports :mod:`segmentation.cli` only).
``segmentation.plugin`` registers the mmseg components; ``segmentation.runner`` trains and tests.
"""
