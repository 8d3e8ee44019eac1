"""Command line: the chapter's experiment and its exercise.

``python -m adam_plugin linreg [--lr 0.1] [--json] [--plot FILE]``
``python -m adam_plugin sweep [--lrs 0.001,0.01,0.1,0.5] [--json] [--plot FILE]``

Both show a progress bar on stderr unless ``--quiet``; with ``--json`` stdout
holds exactly one JSON object.
"""
__all__ = ['main']

import argparse
import json
import math
import sys

import numpy as np


def _learning_rate(text):
    """argparse type: a finite number >= 0."""
    try:
        lr = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not 0.0 <= lr < math.inf:  # also rejects NaN
        raise argparse.ArgumentTypeError(f'{text!r} is not a learning rate (expected >= 0)')
    return lr


def _learning_rates(text):
    """argparse type: comma-separated learning rates, no repeats."""
    lrs = [_learning_rate(item.strip()) for item in text.split(',')]
    if len(set(lrs)) != len(lrs):
        raise argparse.ArgumentTypeError(f'{text!r} repeats a learning rate')
    return lrs


def _positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r} is not >= 1')
    return value


def _progress(args, features, num_runs):
    """A tqdm bar on stderr counting the optimizer steps of ``num_runs`` runs."""
    from tqdm import tqdm
    from .linreg import num_steps
    return tqdm(total=num_runs * num_steps(features, args.batch_size, args.epochs),
                desc=args.command, unit='step', file=sys.stderr, disable=args.quiet)


def _linreg(args):
    from . import linreg
    features, labels = linreg.make_dataset(seed=args.seed)
    with _progress(args, features, num_runs=2) as bar:
        kw = dict(batch_size=args.batch_size, lr=args.lr, num_epochs=args.epochs,
                  seed=args.seed, on_step=bar.update)
        ref = linreg.train_reference(features, labels, **kw)
        ours = linreg.train_trainer(features, labels, **kw)
    diff = float(np.abs(ref.trace - ours.trace).max())
    if args.plot:
        from . import plots
        plots.save(plots.loss_curves({"chapter's adam()": ref, "Trainer 'myadam'": ours},
                                     title=f'Adam, lr={args.lr}, batch size {args.batch_size}'),
                   args.plot)
    if args.json:
        print(json.dumps({'w': ours.w.tolist(), 'b': ours.b, 'loss': ours.loss,
                          'max_abs_diff': diff}))
        return
    print(f"w: {np.array2string(ours.w, precision=6)}  (true {list(linreg.TRUE_W)})")
    print(f"b: {ours.b:.6f}  (true {linreg.TRUE_B})")
    print(f"final loss: {ours.loss:.6g}")
    print(f"largest parameter difference, Trainer 'myadam' vs the chapter's adam(), "
          f"over {len(ours.trace)} steps: {diff:.3g}")
    if args.plot:
        print(f"wrote {args.plot}")


def _sweep(args):
    from . import linreg
    features, labels = linreg.make_dataset(seed=args.seed)
    with _progress(args, features, num_runs=len(args.lrs)) as bar:
        runs = linreg.sweep(args.lrs, features, labels, batch_size=args.batch_size,
                            num_epochs=args.epochs, seed=args.seed, on_step=bar.update)
    if args.plot:
        from . import plots
        plots.save(plots.lr_sweep(runs, args.batch_size), args.plot)
    if args.json:
        print(json.dumps({str(lr): run.loss for lr, run in runs.items()}))
        return
    print(f"Trainer 'myadam', batch size {args.batch_size}, {args.epochs} epochs "
          f"(true w {list(linreg.TRUE_W)}, b {linreg.TRUE_B})")
    print(f"{'lr':>8}  {'final loss':>11}  {'w':>22}  {'b':>9}")
    for lr, run in runs.items():
        print(f"{lr:>8g}  {run.loss:>11.4g}  {np.array2string(run.w, precision=5):>22}  "
              f"{run.b:>9.5f}")
    if args.plot:
        print(f"wrote {args.plot}")


def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--batch-size', type=_positive_int, default=10,
                        help='batch size (default 10)')
    common.add_argument('--epochs', type=_positive_int, default=3, help='epochs (default 3)')
    common.add_argument('--seed', type=int, default=0,
                        help='data, init and shuffle seed (default 0)')
    common.add_argument('--json', action='store_true', help='print one JSON object only')
    common.add_argument('--plot', metavar='FILE', help='write the loss curves to this PNG')
    common.add_argument('--quiet', action='store_true', help='no progress bar on stderr')

    parser = argparse.ArgumentParser(prog='python -m adam_plugin',
                                     description='Experiments from the Adam chapter.')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('linreg', parents=[common],
                       help="the chapter's experiment, hand-rolled adam() "
                            "and Trainer('myadam') on identical batches")
    p.add_argument('--lr', type=_learning_rate, default=0.1, help='learning rate (default 0.1)')
    p.set_defaults(run=_linreg)
    p = sub.add_parser('sweep', parents=[common],
                       help="the chapter's exercise: Trainer('myadam') at several learning "
                            "rates on identical batches")
    p.add_argument('--lrs', type=_learning_rates, default=[0.001, 0.01, 0.1, 0.5],
                   help='comma-separated learning rates (default 0.001,0.01,0.1,0.5)')
    p.set_defaults(run=_sweep)
    args = parser.parse_args(argv)
    args.run(args)
    return 0
