"""The command line's ``sweep`` (the chapter's exercise), its progress bars and its argument checks."""
import json
import re

import pytest

from cli import run_cli

NUM_EXAMPLES = 1000  # the chapter's data set
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def steps(batch_size=10, epochs=3):
    return NUM_EXAMPLES // batch_size * epochs


def finished_bar(stream):
    """The ``n/n`` count of a tqdm bar that reached its end, or None."""
    found = re.findall(r'100%\|[^|]*\| (\d+)/(\d+) ', stream)
    return int(found[-1][0]) if found and found[-1][0] == found[-1][1] else None


@pytest.mark.slow
def test_sweep_json_plot(tmp_path):
    plot = tmp_path / 'sweep.png'
    out = run_cli('sweep', '--lrs', '0.001,0.01,0.1,0.5', '--epochs', '3', '--json', '--quiet',
                  '--plot', str(plot)).stdout
    losses = json.loads(out)  # fails on anything but exactly one JSON document
    assert set(losses) == {'0.001', '0.01', '0.1', '0.5'}
    start = 16.0  # about the loss at the chapter's initial w ~ 0, b = 0
    assert losses['0.001'] > start / 2, 'lr 0.001 moves at most 0.3 per coordinate in 300 steps'
    for lr in ('0.01', '0.1', '0.5'):
        assert losses[lr] < losses['0.001']
    for lr in ('0.1', '0.5'):
        assert losses[lr] < 1e-3, f'lr {lr} should fit the line within 3 epochs, as in the chapter'
    assert plot.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_sweep_options_change_the_runs():
    base = ['sweep', '--lrs', '0.1', '--epochs', '1', '--json', '--quiet']
    default = json.loads(run_cli(*base).stdout)['0.1']
    for extra in (['--seed', '1'], ['--batch-size', '20']):
        assert json.loads(run_cli(*base, *extra).stdout)['0.1'] != default, extra


@pytest.mark.slow
def test_sweep_human_output_lists_every_lr():
    out = run_cli('sweep', '--lrs', '0.5,0.02', '--epochs', '1', '--quiet').stdout
    rows = [line.split() for line in out.splitlines()]
    assert [row[0] for row in rows if row and row[0] in ('0.5', '0.02')] == ['0.5', '0.02']


# command line -> does a progress bar run to the end on stderr, and over how many steps?
PROGRESS = [
    (['linreg', '--epochs', '1', '--json'], 2 * steps(epochs=1)),
    (['linreg', '--epochs', '1', '--json', '--quiet'], None),
    (['linreg', '--epochs', '1', '--batch-size', '50'], 2 * steps(batch_size=50, epochs=1)),
    (['sweep', '--lrs', '0.1,0.2', '--epochs', '1', '--json'], 2 * steps(epochs=1)),
    (['sweep', '--lrs', '0.1', '--epochs', '2', '--json'], steps(epochs=2)),
    (['sweep', '--lrs', '0.1', '--epochs', '1', '--json', '--quiet'], None),
]


@pytest.mark.parametrize('args,bar_steps', PROGRESS, ids=[' '.join(a) for a, _ in PROGRESS])
@pytest.mark.slow
def test_progress_bar_on_stderr_only(args, bar_steps):
    proc = run_cli(*args)
    assert finished_bar(proc.stderr) == bar_steps
    assert '%|' not in proc.stdout
    if '--json' in args:
        json.loads(proc.stdout)  # nothing but the JSON on stdout


# arguments -> the option the error message must name
BAD_ARGS = [
    (['sweep', '--lrs', '0.1,abc'], '--lrs'),
    (['sweep', '--lrs', '-0.1'], '--lrs'),
    (['sweep', '--lrs', '0.1,-1'], '--lrs'),
    (['sweep', '--lrs', 'nan'], '--lrs'),
    (['sweep', '--lrs', '0.1,'], '--lrs'),
    (['sweep', '--lrs', '0.1,0.1'], '--lrs'),
    (['sweep', '--epochs', '0'], '--epochs'),
    (['sweep', '--batch-size', 'ten'], '--batch-size'),
    (['linreg', '--lr', '-0.1'], '--lr'),
    (['linreg', '--batch-size', '0'], '--batch-size'),
]


@pytest.mark.parametrize('args,option', BAD_ARGS, ids=[' '.join(a) for a, _ in BAD_ARGS])
@pytest.mark.slow
def test_bad_arguments_are_refused_by_name(args, option):
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2
    assert f'argument {option}:' in proc.stderr
    assert proc.stdout == ''
