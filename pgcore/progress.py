"""Progress bars: tqdm's widget bar in a Jupyter kernel, the plain text bar everywhere else, and also in kernels
run headless by papermill or nbval (whose saved outputs cannot show widgets): the Makefile marks those by setting
``PGCORE_PLAIN_PROGRESS=1``, which their kernels inherit."""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Iterable

from tqdm import std

__all__ = ["widget_front_end", "bar", "set_total"]

with warnings.catch_warnings():  # tqdm's "experimental" notice, and its warning when ipywidgets is missing
    warnings.simplefilter("ignore")
    from tqdm.autonotebook import tqdm as _auto  # the widget bar in a Jupyter kernel with ipywidgets, else std
# Bars are drawn by one process: a thread lock, not tqdm's default multiprocessing one, which a worker process ended in
# the middle of a task leaves behind (the resource tracker's "leaked semaphore" warning after Ctrl-C).
std.tqdm.set_lock(threading.RLock())


def widget_front_end() -> bool:
    """Whether to draw a widget: in a Jupyter kernel with ipywidgets, unless ``PGCORE_PLAIN_PROGRESS`` is set and
    not "0"."""
    return os.environ.get("PGCORE_PLAIN_PROGRESS", "") in ("", "0") and _auto is not std.tqdm


def bar(iterable: Iterable | None = None, **tqdm_kwargs: Any) -> std.tqdm:
    """A tqdm bar over ``iterable`` (any tqdm keyword): a widget where :func:`widget_front_end` says so."""
    return (_auto if widget_front_end() else std.tqdm)(iterable, **tqdm_kwargs)


def set_total(b: std.tqdm, total: int) -> None:
    """Change a running bar's total (and its widget's, where it is one)."""
    b.total = total
    widget = getattr(getattr(b, "container", None), "pbar", None)
    if widget is not None:
        widget.max = total
    b.refresh()
