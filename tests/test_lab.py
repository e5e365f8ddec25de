"""JupyterLab as a researcher meets it: progress bars, the explorer of a stored study, and
the whole experience checked in a real browser.

Progress bars and the explorer are tested on their own first (a real kernel, real stored
runs, no browser). Then ``make lab`` starts a real JupyterLab (localhost, a free port, a
token) on copies of the notebooks, its results going to a temporary store, and a real
headless Chromium (the system's, driven by Playwright; ``PGCORE_CHROMIUM`` names another
binary) runs every cell from the Lab menu and checks what a person sees. Screenshots of the
finished notebooks go to ``build/lab/``.

Without a Chromium or Playwright the browser tests skip, saying so;
``PGCORE_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns that skip into a failure.
"""

from __future__ import annotations

import io

import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "build" / "lab"
REQUIRE_ENV = "PGCORE_REQUIRE_BROWSER"
# Hang guards only: a smoke notebook runs in seconds, a cold start of Lab in a few more.
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 600
KERNEL = "Python (pgcore)"


# -- progress bars ----------------------------------------------------------------------

def test_plain_bar_outside_a_kernel():
    from tqdm import std

    from pgcore.progress import bar, widget_front_end

    assert not widget_front_end()  # pytest is no Jupyter kernel
    out = io.StringIO()
    b = bar(range(3), desc="levels", file=out)
    assert type(b) is std.tqdm
    assert list(b) == [0, 1, 2]
    assert "levels" in out.getvalue() and "3/3" in out.getvalue()


def _in_kernel(code: str, env: dict[str, str]) -> str:
    """Run ``code`` in a fresh "pgcore" kernel (the one the notebooks use) and return what it printed."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="pgcore", env=env)
    printed: list[str] = []

    def keep(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            printed.append("\n".join(msg["content"]["traceback"]))

    try:
        kc.execute_interactive(code, timeout=120, output_hook=keep)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return "".join(printed)


def test_kernel_gets_widget_bar_unless_plain_progress_is_set():
    """In a Jupyter kernel the bar is tqdm's widget bar; with PGCORE_PLAIN_PROGRESS=1 (what the
    Makefile sets for papermill and nbval) the plain one, so saved notebooks hold text."""
    env = {k: v for k, v in os.environ.items() if k != "PGCORE_PLAIN_PROGRESS"}
    code = ("import os\n"
            "from pgcore.progress import bar\n"
            "print('default', type(bar(range(2), leave=False)).__module__)\n"
            "os.environ['PGCORE_PLAIN_PROGRESS'] = '1'\n"
            "print('plain', type(bar(range(2), leave=False)).__module__)\n")
    printed = _in_kernel(code, env)
    assert "default tqdm.notebook" in printed, printed
    assert "plain tqdm.std" in printed, printed


# -- the explorer of a stored study -------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A two-seed study of the tiny config (1,000 MNIST-1D examples, 3 levels), its IMP run stored."""
    from pgcore.study import Study

    from conftest import TINY

    study = Study.from_dict({**TINY, "seeds": [0, 1], "progress": False}, root=tmp_path_factory.mktemp("store"),
                           compute=True)
    study.run("imp")
    return study


def _imp_runs(study):
    return study.run("imp").runs  # read back from the store


def test_levels_lists_each_level_with_its_sparsity(tiny_study):
    from pgcore.explore import levels

    lv = levels(_imp_runs(tiny_study))
    assert lv.level.tolist() == [0, 1, 2, 3]
    for row in lv.itertuples():
        assert row.sparsity == pytest.approx((1 - 0.8 ** row.level), abs=5e-3)
        assert row.remaining == pytest.approx(1 - row.sparsity)
    assert lv.epochs_total.tolist() == [2, 4, 6, 8]  # learning-rate rewinding: one 2-epoch schedule per level


