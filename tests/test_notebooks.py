"""Every notebook runs top to bottom in a fresh kernel, shows its figures, and is committed
with the outputs that run prints."""
import difflib
import json
import pathlib
import re
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / 'notebooks').glob('*.ipynb'))
CHAPTER = pathlib.Path(__file__).parent.parent / 'notebooks' / 'adam_chapter.ipynb'
CELL_TIMEOUT = 300  # seconds; generous: the whole notebook takes well under a minute
# The notebook is executed once by the module's fixture: one xdist worker runs these tests.
pytestmark = pytest.mark.xdist_group('notebooks')


def kernel_manager(spec_root):
    """A kernel manager whose 'python3' is this interpreter (the venv's), whatever
    kernelspecs the machine or the user has installed."""
    spec = spec_root / 'python3'
    spec.mkdir(parents=True)
    spec.joinpath('kernel.json').write_text(json.dumps({
        'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'Python 3 (tests)', 'language': 'python'}))
    return KernelManager(kernel_name='python3',
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_root)]))


def images(nb):
    return sum('image/png' in out.get('data', {})
               for cell in nb.cells if cell.cell_type == 'code' for out in cell.outputs)


def test_there_are_notebooks():
    assert NOTEBOOKS, 'notebooks/ holds no .ipynb: the test below would be skipped'


@pytest.fixture(scope='module')
def executed(tmp_path_factory):
    """``executed(path)``: the notebook run top to bottom in a fresh kernel, once per module."""
    cache = {}

    def run(path):
        if path not in cache:
            nb = nbformat.read(path, as_version=4)
            for cell in nb.cells:
                if cell.cell_type == 'code':
                    cell.outputs, cell.execution_count = [], None
            km = kernel_manager(tmp_path_factory.mktemp('kernels'))
            # Raises CellExecutionError on the first cell that fails.
            NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, startup_timeout=120,
                           resources={'metadata': {'path': str(path.parent)}}).execute()
            cache[path] = nb
        return cache[path]
    return run


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
@pytest.mark.slow
def test_notebook_runs_and_shows_its_figures(path, executed):
    committed = nbformat.read(path, as_version=4)
    assert images(committed) > 0, f'{path.name} is committed without its figures'
    nb = executed(path)
    code = [cell for cell in nb.cells if cell.cell_type == 'code']
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert images(nb) == images(committed)


def printed(nb):
    return ''.join(out.get('text', '') for cell in nb.cells if cell.cell_type == 'code'
                   for out in cell.outputs if out.get('output_type') == 'stream')


def cell_prints(cell):
    """What a code cell printed (its stream outputs), as one text."""
    return ''.join(out.get('text', '') for out in cell.outputs if out.get('output_type') == 'stream')


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
@pytest.mark.slow
def test_committed_outputs_are_what_a_fresh_run_prints(path, executed):
    """Learners read a notebook where it is hosted, without running it: what each cell prints
    as committed (the source it shows with ``inspect``, the numbers of its figures) is what
    a fresh run prints today. ``make notebooks`` re-executes them in place."""
    committed = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == 'code']
    fresh = [c for c in executed(path).cells if c.cell_type == 'code']
    assert [c.source for c in committed] == [c.source for c in fresh]
    stale = []
    for number, (old, new) in enumerate(zip(committed, fresh, strict=True), 1):
        if cell_prints(old) != cell_prints(new):
            diff = difflib.unified_diff(cell_prints(old).splitlines(), cell_prints(new).splitlines(),
                                        'committed', 'fresh run', lineterm='')
            stale.append(f'code cell {number}:\n' + '\n'.join(diff))
    assert not stale, (f'{path.name} is committed with outputs a fresh run no longer prints '
                       '(make notebooks re-executes it):\n' + '\n'.join(stale))


NUMBER = r'([-+0-9.e]+)'


def number(text, before):
    """The number printed right after ``before`` (a regex) in ``text``."""
    found = re.search(before + r'\s*' + NUMBER, text)
    assert found, f'the notebook no longer prints {before!r}'
    return float(found.group(1))


@pytest.mark.slow
def test_chapter_notebook_prints_its_parity_figures(executed):
    """The printed figures, against what is known without the code under test: the
    dataset's true parameters (the fit to 1000 examples with noise 0.01 lands within
    about 1e-3), Adam's first step (lr * sign(g) for |g| >> epsilon), and float32
    rounding as the only difference between the chapter's adam() and the Trainer."""
    text = printed(executed(CHAPTER))
    for name in (r"chapter's adam\(\)", r"Trainer\('myadam'\)"):
        fit = re.search(name + r'\s+w = \[\s*' + NUMBER + r'\s+' + NUMBER + r'\]\s+b = ' + NUMBER,
                        text)
        assert fit, f'the notebook no longer prints the fit of {name}'
        w1, w2, b = map(float, fit.groups())
        assert abs(w1 - 2.0) < 2e-3 and abs(w2 + 3.4) < 2e-3 and abs(b - 4.2) < 2e-3, fit.group(0)
    assert number(text, r'largest difference in any parameter after any of the 300 steps:') < 1e-5
    for name in (r"chapter's adam\(\)", r"Trainer\('myadam'\)"):
        assert 0.9 < number(text, r'final loss / floor:.*?' + name) < 1.05
    assert number(text, r'corrected first step / lr, measured on MyAdam for g_1 = [0-9.]+:') \
        == pytest.approx(1.0, abs=1e-6)
    # MXNet's own Adam is the 'hat' placement, and far from 'outside' at epsilon = 1.
    assert number(text, r"largest difference, MXNet 'adam' vs MyAdam 'hat':") < 1e-4
    assert number(text, r"largest difference, MXNet 'adam' vs MyAdam 'outside':") > 0.1


@pytest.mark.slow
def test_chapter_notebook_answers_the_four_exercises(executed):
    """d2l.ai's exercises, by what the executed notebook prints (known without the code
    under test: the folding is exact algebra, the written-out loop is the same program,
    Reddi et al. prove Adam goes to the worst point x = +1 and the optimum is -1)."""
    text = printed(executed(CHAPTER))
    assert number(text, r"largest difference from linreg.train_trainer's run:") == 0
    assert number(text, r"largest difference, folded vs the chapter's adam\(\), over 300 steps:") \
        < 1e-5
    for lr in ('0.1', '0.5'):
        constant = number(text, rf"lr {lr}, constant\s+[0-9.]+")
        decayed = number(text, rf"lr {lr}, halved every 100 steps\s+[0-9.]+")
        assert decayed < constant, f'lr {lr}: decay should calm the last epoch'
    assert number(text, r"\nAdam\s+") > 0.9
    assert number(text, r"\nAMSGrad\s+") < -0.9
    assert number(text, r"\nYogi \(epsilon 1e-3\)\s+") < -0.9
    assert 0.9 < number(text, r"Trainer\('myyogi'\):.*?final loss / floor =") < 1.1
    assert number(text, r"MyAdam, lr 0.1\s+") < 2  # the badly scaled problem: Adam wins
    assert number(text, r"MXNet 'sgd', lr 0.015\s+") > 100
