"""The mmsegmentation side of mae-dbp: UperNet fine-tuning of exported encoders.

Nothing is imported eagerly (``mae-dbp --help`` imports :mod:`mae_dbp.commands.segment` only).
``segmentation.plugin`` registers the mmseg components; ``segmentation.runner`` trains and tests.
"""