def test_layer_weights_count_the_stored_mask(tiny_study):
    from pgcore.explore import layer_weights

    run = _imp_runs(tiny_study)[0]
    for level in (0, 3):
        layers = layer_weights(run, level)
        mask = run.load_checkpoint(level)["mask"]
        assert layers.layer.tolist() == list(mask)
        assert layers.remaining.tolist() == [int(m.sum()) for m in mask.values()]
        kept = layers.remaining.sum() / layers.weights.sum()
        assert kept == pytest.approx(1 - run.load_metrics(level)["sparsity"])
    assert (layer_weights(run, 0).fraction_remaining == 1.0).all()
    assert (layer_weights(run, 3).fraction_remaining < 1.0).any()


def test_level_curves_are_that_levels_history(tiny_study):
    from pgcore.explore import level_curves

    runs = _imp_runs(tiny_study)
    curves = level_curves(runs, 2)
    assert len(curves) == 2 * 2 * 2  # seeds x evaluated epochs x (train, test)
    hist = runs[1].history()
    want = hist[hist.level == 2].set_index("epoch").test_accuracy
    got = curves[(curves.seed == 1) & (curves.source == "test")].set_index("epoch")
    assert got.accuracy.tolist() == want.tolist()
    assert (got.error == 1 - got.accuracy).all()


def test_loss_change_is_level_minus_dense(tiny_study):
    from pgcore.explore import loss_change

    run = _imp_runs(tiny_study)[0]
    change = loss_change(run, 3)
    assert len(change) == 720  # 1,000 generated: 800 train, 10% of it to validation
    dense = run.load_checkpoint(0)["per_example_loss"].numpy()
    assert change.dense_loss.to_numpy() == pytest.approx(dense)
    assert change.change.to_numpy() == pytest.approx(change.loss.to_numpy() - dense)
    assert change.change.abs().max() > 0
    assert (loss_change(run, 0).change == 0).all()


def test_stored_studies_lists_complete_studies_only(tiny_study):
    from pgcore.explore import stored_studies
    from pgcore.study import Study

    studies = stored_studies(tiny_study)
    imp = [name for name in studies if name.startswith("imp [")]
    assert len(imp) == 1 and "explore" in imp[0] and "fig1" in imp[0]
    assert [r.path for r in studies[imp[0]]] == [r.path for r in _imp_runs(tiny_study)]
    assert not any(name.startswith("train") for name in studies)  # one level: nothing to explore
    # A study with a seed the store lacks is left out, and nothing is trained to fill it.
    three_seeds = Study.from_dict({**tiny_study.params, "seeds": [0, 1, 2]}, root=tiny_study.root)
    assert stored_studies(three_seeds) == {}
    assert not list(Path(tiny_study.root).glob("*/seed2"))


def test_level_figure_draws_three_panels(tiny_study):
    import matplotlib.pyplot as plt

    from pgcore.explore import layer_weights, level_figure

    runs = _imp_runs(tiny_study)
    fig = level_figure(runs, 2, seed=1)
    layers, curves, change = fig.axes
    assert len(layers.patches) == len(layer_weights(runs[1], 2))
    assert len(curves.lines) == 2 * 2 * 2  # this level and the dense one: seeds x (train, test)
    assert len(change.patches) == 60  # the histogram's bins
    assert "36.0% sparse" in fig._suptitle.get_text() and "seed 1" in fig._suptitle.get_text()
    plt.close(fig)
    with pytest.raises(ValueError, match="seed 7"):
        level_figure(runs, 2, seed=7)


def test_explore_widget_offers_every_level_of_the_picked_study(tiny_study):
    from pgcore.explore import explore

    runs = _imp_runs(tiny_study)
    view = explore({"both seeds": runs, "seed 1 only": [runs[1]]}, widget=True)
    import matplotlib.pyplot as plt

    assert isinstance(explore(runs, widget=False), plt.Figure)  # headless: the sparsest level, drawn once
    (study, seed), slider, _ = view.children[0].children, view.children[1], view.children[2]
    assert [label for label, _ in slider.options] == ["0.0%", "20.0%", "36.0%", "48.8%"]
    assert slider.value == 3 and list(seed.options) == [0, 1]
    study.value = "seed 1 only"
    assert list(seed.options) == [1] and seed.value == 1
    slider.value = 1
    assert slider.label == "20.0%"


