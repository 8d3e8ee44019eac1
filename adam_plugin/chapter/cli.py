"""Command line: the chapter's experiment, its exercises, and every figure of the notebook.

``python -m adam_plugin linreg [--lr 0.1] [optimizer options] [--json] [--plot FILE]``
``python -m adam_plugin sweep [--lrs 0.001,0.01,0.1,0.5] [optimizer options] ...``
``python -m adam_plugin compare RUN [RUN ...]``, ``moments``, ``first-steps``, ``reddi``

The training commands show a progress bar on stderr unless ``--quiet``; with
``--json`` stdout holds exactly one JSON object. ``python -m adam_plugin COMMAND --help``
describes each command, with an example. Every argument is checked before anything is
trained: a bad one ends the command with argparse's usage and an error naming it.
The progress bar (tqdm) and the figures (matplotlib) come with adam_plugin's
``chapter`` extra; without it, a command that needs them says so and what to install.
"""
__all__ = ['main']

import argparse
import ast
import difflib
import importlib
import json
import math
import os
import re
import sys

import numpy as np

from .. import options
from ..textbook import EPSILON_MODES


def _number(text, ok, expected):
    """``float(text)`` if ``ok`` of it (NaN fails every comparison), else an argparse error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f'{text!r} is not {expected}')
    return value


def _checked(check, name, kind):
    """An argparse type: the word read as ``kind`` (``'None'`` as None; a word that is not
    a ``kind`` as itself, a string), checked by ``check`` of :mod:`adam_plugin.options`
    under ``name``, whose message is the argparse error."""
    def read(text):
        value = None if text == 'None' else text
        try:
            value = kind(text)
        except ValueError:
            pass
        try:
            return check(name, value)
        except options.InvalidOption as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return read


_learning_rate = _checked(options.LEARNING_RATE, 'learning_rate', float)


def _positive(text):
    """argparse type: a finite number > 0."""
    return _number(text, lambda x: 0.0 < x < math.inf, '> 0')


def _png(text):
    """argparse type: a file to write in a directory that exists."""
    folder = os.path.dirname(text) or '.'
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f'{text!r}: there is no directory {folder!r}')
    return text


def _learning_rates(text):
    """argparse type: comma-separated learning rates, no repeats."""
    lrs = [_learning_rate(item.strip()) for item in text.split(',')]
    if len(set(lrs)) != len(lrs):
        raise argparse.ArgumentTypeError(f'{text!r} repeats a learning rate')
    return lrs


def _scales(text):
    """argparse type: one factor > 0 per feature of the chapter's data (two)."""
    scales = [_positive(item.strip()) for item in text.split(',')]
    if len(scales) != 2:
        raise argparse.ArgumentTypeError(f'{text!r} is not two factors (one per feature)')
    return scales


def _positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r} is not >= 1')
    return value


