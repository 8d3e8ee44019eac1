"""The command line's ``sweep`` (the chapter's exercise), its progress bars and its argument checks."""
import json
import re
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import adam_plugin
from adam_plugin import options
from adam_plugin.chapter import cli as chapter_cli, exercises, linreg
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
    np.testing.assert_allclose(mom['m'][0], 0.5 * mom['g'][0], rtol=1e-6)
    np.testing.assert_allclose(mom['v'][0], 0.1 * mom['g'][0] ** 2, rtol=1e-5)
    np.testing.assert_allclose(mom['m_hat'], np.array(mom['m']) / (1 - 0.5 ** np.arange(1, 5)),
                               rtol=1e-6)
    np.testing.assert_allclose(mom['v_hat'], np.array(mom['v']) / (1 - 0.9 ** np.arange(1, 5)),
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
    (['linreg', '--optimizer', 'myyogi', '--yogi', '--beta1', '1'], 'Invalid beta1: 1.0'),
    (['sweep', '--epsilon', '0'], 'Invalid epsilon: 0.0'),
    (['linreg', '--epsilon-mode', 'middle'], 'argument --epsilon-mode'),
    (['linreg', '--scales', '1,2,3'], 'argument --scales'),
    (['linreg', '--lr-step', '0'], 'argument --lr-step'),
    (['compare', 'myadam:beta1'], 'argument RUN'),
    (['compare', 'myadam:beta1=2'], 'Invalid beta1: 2'),
    (['moments', '--beta1', '1.5'], 'Invalid beta1: 1.5'),
    # a schedule MXNet's FactorScheduler would refuse with a traceback, or a factor without a step
    (['linreg', '--lr-step', '50', '--lr-factor', '2'],
     'error: Invalid --lr-factor: 2.0 (expected in (0, 1])'),
    (['sweep', '--lr-step', '50', '--lr-factor', 'nan'],
     'error: Invalid --lr-factor: nan (expected in (0, 1], not NaN)'),
    (['linreg', '--lr-factor', '0.5'], 'error: --lr-factor needs --lr-step'),
    (['sweep', '--lr-factor', '0.5'], 'error: --lr-factor needs --lr-step'),
    (['compare', 'myadam:lr_step=50,lr_factor=2'],
     "error: RUN 'myadam:lr_step=50,lr_factor=2': Invalid lr_factor: 2 (expected in (0, 1])"),
    (['compare', 'myadam:lr_step=0'], "error: RUN 'myadam:lr_step=0': Invalid lr_step: 0"),
    (['compare', 'myadam:lr_factor=0.5'],
     "error: RUN 'myadam:lr_factor=0.5': lr_factor needs lr_step"),
    # MXNet's name of the learning rate, and a flag spelt with MyAdam's underscore
    (['linreg', '--learning-rate', '0.1'],
     'error: unrecognized arguments: --learning-rate 0.1; for --learning-rate use --lr\n'),
    (['sweep', '--learning_rate=0.1'], 'for --learning_rate use --lrs\n'),
    (['compare', 'myadam', '--learning-rate', '0.1'],
     'for --learning-rate use learning_rate in each RUN (myadam:learning_rate=0.1)\n'),
    (['linreg', '--epsilon_mode', 'hat'], '; did you mean --epsilon-mode?\n'),
    (['sweep', '--lr-scheduler', 'x'], '; for --lr-scheduler use --lr-step and --lr-factor\n'),
]


