"""Every notebook runs top to bottom in a fresh kernel and shows its figures."""
import json
import pathlib
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / 'notebooks').glob('*.ipynb'))
CELL_TIMEOUT = 300  # seconds; generous: the whole notebook takes well under a minute


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


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
@pytest.mark.slow
def test_notebook_runs_and_shows_its_figures(path, tmp_path):
    committed = nbformat.read(path, as_version=4)
    assert images(committed) > 0, f'{path.name} is committed without its figures'
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == 'code':
            cell.outputs, cell.execution_count = [], None
    km = kernel_manager(tmp_path / 'kernels')
    # Raises CellExecutionError on the first cell that fails.
    NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, startup_timeout=120,
                   resources={'metadata': {'path': str(path.parent)}}).execute()
    code = [cell for cell in nb.cells if cell.cell_type == 'code']
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert images(nb) == images(committed)