# -- JupyterLab in a browser ---------------------------------------------------------------

def chromium_path() -> str:
    """The system Chromium for Playwright; skips (fails under PGCORE_REQUIRE_BROWSER=1) when
    it or the Playwright package is missing."""
    path = os.environ.get("PGCORE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    reason = None
    if path is None:
        reason = "no Chromium installed (Debian: apt-get install chromium)"
    elif importlib.util.find_spec("playwright") is None:
        reason = "the playwright package is not installed (pip install -e '.[test]')"
    if reason is not None:
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{reason}, and {REQUIRE_ENV} is set: the browser test must run here")
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook_copy(src: Path, dest_dir: Path) -> Path:
    """``src`` without its outputs, so every output the browser shows was made by this run."""
    nb = json.loads(src.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb["metadata"].pop("widgets", None)
    dest = dest_dir / src.name
    dest.write_text(json.dumps(nb, indent=1))
    return dest


def lab_settings(settings_dir: Path) -> None:
    """User settings of the test's Lab: every cell in the page (Lab 4 otherwise leaves cells
    outside the viewport out of the DOM) and no news toast over the notebook."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                            "checkForUpdates": False},
    }
    for name, value in files.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


@dataclass
class Lab:
    """A running JupyterLab server."""

    base: str
    token: str
    store: Path
    notebooks: Path
    proc: subprocess.Popen
    log: Path

    def url(self, path: str) -> str:
        return f"{self.base}/{path}?token={self.token}"

    def api(self, path: str, method: str = "GET") -> bytes:
        req = urllib.request.Request(f"{self.base}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def start_lab(tmp: Path) -> Lab:
    """``make lab`` on 127.0.0.1 with a random token, serving ``tmp/work`` (copies of the
    notebooks), its settings, workspaces and runtime files under ``tmp`` and results going
    to ``tmp/store``. Returns once the server answers."""
    work = tmp / "work" / "notebooks"
    work.mkdir(parents=True)
    for name in ("00_quickstart.ipynb", "08_explore.ipynb"):
        notebook_copy(ROOT / "notebooks" / name, work)
    lab_settings(tmp / "settings")
    env = {k: v for k, v in os.environ.items() if k != "PGCORE_PLAIN_PROGRESS"}  # the Lab UI shows widget bars
    env.update(PGCORE_STORE=str(tmp / "store"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    port, token, log = free_port(), secrets.token_hex(16), tmp / "server.log"
    options = ["--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}",
               f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
               "--LabApp.expose_app_in_browser=True"]  # lets the test read the notebook model (window.jupyterapp)
    # `make lab` as a user types it, with this interpreter's environment, which is set up already (-o).
    venv = Path(sys.prefix)
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-o", str(venv / ".installed"), f"VENV={venv}", "lab",
           f"LAB_DIR={tmp / 'work'}", f"LAB_ARGS={' '.join(options)}"]
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group, to stop make and Lab together
    lab = Lab(f"http://127.0.0.1:{port}", token, tmp / "store", work, proc, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{lab.log_tail()}")
        try:
            lab.api("status")
            return lab
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    stop_lab(lab)
    raise RuntimeError(f"JupyterLab did not answer within {START_TIMEOUT_S} s:\n{lab.log_tail()}")


def stop_lab(lab: Lab) -> None:
    """Shut the server down (it shuts its kernels down first); kill it if it hangs."""
    if lab.proc.poll() is None:
        try:
            lab.api("shutdown", method="POST")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            os.killpg(lab.proc.pid, signal.SIGTERM)
        try:
            lab.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.proc.pid, signal.SIGKILL)
            lab.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def lab(browser, tmp_path_factory) -> Iterator[Lab]:
    server = start_lab(tmp_path_factory.mktemp("lab"))
    yield server
    stop_lab(server)
    assert server.proc.returncode is not None, "the JupyterLab server did not stop"


# -- driving the Lab UI -----------------------------------------------------------------

# The kernel item of Lab's status bar: "<kernel name> | Idle" (or Busy, Initializing ...).
STATUS_JS = "(document.querySelector('.jp-StatusBar-Left')?.innerText ?? '')"


def open_notebook(browser, lab: Lab, name: str):
    """A page with ``notebooks/<name>`` open and its kernel started and idle."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(lab.url(f"lab/tree/notebooks/{name}") + "&reset")  # reset: no tabs restored from an earlier page
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=START_TIMEOUT_S * 1000)
    # The toolbar shows "No Kernel" until the session starts; the status bar reads "<kernel> | Idle" once it is ready.
    page.wait_for_function(f"() => {STATUS_JS}.includes('| Idle')", timeout=START_TIMEOUT_S * 1000)
    return page


def run_all_cells(page) -> None:
    """Run > Run All Cells, then wait until the run is over: the kernel idle, no cell queued or
    running, and every code cell numbered (or one failed, which stops Lab's run there)."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(
        """() => {
            const prompts = Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt'))
                .map(p => p.textContent.trim());
            if (!STATUS.includes('| Idle') || prompts.some(p => p === '[*]:')) return false;
            const failed = Array.from(window.jupyterapp.shell.currentWidget.content.model.cells)
                .some(c => c.type === 'code' && c.outputs.toJSON().some(o => o.output_type === 'error'));
            return failed || (prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p)));
        }""".replace("STATUS", STATUS_JS), timeout=RUN_TIMEOUT_S * 1000)


def kernel_shown(page) -> str:
    return page.locator(".jp-NotebookPanel .jp-Toolbar-kernelName").inner_text().strip()


def model_outputs(page) -> list[list[dict]]:
    """The nbformat outputs of every code cell of the open notebook, from Lab's own model."""
    return page.evaluate("""() => {
        const panel = window.jupyterapp.shell.currentWidget;
        return Array.from(panel.content.model.cells).filter(c => c.type === 'code').map(c => c.outputs.toJSON());
    }""")