def _run_spec(text):
    """argparse type of ``compare``: ``OPTIMIZER[:key=value,...]`` as ``(name, keywords)``.

    Values are Python literals (``0.1``, ``True``, ``'hat'`` or plain ``hat``).
    """
    name, _, rest = text.partition(':')
    keywords = {}
    for item in filter(None, (part.strip() for part in rest.split(','))):
        key, eq, value = item.partition('=')
        if not eq or not key.strip().isidentifier():
            raise argparse.ArgumentTypeError(f'{text!r}: {item!r} is not key=value')
        try:
            keywords[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            keywords[key.strip()] = value.strip()
    if not name.strip():
        raise argparse.ArgumentTypeError(f'{text!r} names no optimizer')
    return text, name.strip(), keywords


# The options of the table (adam_plugin.options.OPTIONS) that the training commands take
# in their own way, by command: the learning rate is the experiment's (linreg gives --lr to
# the chapter's adam() too, sweep takes a list), its schedule is MXNet's FactorScheduler.
# Every other option is a flag of linreg and sweep named after it (epsilon_mode:
# --epsilon-mode); a flag named after one of these gets a hint to what the command takes.
CHAPTER_FLAGS = {
    'learning_rate': {'linreg': '--lr', 'sweep': '--lrs',
                      'compare': "learning_rate in each RUN (myadam:learning_rate=0.1)"},
    'lr_scheduler': {'linreg': '--lr-step and --lr-factor', 'sweep': '--lr-step and --lr-factor',
                     'compare': "lr_step and lr_factor in each RUN (myadam:lr_step=100)"},
}

# An option's type (its first word in the table) -> how its flag reads a word.
_KINDS = {'float': float, 'int': int}


def _add_flag(parser, name, defaulted=False):
    """Add to ``parser`` the flag of the option ``name`` of the table: its name, its type,
    its check, the first sentence of its doc and its default in MyAdam as the help.
    The args hold the option when the flag is given, or with ``defaulted`` its default."""
    option = next(option for option in options.OPTIONS if option.name == name)
    text = f"{_summary(option.doc)}. MyAdam: {option.default!r}".replace('%', '%%')
    kwargs = dict(dest=option.name, help=text,
                  default=option.default if defaulted else argparse.SUPPRESS)
    kind = option.type.split()[0]
    choices = getattr(option.check, 'choices', None)
    if kind == 'bool':
        kwargs.update(action=argparse.BooleanOptionalAction)
    elif choices:
        kwargs.update(type=_checked(option.check, option.name, str),
                      metavar='{' + ','.join(choices) + '}')
    elif kind in _KINDS:
        kwargs.update(type=_checked(option.check, option.name, _KINDS[kind]),
                      metavar=kind.upper() + ('|None' if option.type.endswith(' or None') else ''))
    else:
        raise TypeError(f"the command line cannot read option {option.name!r} of type "
                        f"{option.type!r}: give its type a kind or it a row in CHAPTER_FLAGS")
    parser.add_argument('--' + option.name.replace('_', '-'), **kwargs)


def _summary(doc):
    """An option's doc as plain text, up to the end of its first sentence or clause (a
    period or a colon outside parentheses)."""
    text = re.sub(r':\w+:`([^`]*)`', r'\1', doc).replace('``', '')  # reST roles, code
    depth = 0
    for i, char in enumerate(text):
        depth = max(depth + (char == '(') - (char == ')'), 0)  # [0, 1) closes nothing
        if depth == 0 and text.startswith(('. ', ': '), i):
            return text[:i]
    return text.rstrip('.')


def _optimizer_parser():
    """The flags shared by linreg and sweep: the optimizer, its options, a schedule, the data."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group(
        'optimizer', "MyAdam's options, checked as MyAdam checks them (python -m pydoc\n"
                     "adam_plugin.MyAdam describes each); only those given reach --optimizer.")
    group.add_argument('--optimizer', default='myadam',
                       help="any registered MXNet optimizer: myadam (default), myyogi, "
                            "adam, sgd, ...")
    for option in options.OPTIONS:
        if option.name not in CHAPTER_FLAGS:
            _add_flag(group, option.name)
    group.add_argument('--lr-step', type=_positive_int, metavar='N',
                       help="multiply the learning rate by --lr-factor every N steps "
                            "(MXNet's FactorScheduler)")
    group.add_argument('--lr-factor', type=float,
                       help="with --lr-step: in (0, 1], default 0.5")
    parser.add_argument('--scales', type=_scales, metavar='A,B',
                        help="multiply the two features by A and B (a badly scaled problem; "
                             "the true weights become 2/A, -3.4/B)")
    return parser


def _optimizer_params(args, lr):
    """``optimizer_params`` for one run at ``lr``: the options given (only those, so that an
    optimizer without them, 'sgd', runs), a fresh scheduler."""
    params = {o.name: getattr(args, o.name) for o in options.OPTIONS if hasattr(args, o.name)}
    try:
        schedule = _schedule(lr, args.lr_step, args.lr_factor)
    except ValueError as err:
        args.parser.error(str(err))
    if schedule:
        params['lr_scheduler'] = schedule
    return params


def _schedule(lr, step, factor, names=('--lr-step', '--lr-factor')):
    """MXNet's FactorScheduler: ``lr`` times ``factor`` (default 0.5) every ``step``
    updates; None if neither is given. ``ValueError`` for a factor without a step, and
    for a step or factor that MyAdam refuses in a FactorScheduler (their checks in
    :mod:`adam_plugin.options`), naming them as ``names`` says."""
    if step is None and factor is None:
        return None
    if step is None:
        raise ValueError(f"{names[1]} needs {names[0]}, the number of updates between decays")
    import mxnet as mx

    from . import exercises
    fields = options.SCHEDULER_FIELDS[mx.lr_scheduler.FactorScheduler]
    return exercises.decay_schedule(lr, fields['step'](names[0], step),
                                    fields['factor'](names[1], 0.5 if factor is None else factor))


def _check_optimizer(parser, name, params):
    """Make the optimizer once, so a bad option fails before training, by its name."""
    import mxnet as mx

    from .. import optimizer  # noqa: F401  (registers 'myadam', 'myyogi')
    try:
        mx.optimizer.create(name, **params)
    except (ValueError, TypeError) as err:
        parser.error(f'optimizer {name!r}: {err}')


def _data(args):
    from . import exercises, linreg
    features, labels = linreg.make_dataset(seed=args.seed)
    if getattr(args, 'scales', None):
        features = exercises.badly_scaled(features, args.scales)
    return features, labels


def _progress(args, features, num_runs):
    """A tqdm bar on stderr counting the optimizer steps of ``num_runs`` runs."""
    from tqdm import tqdm

    from .linreg import num_steps
    return tqdm(total=num_runs * num_steps(features, args.batch_size, args.epochs),
                desc=args.command, unit='step', file=sys.stderr, disable=args.quiet)


def _linreg(args):
    from . import exercises, linreg
    _check_optimizer(args.parser, args.optimizer,
                     dict(_optimizer_params(args, args.lr), learning_rate=args.lr))
    features, labels = _data(args)
    with _progress(args, features, num_runs=2 + args.folded) as bar:
        kw = dict(batch_size=args.batch_size, lr=args.lr, num_epochs=args.epochs,
                  seed=args.seed, on_step=bar.update)
        ref = linreg.train_reference(features, labels, **kw)
        ours = linreg.train_trainer(features, labels, optimizer=args.optimizer,
                                    optimizer_params=_optimizer_params(args, args.lr), **kw)
        folded = (linreg.train_reference(features, labels, update=exercises.adam_folded, **kw)
                  if args.folded else None)
    diff = float(np.abs(ref.trace - ours.trace).max())
    label = f"Trainer {args.optimizer!r}"
    if args.plot or args.plot_diff:
        from . import plots
    if args.plot:
        plots.save(plots.loss_curves({"chapter's adam()": ref, label: ours},
                                     title=f'lr={args.lr}, batch size {args.batch_size}'),
                   args.plot)
    if args.plot_diff:
        traces = {f"{label} - chapter's adam()": ours.trace}
        if folded:
            traces["folded - chapter's adam()"] = folded.trace
        plots.save(plots.differences(traces, ref.trace, title='Difference from the chapter'),
                   args.plot_diff)
    if args.json:
        result = {'w': ours.w.tolist(), 'b': ours.b, 'loss': ours.loss, 'max_abs_diff': diff}
        if folded:
            result['max_abs_diff_folded'] = float(np.abs(ref.trace - folded.trace).max())
        print(json.dumps(result))
        return
    print(f"w: {np.array2string(ours.w, precision=6)}  (true {list(linreg.TRUE_W)}"
          f"{' before --scales' if args.scales else ''})")
    print(f"b: {ours.b:.6f}  (true {linreg.TRUE_B})")
    print(f"final loss: {ours.loss:.6g}")
    print(f"largest parameter difference, {label} vs the chapter's adam(), "
          f"over {len(ours.trace)} steps: {diff:.3g}")
    if folded:
        print(f"largest parameter difference, folded adam() vs the chapter's adam(): "
              f"{np.abs(ref.trace - folded.trace).max():.3g}")
    for path in (args.plot, args.plot_diff):
        if path:
            print(f"wrote {path}")


def _sweep(args):
    from . import linreg
    for lr in args.lrs:
        _check_optimizer(args.parser, args.optimizer,
                         dict(_optimizer_params(args, lr), learning_rate=lr))
    features, labels = _data(args)
    with _progress(args, features, num_runs=len(args.lrs)) as bar:
        runs = {lr: linreg.train_trainer(features, labels, lr=lr, batch_size=args.batch_size,
                                         num_epochs=args.epochs, seed=args.seed,
                                         optimizer=args.optimizer,
                                         optimizer_params=_optimizer_params(args, lr),
                                         on_step=bar.update)
                for lr in args.lrs}
    if args.plot:
        from . import plots
        plots.save(plots.loss_curves({f'lr = {lr:g}': run for lr, run in runs.items()},
                                     title=f"Trainer {args.optimizer!r}, batch size "
                                           f"{args.batch_size}"), args.plot)
    if args.json:
        print(json.dumps({str(lr): run.loss for lr, run in runs.items()}))
        return
    print(f"Trainer {args.optimizer!r}, batch size {args.batch_size}, {args.epochs} epochs "
          f"(true w {list(linreg.TRUE_W)}, b {linreg.TRUE_B})")
    print(f"{'lr':>8}  {'final loss':>11}  {'w':>22}  {'b':>9}")
    for lr, run in runs.items():
        print(f"{lr:>8g}  {run.loss:>11.4g}  {np.array2string(run.w, precision=5):>22}  "
              f"{run.b:>9.5f}")
    if args.plot:
        print(f"wrote {args.plot}")


def _compare_params(parser, label, keywords):
    """``compare``'s options of one run: ``learning_rate`` and ``lr_step``/``lr_factor`` apart."""
    keywords = dict(keywords)
    lr = keywords.pop('learning_rate', 0.1)
    try:
        schedule = _schedule(lr, keywords.pop('lr_step', None), keywords.pop('lr_factor', None),
                             names=('lr_step', 'lr_factor'))
    except ValueError as err:
        parser.error(f'RUN {label!r}: {err}')
    if schedule:
        keywords['lr_scheduler'] = schedule
    return lr, keywords


def _compare(args):
    from . import linreg
    for label, name, keywords in args.runs:
        lr, params = _compare_params(args.parser, label, keywords)
        _check_optimizer(args.parser, name, dict(params, learning_rate=lr))
    features, labels = _data(args)
    floor = linreg.noise_floor(*linreg.make_dataset(seed=args.seed))
    runs = {}
    with _progress(args, features, num_runs=len(args.runs)) as bar:
        for label, name, keywords in args.runs:
            lr, params = _compare_params(args.parser, label, keywords)
            runs[label] = linreg.train_trainer(
                features, labels, lr=lr, batch_size=args.batch_size, num_epochs=args.epochs,
                seed=args.seed, optimizer=name, optimizer_params=params, on_step=bar.update)
    if args.plot:
        from . import plots
        plots.save(plots.loss_curves({k: r for k, r in runs.items() if np.isfinite(r.loss)},
                                     title=f'batch size {args.batch_size}'), args.plot)
    if args.json:
        print(json.dumps({label: run.loss for label, run in runs.items()}))
        return
    print(f"noise floor {floor:.4g}")
    print(f"{'run':<40} {'final loss / floor':>19} {'loss < 2 floors at epoch':>25}")
    for label, run in runs.items():
        epoch = run.first_epoch_below(2 * floor)
        print(f"{label:<40} {run.loss / floor:>19.4g} "
              f"{'never' if epoch is None else f'{epoch:.2f}':>25}")
    if args.plot:
        print(f"wrote {args.plot}")


def _moments(args):
    from . import probes
    grads = np.random.default_rng(args.seed).normal(loc=1.0, scale=0.5, size=args.steps)
    mom = probes.moments(grads, beta1=args.beta1, beta2=args.beta2)
    if args.plot:
        from . import plots
        plots.save(plots.bias_correction(grads, mom, args.beta1, args.beta2, mean=1.0,
                                         letters=('m', 'v')), args.plot)
    # MyAdam's names m, v (the rest of the docs' too) for the chapter's v, s (probes.Moments)
    table = {'m': mom.v, 'm_hat': mom.v_hat, 'v': mom.s, 'v_hat': mom.s_hat}
    if args.json:
        print(json.dumps({'g': grads.tolist(), **{k: c.tolist() for k, c in table.items()}}))
        return
    print(f"{'step t':>6}  {'g_t':>7}  {'m_t':>7}  {'m_hat_t':>7}  {'v_t':>8}  {'v_hat_t':>7}")
    for t, row in enumerate(zip(grads, *table.values(), strict=True), start=1):
        print(f"{t:>6}  {row[0]:>7.3f}  {row[1]:>7.3f}  {row[2]:>7.3f}  {row[3]:>8.4f}  "
              f"{row[4]:>7.3f}")
    if args.plot:
        print(f"wrote {args.plot}")


def _first_steps(args):
    from . import probes
    grads = np.logspace(-12, 1, 79)
    sizes = {mode: probes.first_step(grads, epsilon=args.epsilon, epsilon_mode=mode)
             for mode in EPSILON_MODES}
    if args.plot:
        from . import plots
        plots.save(plots.first_steps(grads, sizes, title=f"MyAdam's first step, epsilon = "
                                                         f"{args.epsilon:g}"), args.plot)
    if args.json:
        print(json.dumps({'g': grads.tolist(), **{m: s.tolist() for m, s in sizes.items()}}))
        return
    print(f"{'|g_1|':>9}  " + "  ".join(f"{mode:>9}" for mode in EPSILON_MODES))
    for i in range(0, len(grads), 6):
        print(f"{grads[i]:>9.2g}  " + "  ".join(f"{sizes[m][i]:>9.3g}" for m in EPSILON_MODES))
    if args.plot:
        print(f"wrote {args.plot}")


def _reddi(args):
    from . import exercises
    paths = {'Adam': exercises.reddi(args.steps),
             'AMSGrad': exercises.reddi(args.steps, amsgrad=True),
             'Yogi (epsilon 1e-3)': exercises.reddi(args.steps, yogi=True, epsilon=1e-3)}
    if args.plot:
        from . import plots
        plots.save(plots.paths(paths, 'x', title="Reddi et al.'s counterexample: C = 3, "
                                                 "beta1 = 0, beta2 = 0.1"), args.plot)
    if args.json:
        print(json.dumps({name: path[-1].item() for name, path in paths.items()}))
        return
    print(f"{'optimizer':<20} {f'x after {args.steps} steps':>19}   (the optimum is x = -1)")
    for name, path in paths.items():
        print(f"{name:<20} {path[-1]:>19.4f}")
    if args.plot:
        print(f"wrote {args.plot}")


def _command(sub, name, parents, help, description, example, run):
    """A subcommand with a description and an example in its --help."""
    parser = sub.add_parser(name, parents=parents, help=help,
                            description=f'{description}\n\nexample:\n  python -m adam_plugin '
                                        f'{name} {example}',
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run, parser=parser)
    return parser


def main(argv=None):
    """Run ``python -m adam_plugin``: parse ``argv``, check every argument, run the command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``python -m adam_plugin`` (default: ``sys.argv[1:]``), e.g.
        ``['linreg', '--lr', '0.1', '--json']``. The commands are in this module's
        docstring; ``['COMMAND', '--help']`` describes one.

    Returns
    -------
    int
        0 once the command has run (its output on stdout, figures where ``--plot`` says).

    Raises
    ------
    SystemExit
        With status 2, before anything is trained: for an unknown command or flag or a
        bad value (argparse's usage and an error naming it, on stderr), or for a
        command that needs a package of the ``chapter`` extra (tqdm, matplotlib) that
        is missing (one line naming the extra to install). With status 0 after
        ``--help``.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--batch-size', type=_positive_int, default=10,
                        help='batch size (default 10)')
    common.add_argument('--epochs', type=_positive_int, default=3, help='epochs (default 3)')
    common.add_argument('--seed', type=int, default=0,
                        help='data, init and shuffle seed (default 0)')
    common.add_argument('--quiet', action='store_true', help='no progress bar on stderr')
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument('--json', action='store_true', help='print one JSON object only')
    output.add_argument('--plot', metavar='FILE', type=_png,
                        help='write the figure to this PNG')
    training = [common, output, _optimizer_parser()]

    parser = argparse.ArgumentParser(
        prog='python -m adam_plugin',
        description="Experiments and figures of the Adam chapter (Dive into Deep Learning, "
                    "first MXNet edition) and of "
                    "its notebook, notebooks/adam_chapter.ipynb.")
    sub = parser.add_subparsers(dest='command', required=True, parser_class=_Command)
    p = _command(sub, 'linreg', training,
                 "the chapter's experiment: its adam() and a Trainer on identical batches",
                 "Train the chapter's linear regression twice from the same start on the same\n"
                 "batches: with the chapter's hand-rolled adam() and with gluon.Trainer and\n"
                 "--optimizer (default 'myadam'); print the fit and the largest difference.",
                 "--lr 0.1 --epsilon-mode inside --plot loss.png --plot-diff parity.png",
                 _linreg)
    p.add_argument('--lr', type=_learning_rate, default=0.1, help='learning rate (default 0.1)')
    p.add_argument('--plot-diff', metavar='FILE', type=_png,
                   help="write the per-step difference from the chapter's adam() (log axis)")
    p.add_argument('--folded', action='store_true',
                   help="also run adam() with bias correction folded into lr and epsilon "
                        "(exercise 2)")
    _command(sub, 'sweep', training,
             "the chapter's exercise: one Trainer run per learning rate",
             "Train the chapter's linear regression with gluon.Trainer and --optimizer at\n"
             "each learning rate, on the same batches; print the final losses.",
             "--lrs 0.001,0.01,0.1,0.5 --plot sweep.png",
             _sweep).add_argument(
        '--lrs', type=_learning_rates, default=[0.001, 0.01, 0.1, 0.5],
        help='comma-separated learning rates (default 0.001,0.01,0.1,0.5)')
    p = _command(sub, 'compare', [common, output],
                 "several optimizers or settings on the chapter's regression",
                 "Train the chapter's linear regression once per RUN, on the same batches.\n"
                 "A RUN is OPTIMIZER[:key=value,...]: the optimizer's own keywords\n"
                 "(learning_rate, default 0.1; epsilon_mode, yogi, ...) and lr_step, lr_factor\n"
                 "for MXNet's FactorScheduler. Quote a RUN that holds spaces.",
                 "myadam myyogi sgd 'myadam:learning_rate=0.5,lr_step=100' --plot compare.png",
                 _compare)
    p.add_argument('runs', nargs='+', type=_run_spec, metavar='RUN')
    p.add_argument('--scales', type=_scales, metavar='A,B',
                   help="multiply the two features by A and B (a badly scaled problem)")
    p = _command(sub, 'moments', [output],
                 "bias correction of both moments, read from MyAdam's state",
                 "Feed MyAdam noisy gradients of mean 1 and print its raw and corrected\n"
                 "first and second moments after each step.",
                 "--steps 30 --plot moments.png", _moments)
    p.add_argument('--steps', type=_positive_int, default=30, help='steps (default 30)')
    _add_flag(p, 'beta1', defaulted=True)
    _add_flag(p, 'beta2', defaulted=True)
    p.add_argument('--seed', type=int, default=0, help='gradient seed (default 0)')
    p = _command(sub, 'first-steps', [output],
                 "MyAdam's first step against |g| for each epsilon_mode",
                 "Each probe is a fresh MyAdam's first step (t = 1), in units of the learning\n"
                 "rate, for gradients from 1e-12 to 10: where epsilon shrinks it.",
                 "--epsilon 1e-8 --plot first_steps.png", _first_steps)
    _add_flag(p, 'epsilon', defaulted=True)
    p = _command(sub, 'reddi', [output],
                 "exercise 4: Reddi et al.'s counterexample, Adam vs AMSGrad vs Yogi",
                 "Run MyAdam, AMSGrad and Yogi on Reddi et al. (2018)'s online convex problem\n"
                 "(C = 3, beta1 = 0, beta2 = 0.1, lr 0.5/sqrt(t), x in [-1, 1]); print x at the\n"
                 "end (the optimum is -1).",
                 "--steps 3000 --plot reddi.png", _reddi)
    p.add_argument('--steps', type=_positive_int, default=3000, help='steps (default 3000)')
    args = parser.parse_args(argv)
    _require_chapter_extra(args)
    args.run(args)
    return 0


class _Command(argparse.ArgumentParser):
    """A subcommand's parser: arguments it does not take are its error, as argparse words
    it, with the flag meant: what the command takes for an option of
    :data:`CHAPTER_FLAGS` (``--learning-rate``: ``--lr``), else the nearest of its flags
    (``--epsilon_mode``: ``--epsilon-mode``)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, unknown = super().parse_known_args(args, namespace)
        if unknown:
            command = self.prog.split()[-1]
            flags = [flag for flag in self._option_string_actions if flag.startswith('--')]
            hints = []
            own = {'--' + name.replace('_', '-'): by_command[command]
                   for name, by_command in CHAPTER_FLAGS.items() if command in by_command}
            for given in (word.split('=')[0] for word in unknown if word.startswith('--')):
                if given.replace('_', '-') in own:
                    hints.append(f"for {given} use {own[given.replace('_', '-')]}")
                else:
                    hints += [f"did you mean {meant}?" for meant in
                              difflib.get_close_matches(given.replace('_', '-'), flags, n=1)]
            self.error(f"unrecognized arguments: {' '.join(unknown)}"
                       + ''.join(f'; {hint}' for hint in hints))
        return namespace, unknown


def _require_chapter_extra(args):
    """Exit with one line naming the ``chapter`` extra when this command needs a package
    of it that is missing: tqdm for a progress bar, matplotlib for a figure."""
    needed = (['tqdm'] if hasattr(args, 'quiet') else []) + (
        ['matplotlib'] if getattr(args, 'plot', None) or getattr(args, 'plot_diff', None) else [])
    missing = []
    for module in needed:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # the package is there, and broken: its own error says how
                raise
            missing.append(module)
    if missing:
        args.parser.exit(2, f"{args.parser.prog}: error: this command needs "
                            f"{' and '.join(missing)}, from adam_plugin's chapter extra: "
                            f"pip install 'adam_plugin[chapter]'\n")
