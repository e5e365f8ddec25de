"""Progress bars: a widget bar (``tqdm.notebook``) in JupyterLab, the plain text bar everywhere
else, including notebooks run headless by papermill or nbval, whose saved outputs cannot show
widgets. A kernel cannot see its front end, so the Makefile tells headless runs by setting
``PGCORE_PLAIN_PROGRESS=1``, which their kernels inherit."""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Iterable

from tqdm import std

def widget_front_end() -> bool:
    """Whether to draw a widget: in a Jupyter kernel (not terminal IPython) with ipywidgets installed,
    unless ``PGCORE_PLAIN_PROGRESS`` is set and not "0"."""
    if os.environ.get("PGCORE_PLAIN_PROGRESS", "") not in ("", "0"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    if type(get_ipython()).__name__ != "ZMQInteractiveShell":
        return False
    return importlib.util.find_spec("ipywidgets") is not None


def bar(iterable: Iterable | None = None, **tqdm_kwargs: Any) -> std.tqdm:
    """A tqdm bar over ``iterable`` (any tqdm keyword): a widget where :func:`widget_front_end` says so."""
    if widget_front_end():
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(iterable, **tqdm_kwargs)
    return std.tqdm(iterable, **tqdm_kwargs)
