"""hypo: explainable deep learning on stroke DWI and the ordinal statistics built on it.

The data path (see README): cohort -> slices -> models -> cams -> features -> stats -> report.
Each stage is a subpackage with one entry function and writes tables the next stage reads.
"""

__version__ = "0.1.0"
