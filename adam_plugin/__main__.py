"""Command line: ``python -m adam_plugin linreg [--lr 0.1] [--json] [--plot FILE]``."""
import argparse
import json
import sys

import numpy as np


def _linreg(args):
    from . import linreg
    features, labels = linreg.make_dataset(seed=args.seed)
    kw = dict(batch_size=args.batch_size, lr=args.lr, num_epochs=args.epochs, seed=args.seed)
    ref = linreg.train_reference(features, labels, **kw)
    ours = linreg.train_trainer(features, labels, **kw)
    diff = float(np.abs(ref.trace - ours.trace).max())
    if args.plot:
        from . import plots
        plots.loss_curves(args.plot, {"chapter's adam()": ref, "Trainer 'myadam'": ours},
                          title=f'Adam, lr={args.lr}, batch size {args.batch_size}')
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m adam_plugin',
                                     description='Experiments from the Adam chapter.')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('linreg', help="the chapter's experiment, hand-rolled adam() "
                                      "and Trainer('myadam') on identical batches")
    p.add_argument('--lr', type=float, default=0.1, help='learning rate (default 0.1)')
    p.add_argument('--batch-size', type=int, default=10, help='batch size (default 10)')
    p.add_argument('--epochs', type=int, default=3, help='epochs (default 3)')
    p.add_argument('--seed', type=int, default=0, help='data, init and shuffle seed (default 0)')
    p.add_argument('--json', action='store_true', help='print one JSON object only')
    p.add_argument('--plot', metavar='FILE', help='write the loss curves to this PNG')
    p.set_defaults(run=_linreg)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