@pytest.mark.parametrize('args,message', BAD_OPTIONS, ids=[' '.join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_refused_before_training(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        chapter_cli.main(args + ['--quiet'] if args[0] not in ('moments',) else args)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ''


@pytest.mark.parametrize('command, args', [
    ('linreg', ['--plot']), ('linreg', ['--plot-diff']), ('sweep', ['--plot']),
    ('compare', ['myadam', '--plot']), ('moments', ['--plot']), ('first-steps', ['--plot']),
    ('reddi', ['--plot'])])
def test_a_figure_into_a_missing_directory_is_refused_before_anything_runs(command, args,
                                                                            tmp_path, capsys):
    figure = tmp_path / 'missing' / 'figure.png'
    with pytest.raises(SystemExit) as exit_:
        chapter_cli.main([command, *args, str(figure)])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ''
    assert (f"error: argument {args[-1]}: '{figure}': there is no directory "
            f"'{figure.parent}'\n") in captured.err
    assert not figure.parent.exists()


def test_moments_prints_mxnets_m_and_v(capsys):
    """MyAdam's letters (m, v), as in every page but the chapter's own code (v, s)."""
    assert chapter_cli.main(['moments', '--steps', '3', '--beta1', '0.5', '--beta2', '0.9']) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ['step', 't', 'g_t', 'm_t', 'm_hat_t', 'v_t', 'v_hat_t']
    t, g, m, m_hat, v, v_hat = map(float, rows[0].split())  # printed to 3 or 4 decimals
    assert t == 1 and m_hat == g and v_hat == pytest.approx(g * g, abs=3e-3)
    assert m == pytest.approx(0.5 * g, abs=1e-3) and v == pytest.approx(0.1 * g * g, abs=2e-4)


# A Python without the chapter extra's packages, running the command line.
WITHOUT_CHAPTER_EXTRA = '''
import runpy, sys

class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in ('matplotlib', 'tqdm'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)

sys.meta_path.insert(0, Missing())
sys.argv[0] = 'adam_plugin'
runpy.run_module('adam_plugin', run_name='__main__')
'''

# command line -> the packages of the chapter extra it needs
NEEDS_THE_EXTRA = [
    (['linreg', '--epochs', '1'], 'tqdm'),
    (['compare', 'myadam', '--epochs', '1', '--quiet'], 'tqdm'),
    (['moments', '--steps', '3', '--plot', 'moments.png'], 'matplotlib'),
    (['sweep', '--lrs', '0.1', '--epochs', '1', '--plot', 'sweep.png'], 'tqdm and matplotlib'),
]


def run_without_the_chapter_extra(args, cwd):
    return subprocess.run([sys.executable, '-c', WITHOUT_CHAPTER_EXTRA, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('args, needed', NEEDS_THE_EXTRA,
                         ids=[' '.join(a) for a, _ in NEEDS_THE_EXTRA])
def test_without_the_chapter_extra_a_command_names_it_in_one_line(args, needed, tmp_path):
    done = run_without_the_chapter_extra(args, tmp_path)
    assert (done.returncode, done.stdout) == (2, '')
    assert done.stderr == (f"python -m adam_plugin {args[0]}: error: this command needs "
                           f"{needed}, from adam_plugin's chapter extra: "
                           "pip install 'adam_plugin[chapter]'\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # Python processes that import MXNet and run
@pytest.mark.parametrize('args', [['moments', '--steps', '3'], ['first-steps'],
                                  ['reddi', '--steps', '30']], ids=' '.join)
def test_without_the_chapter_extra_the_commands_without_a_figure_run(args, tmp_path):
    done = run_without_the_chapter_extra(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) > 2


# --- The optimizer's flags come from the option table ---------------------------------------

# MyAdam's options that the chapter's commands take by flags of their own (MXNet's name of
# the learning rate gets a hint: BAD_OPTIONS above).
OWN_FLAGS = {'learning_rate': {'linreg': ['--lr'], 'sweep': ['--lrs']},
             'lr_scheduler': {'linreg': ['--lr-step', '--lr-factor'],
                              'sweep': ['--lr-step', '--lr-factor']}}

# every other option -> its flag with a value that is not MyAdam's default, and that value as
# the optimizer keeps it after the run
OPTION_FLAGS = {
    'beta1': (['--beta1', '0.5'], 0.5),
    'beta2': (['--beta2', '0.9'], 0.9),
    'epsilon': (['--epsilon', '1e-3'], 1e-3),
    'epsilon_mode': (['--epsilon-mode', 'hat'], 'hat'),
    'amsgrad': (['--amsgrad'], True),
    'decoupled_wd': (['--decoupled-wd'], True),
    'lazy_update': (['--no-lazy-update'], False),
    'nonfinite': (['--nonfinite', 'raise'], 'raise'),
    'fused': (['--no-fused'], False),
    'yogi': (['--yogi'], True),
    'max_skips': (['--max-skips', 'None'], None),
    'wd': (['--wd', '0.01'], 0.01),
    'rescale_grad': (['--rescale-grad', '2'], 2.0 / 100),  # Trainer.step(100) divides it
    'clip_gradient': (['--clip-gradient', '0.5'], 0.5),
    'multi_precision': (['--multi-precision'], True),
}


def help_text(capsys, command):
    with pytest.raises(SystemExit):
        chapter_cli.main([command, '--help'])
    return capsys.readouterr().out


@pytest.mark.parametrize('command', ['linreg', 'sweep'])
def test_every_option_of_the_table_has_a_flag(command, capsys):
    names = [option.name for option in options.OPTIONS]
    assert sorted(OWN_FLAGS.keys() | OPTION_FLAGS.keys()) == sorted(names)
    flags = set(re.findall(r'(--[a-z][\w-]*)', help_text(capsys, command)))
    for name in names:
        default = next(o.default for o in options.OPTIONS if o.name == name)
        wanted = (OWN_FLAGS[name][command] if name in OWN_FLAGS else
                  ['--' + name.replace('_', '-')]
                  + (['--no-' + name.replace('_', '-')] if type(default) is bool else []))
        assert set(wanted) <= flags, name


@pytest.fixture
def trainers(monkeypatch):
    """Each ``gluon.Trainer`` made while the test runs, in order."""
    made = []

    class Recorded(mx.gluon.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(mx.gluon, 'Trainer', Recorded)
    return made


@pytest.mark.parametrize('name', OPTION_FLAGS)
@pytest.mark.parametrize('command', ['linreg', 'sweep'])
def test_each_option_flag_reaches_the_optimizer(command, name, trainers, capsys):
    flags, value = OPTION_FLAGS[name]
    key = next(o.key for o in options.OPTIONS if o.name == name)
    cli_json(capsys, command, *QUICK, *flags, *(['--lrs', '0.1'] if command == 'sweep' else []))
    (trainer,) = trainers
    assert isinstance(trainer.optimizer, adam_plugin.MyAdam)
    assert getattr(trainer.optimizer, key) == value
    assert getattr(adam_plugin.MyAdam(), key) != value, 'the default: the test would be empty'


# command -> a flag with a bad word, and the value MyAdam is given for it: the command says
# what MyAdam says of that value, as an error of the flag
BAD_VALUES = [
    ('linreg', '--beta1', '1.5', 1.5),
    ('sweep', '--beta2', '-0.1', -0.1),
    ('linreg', '--epsilon', '0', 0.0),
    ('sweep', '--epsilon', 'inf', float('inf')),
    ('linreg', '--epsilon-mode', 'middle', 'middle'),
    ('linreg', '--nonfinite', 'ignore', 'ignore'),
    ('sweep', '--max-skips', '0', 0),
    ('linreg', '--max-skips', '2.5', '2.5'),
    ('linreg', '--wd', 'nan', float('nan')),
    ('sweep', '--rescale-grad', '0', 0.0),
    ('linreg', '--clip-gradient', '-1', -1.0),
    ('linreg', '--clip-gradient', 'none', 'none'),
    ('linreg', '--lr', '-0.1', -0.1),
    ('sweep', '--lrs', '0.1,1e400', float('inf')),
    ('moments', '--beta2', '1', 1.0),
    ('first-steps', '--epsilon', '0', 0.0),
]


@pytest.mark.parametrize('command, flag, word, value', BAD_VALUES,
                         ids=[f'{c} {f} {w}' for c, f, w, _ in BAD_VALUES])
def test_a_bad_value_is_refused_with_myadams_message(command, flag, word, value, capsys):
    name = {'--lr': 'learning_rate', '--lrs': 'learning_rate'}.get(flag, flag[2:].replace('-', '_'))
    with pytest.raises(ValueError) as refused:
        adam_plugin.MyAdam(**{name: value})
    with pytest.raises(SystemExit) as exit_:
        chapter_cli.main([command, flag, word])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.endswith(f': error: argument {flag}: {refused.value}\n')
    assert captured.out == ''


@pytest.mark.parametrize('command', ['linreg', 'sweep', 'compare', 'moments', 'first-steps',
                                     'reddi'])
def test_help_has_a_description_and_an_example(command, capsys):
    with pytest.raises(SystemExit):
        chapter_cli.main([command, '--help'])
    text = capsys.readouterr().out
    assert f'python -m adam_plugin {command} ' in text.split('example:')[1]
    description = text.split('\n\n')[1]
    assert len(description.split()) > 8 and '``' not in text
