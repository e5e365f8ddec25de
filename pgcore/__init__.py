"""pgcore: the training and pruning engine of pruning-generalization (modules follow the paper's Methods)."""

__version__ = "0.1.0"