def errors(outputs: list[list[dict]]) -> list[str]:
    return [f"cell {i}: {o['ename']}: {o['evalue']}" for i, cell in enumerate(outputs)
            for o in cell if o["output_type"] == "error"]


def stream_text(outputs: list[list[dict]], cell: int | None = None) -> str:
    """What one code cell (default: every cell) printed."""
    cells = outputs if cell is None else [outputs[cell]]
    return "".join(o["text"] if isinstance(o["text"], str) else "".join(o["text"])
                   for c in cells for o in c if o["output_type"] == "stream")


def rendered_images(page) -> list[dict]:
    """Every image in the notebook's outputs with its decoded size (0 when it failed to render)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output img'))
        .map(img => ({src: img.src.slice(0, 64), width: img.naturalWidth, height: img.naturalHeight}))""")


def screenshot(page, name: str) -> Path:
    """The whole notebook in one picture: the left sidebar closed, the window as tall as the notebook."""
    if page.locator("#jp-left-stack").is_visible():
        page.keyboard.press("Control+b")
    height = page.evaluate("() => document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-inner')?.scrollHeight"
                           " ?? document.querySelector('.jp-NotebookPanel .jp-Notebook').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 150, 12000)})
    page.wait_for_timeout(500)  # one layout pass of Lab's panels after the resize
    # Lab leaves the notebook scrolled to the last cell run, past the end: back to the top.
    page.evaluate("() => document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer')?.scrollTo(0, 0)")
    page.wait_for_timeout(200)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def committed_check_output(name: str) -> str:
    """The text the committed notebook's ``# NBVAL_CHECK_OUTPUT`` cell printed (what nbval compares)."""
    nb = json.loads((ROOT / "notebooks" / name).read_text())
    cell = next(c for c in nb["cells"] if "".join(c["source"]).startswith("# NBVAL_CHECK_OUTPUT"))
    return stream_text([cell["outputs"]], 0)


# -- the tests --------------------------------------------------------------------------

@pytest.mark.browser
def test_quickstart_runs_top_to_bottom_in_lab(browser, lab):
    committed = ROOT / "notebooks" / "00_quickstart.ipynb"
    before = file_digest(committed)
    page = open_notebook(browser, lab, "00_quickstart.ipynb")
    assert kernel_shown(page) == KERNEL
    assert page.locator(".jp-Dialog").count() == 0, "Lab asked for a kernel instead of using the notebook's"
    run_all_cells(page)
    outputs = model_outputs(page)
    assert errors(outputs) == []
    assert page.get_by_text("Traceback").count() == 0
    images = rendered_images(page)
    assert len(images) == 2, images  # the dense training curves and the pruning curve
    assert all(img["width"] > 100 and img["height"] > 100 for img in images), images
    # The results went to the server's temporary store, not to results/.
    assert f"stored in {lab.store}/train-" in stream_text(outputs)
    assert {p.name.split("-")[0] for p in lab.store.iterdir() if p.is_dir()} == {"imp", "train"}
    summary = committed_check_output("00_quickstart.ipynb")
    assert stream_text(outputs, -1) == summary
    shown = page.locator(".jp-NotebookPanel .jp-CodeCell").last.locator(".jp-OutputArea-output").inner_text()
    assert shown.strip() == summary.strip()
    assert kernel_shown(page) == KERNEL
    shot = screenshot(page, "00_quickstart")
    assert shot.stat().st_size > 50_000  # a page with two figures, not a blank one
    page.close()
    assert file_digest(committed) == before, "running the notebook in Lab changed notebooks/00_quickstart.ipynb"


@pytest.mark.browser
def test_explore_slider_redraws_a_stored_level(browser, lab):
    from pgcore.explore import levels
    from pgcore.store import find_runs

    page = open_notebook(browser, lab, "08_explore.ipynb")
    assert kernel_shown(page) == KERNEL
    run_all_cells(page)
    assert errors(model_outputs(page)) == []
    slider = page.locator(".jp-NotebookPanel .widget-slider")
    slider.wait_for(timeout=RUN_TIMEOUT_S * 1000)
    (imp,) = lab.store.glob("imp-*")  # the notebook's IMP run, the one study stored so far
    labels = [f"{s:.1%}" for s in levels(find_runs(imp)).sparsity]
    assert slider.locator(".widget-readout").inner_text() == labels[-1]  # it opens on the sparsest level
    figure = page.locator(".jp-NotebookPanel .widget-output img")
    figure.wait_for()
    first = figure.get_attribute("src")
    slider.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("label => document.querySelector('.jp-NotebookPanel .widget-slider .widget-readout')"
                           ".textContent.trim() === label", arg=labels[-2], timeout=60_000)
    page.wait_for_function("src => { const img = document.querySelector('.jp-NotebookPanel .widget-output img');"
                           " return img && img.src !== src && img.naturalWidth > 100; }", arg=first, timeout=60_000)
    assert page.locator(".jp-NotebookPanel .widget-output img").count() == 1
    screenshot(page, "08_explore")
    page.close()


@pytest.mark.browser
def test_progress_bar_is_a_widget_in_lab(browser, lab):
    """A loop over pgcore's bar shows one updating widget bar in Lab, not lines of text."""
    nb = json.loads((ROOT / "notebooks" / "00_quickstart.ipynb").read_text())
    nb["cells"] = [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                    "source": "import time\nfrom pgcore.progress import bar\n"
                              "for level in bar(range(4), desc='levels'):\n    time.sleep(0.2)"}]
    (lab.notebooks / "progress.ipynb").write_text(json.dumps(nb))
    page = open_notebook(browser, lab, "progress.ipynb")
    run_all_cells(page)
    outputs = model_outputs(page)
    assert errors(outputs) == []
    assert [o["output_type"] for o in outputs[0]] == ["display_data"]  # the widget, no stream of text
    assert "application/vnd.jupyter.widget-view+json" in outputs[0][0]["data"]
    shown = page.locator(".jp-NotebookPanel .jp-OutputArea-output .widget-hprogress")
    assert shown.count() == 1
    row = page.locator(".jp-NotebookPanel .jp-OutputArea-output .widget-hbox").first.inner_text()
    assert "levels" in row and "4/4" in row, row
    page.close()
