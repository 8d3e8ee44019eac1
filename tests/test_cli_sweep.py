"""The command line's ``sweep`` (the chapter's exercise), its progress bars and its argument checks."""
import json
import re

import numpy as np

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
    # a batch size that does not divide the 1000 examples: the last batch is short
    (['linreg', '--epochs', '1', '--json', '--batch-size', '7'], 2 * 143),
    (['linreg', '--epochs', '1', '--json', '--batch-size', '300', '--folded'], 3 * 4),
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


# --- Every flag, in process: the run equals the library's with the option it names ----------

from adam_plugin.chapter import cli as chapter_cli, exercises, linreg  # noqa: E402

QUICK = ['--epochs', '1', '--batch-size', '100', '--quiet', '--json']


def cli_json(capsys, *args):
    assert chapter_cli.main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def library_loss(lr=0.1, optimizer='myadam', scales=None, **options):
    features, labels = linreg.make_dataset(seed=0)
    if scales:
        features = exercises.badly_scaled(features, scales)
    step = options.pop('lr_step', None)
    if step:
        options['lr_scheduler'] = exercises.decay_schedule(lr, step, options.pop('lr_factor'))
    return linreg.train_trainer(features, labels, lr=lr, batch_size=100, num_epochs=1,
                                optimizer=optimizer, optimizer_params=options).loss


# flags -> the library call they stand for
FLAGS = [
    (['--beta1', '0.5'], dict(beta1=0.5)),
    (['--beta2', '0.9'], dict(beta2=0.9)),
    (['--epsilon', '0.3'], dict(epsilon=0.3)),
    (['--epsilon-mode', 'inside', '--epsilon', '0.3'], dict(epsilon_mode='inside', epsilon=0.3)),
    (['--epsilon-mode', 'hat', '--epsilon', '0.3'], dict(epsilon_mode='hat', epsilon=0.3)),
    (['--wd', '0.5'], dict(wd=0.5)),
    (['--amsgrad', '--beta2', '0.5'], dict(amsgrad=True, beta2=0.5)),
    (['--decoupled-wd', '--wd', '0.5'], dict(decoupled_wd=True, wd=0.5)),
    (['--yogi'], dict(yogi=True)),
    (['--lr-step', '3', '--lr-factor', '0.2'], dict(lr_step=3, lr_factor=0.2)),
    (['--lr-step', '3'], dict(lr_step=3, lr_factor=0.5)),
    (['--optimizer', 'myyogi'], dict(optimizer='myyogi')),
    (['--optimizer', 'sgd', '--lr', '0.05'], dict(optimizer='sgd', lr=0.05)),
    (['--scales', '10,0.5'], dict(scales=(10.0, 0.5))),
]


@pytest.mark.parametrize('flags,library', FLAGS, ids=[' '.join(f) for f, _ in FLAGS])
@pytest.mark.parametrize('command', ['linreg', 'sweep'])
def test_each_flag_reaches_the_run(command, flags, library, capsys):
    lr = library.get('lr', 0.1)
    flags = list(flags)
    if command == 'sweep' and '--lr' in flags:
        flags[flags.index('--lr')] = '--lrs'
    got = cli_json(capsys, command, *QUICK, *flags)
    loss = got['loss'] if command == 'linreg' else got[str(lr)]
    want = library_loss(**library)
    assert loss == want
    assert loss != library_loss(lr=lr), 'no change from the defaults: the test would be empty'


def test_linreg_folded_and_plot_diff(capsys, tmp_path):
    plot = tmp_path / 'diff.png'
    got = cli_json(capsys, 'linreg', *QUICK, '--folded', '--plot-diff', str(plot))
    assert got['max_abs_diff_folded'] <= 1e-5  # exercise 2: the same trajectory
    assert plot.read_bytes()[:8] == PNG_MAGIC


