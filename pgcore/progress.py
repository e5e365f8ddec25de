"""Progress bars that suit where the code runs.

In JupyterLab a long run shows one widget bar per loop (``tqdm.notebook``) that updates in
place. Everywhere else (a terminal, a script, and notebooks executed headless by papermill
or nbval, whose saved outputs cannot show widgets) the plain text bar (``tqdm.std``) is used.

A kernel cannot see which front end is attached to it, so headless execution is told by
the environment: the Makefile's ``figures``, ``notebooks`` and ``test`` targets set
``PGCORE_PLAIN_PROGRESS=1`` for papermill and nbval, whose kernels inherit it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Iterable, Mapping

from tqdm import std

PLAIN_ENV = "PGCORE_PLAIN_PROGRESS"


def _current_shell() -> Any:
    """The running IPython shell, or None outside IPython (without importing IPython needlessly)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def widget_front_end(shell: Any = None, env: Mapping[str, str] | None = None) -> bool:
    """Whether progress should be drawn as a Jupyter widget: inside a Jupyter kernel
    (``ZMQInteractiveShell``, not terminal IPython), with ipywidgets installed, unless
    ``PGCORE_PLAIN_PROGRESS`` is set to anything but ``""``/``"0"``.

    ``shell`` defaults to the running IPython shell, ``env`` to ``os.environ``."""
    env = os.environ if env is None else env
    if env.get(PLAIN_ENV, "") not in ("", "0"):
        return False
    shell = _current_shell() if shell is None else shell
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    return importlib.util.find_spec("ipywidgets") is not None


def bar(iterable: Iterable | None = None, **tqdm_kwargs: Any) -> std.tqdm:
    """A tqdm progress bar over ``iterable``: the widget bar in a Jupyter kernel with a widget
    front end, the plain text bar otherwise (see :func:`widget_front_end`). Takes every
    keyword of ``tqdm`` (``desc``, ``total``, ``leave``, ``disable`` ...)."""
    if widget_front_end():
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(iterable, **tqdm_kwargs)
    return std.tqdm(iterable, **tqdm_kwargs)
