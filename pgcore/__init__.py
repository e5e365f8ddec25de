"""pgcore: the training and pruning engine of pruning-generalization.

Modules follow the paper's Methods: ``data`` (datasets, label noise), ``models``,
``pruning`` (masks), ``train`` (one training run), ``protocols`` (IMP and its controls),
``store`` (hash-keyed resumable results), ``analysis`` (seeds -> mean and CI),
``plots`` and ``cli``.
"""

__version__ = "0.1.0"