def test_compare_runs_each_spec(capsys, tmp_path):
    plot = tmp_path / 'compare.png'
    got = cli_json(capsys, 'compare', *QUICK, '--plot', str(plot), 'myadam',
                   'myadam:learning_rate=0.5,lr_step=3,lr_factor=0.2',
                   'myadam:epsilon_mode=hat,epsilon=0.3', 'sgd:learning_rate=0.05')
    assert got == {
        'myadam': library_loss(),
        'myadam:learning_rate=0.5,lr_step=3,lr_factor=0.2':
            library_loss(lr=0.5, lr_step=3, lr_factor=0.2),
        'myadam:epsilon_mode=hat,epsilon=0.3': library_loss(epsilon_mode='hat', epsilon=0.3),
        'sgd:learning_rate=0.05': library_loss(lr=0.05, optimizer='sgd')}
    assert plot.read_bytes()[:8] == PNG_MAGIC
    scaled = cli_json(capsys, 'compare', *QUICK, '--scales', '10,0.5', 'myadam')
    assert scaled == {'myadam': library_loss(scales=(10.0, 0.5))}


@pytest.mark.slow
def test_moments_first_steps_and_reddi(capsys, tmp_path):
    mom = cli_json(capsys, 'moments', '--json', '--steps', '4', '--beta1', '0.5', '--beta2', '0.9')
    np.testing.assert_allclose(mom['v'][0], 0.5 * mom['g'][0], rtol=1e-6)
    np.testing.assert_allclose(mom['s'][0], 0.1 * mom['g'][0] ** 2, rtol=1e-5)
    np.testing.assert_allclose(mom['s_hat'], np.array(mom['s']) / (1 - 0.9 ** np.arange(1, 5)),
                               rtol=1e-6)
    steps = cli_json(capsys, 'first-steps', '--json', '--epsilon', '1e-4')
    g = np.array(steps['g'])
    np.testing.assert_allclose(steps['outside'], g / (g + 1e-4), rtol=1e-4)
    np.testing.assert_allclose(steps['inside'], g / np.sqrt(g ** 2 + 1e-4), rtol=1e-4)
    ends = cli_json(capsys, 'reddi', '--json', '--steps', '300')
    assert ends['Adam'] > 0.9  # Reddi et al.: Adam goes to the worst point
    assert ends['AMSGrad'] < -0.9 and ends['Yogi (epsilon 1e-3)'] < -0.9
    for command in ('moments', 'first-steps', 'reddi'):
        plot = tmp_path / f'{command}.png'
        assert chapter_cli.main([command, '--steps', '3', '--plot', str(plot)]
                                if command != 'first-steps' else [command, '--plot', str(plot)]) == 0
        assert plot.read_bytes()[:8] == PNG_MAGIC
    capsys.readouterr()


# arguments -> the option the error message must name (in process: argparse exits with 2)
BAD_OPTIONS = [
    (['linreg', '--beta2', '1'], 'Invalid beta2: 1.0'),
    (['linreg', '--optimizer', 'sgd', '--beta1', '0.5'], "optimizer 'sgd'"),
    (['linreg', '--optimizer', 'myyogi', '--yogi'], 'Invalid yogi'),
    (['sweep', '--epsilon', '0'], 'Invalid epsilon: 0.0'),
    (['linreg', '--epsilon-mode', 'middle'], 'argument --epsilon-mode'),
    (['linreg', '--scales', '1,2,3'], 'argument --scales'),
    (['linreg', '--lr-step', '0'], 'argument --lr-step'),
    (['compare', 'myadam:beta1'], 'argument RUN'),
    (['compare', 'myadam:beta1=2'], 'Invalid beta1: 2'),
    (['moments', '--beta1', '1.5'], 'Invalid beta1: 1.5'),
]


@pytest.mark.parametrize('args,message', BAD_OPTIONS, ids=[' '.join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_refused_before_training(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        chapter_cli.main(args + ['--quiet'] if args[0] not in ('moments',) else args)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ''


@pytest.mark.parametrize('command', ['linreg', 'sweep', 'compare', 'moments', 'first-steps',
                                     'reddi'])
def test_help_has_a_description_and_an_example(command, capsys):
    with pytest.raises(SystemExit):
        chapter_cli.main([command, '--help'])
    text = capsys.readouterr().out
    assert f'python -m adam_plugin {command} ' in text.split('example:')[1]
    description = text.split('\n\n')[1]
    assert len(description.split()) > 8 and '``' not in text
