"""Real training loops: 'myadam' against MXNet's 'adam', the two alternating round by round.

Every loop runs forward and backward at each step, so MXNet hands the optimizer
gradients that backward (or the KVStore's reduce of them) has just written, through
``gluon.Trainer.step`` as users call it. The two optimizers train identical models
(built from one seed) on identical data; in each round each of them runs its
iterations in turn, in an order shuffled round by round (``bench_step.turns``).
'myadam' runs with its defaults except ``epsilon_mode='hat'``, the form of MXNet's Adam
(the same work per element).

Two parts:

- ``STEP_CASES``, the storage modes: the optimizer step alone, ``trainer.step``, timed
  from after its forward and backward pass had finished (waited for) until its own
  work had finished (waited for); also with an optimizer that does nothing
  (``if_step_free``: MXNet's own part of the step, which no optimizer removes);
- ``MODELS``, whole iterations on fixed Gluon models: forward, backward and step timed
  as one, as a training loop runs them (nothing waited for until the step is done);
  then a second iteration of the same round waits after backward, which times the
  step alone: its share of the iteration, ``step / (forward and backward + step)``.
  ``if_step_free`` is the ratio 'myadam' would reach with a step that took no time:
  its forward and backward against MXNet's Adam's whole iteration.

Each part is run ``--runs`` times (new models each time); a case's ratio is the median
over the runs of each run's ratio of the two optimizers' medians.

    python benchmarks/bench_loops.py --json out.json
    python benchmarks/bench_loops.py --case lstm_lm --case sparse_embedding   # some alone
    python benchmarks/bench_loops.py --quick     # tiny sizes, 2 rounds, 1 run: a smoke test
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, NamedTuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_step  # noqa: E402  (beside this file: found through the line above)
import machine  # noqa: E402  (the same)

THREADS = bench_step.THREADS
OPTIMIZERS = {'myadam': ('myadam', {'epsilon_mode': 'hat'}), 'adam': ('adam', {})}
# The storage-mode cases also time a step that does nothing (bench_step.register_free_step):
# MXNet's own part of the step, which no optimizer removes.
STEP_CONTENDERS = {**OPTIMIZERS, 'free': (bench_step.FREE_STEP, {})}
LEARNING_RATE = 1e-3


class Loop(NamedTuple):
    """One optimizer's training loop: ``forward_backward()`` runs forward and backward on
    the next batch (returning at once, as MXNet's engine runs them); ``step()`` calls
    ``trainer.step`` as the loop would."""
    forward_backward: Callable[[], None]
    step: Callable[[], None]

    def iteration(self):
        self.forward_backward()
        self.step()


def _trainer(params, optimizer, options, **kwargs):
    from mxnet import gluon

    import adam_plugin  # noqa: F401  (registers 'myadam')
    bench_step.register_free_step()
    return gluon.Trainer(params, optimizer, dict(options, learning_rate=LEARNING_RATE), **kwargs)


def _batches(make, count=4, seed=0):
    """``count`` batches made by ``make(rng)``, repeated without end (identical for both
    optimizers)."""
    rng = np.random.default_rng(seed)
    batches = [make(rng) for _ in range(count)]
    i = 0
    while True:
        yield batches[i % count]
        i += 1


def _zipf_ids(vocab, ids, seed=0):
    """Batches of ``ids`` token ids below ``vocab``, Zipf-distributed (a=1.2), one at a time
    without end: a few rows recur in every batch, most are rare, as in text."""
    rng = np.random.default_rng(seed)
    while True:
        yield (rng.zipf(1.2, size=ids) - 1) % vocab


def _supervised(net, trainer, batches, loss_fn, contexts):
    """The Loop of ``net`` on ``batches`` of ``(data, label)`` NumPy arrays, each split
    evenly over ``contexts``."""
    import mxnet as mx
    from mxnet import autograd

    size = None

    def forward_backward():
        nonlocal size
        data, label = next(batches)
        size = len(data)
        parts = zip(np.array_split(data, len(contexts)), np.array_split(label, len(contexts)), strict=True)
        with autograd.record():
            losses = [loss_fn(net(mx.nd.array(x, ctx=ctx)), mx.nd.array(y, ctx=ctx))
                      for (x, y), ctx in zip(parts, contexts, strict=True)]
        autograd.backward(losses)

    return Loop(forward_backward, lambda: trainer.step(size))


def _dense_stack(units, layers, flatten=True):
    from mxnet import gluon
    net = gluon.nn.HybridSequential()
    for _ in range(layers):
        net.add(gluon.nn.Dense(units, activation='relu', flatten=flatten))
    return net


def mlp(optimizer, options, quick):
    """Three Dense(1024, relu) and a Dense(10), batch 64 of 784 features, softmax loss."""
    import mxnet as mx
    from mxnet import gluon
    units, features, batch = (16, 8, 4) if quick else (1024, 784, 64)
    mx.random.seed(0)
    net = _dense_stack(units, 3)
    net.add(gluon.nn.Dense(10))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    batches = _batches(lambda rng: (rng.standard_normal((batch, features), np.float32),
                                    rng.integers(0, 10, batch)))
    return _supervised(net, _trainer(net.collect_params(), optimizer, options), batches,
                       gluon.loss.SoftmaxCrossEntropyLoss(), [mx.cpu()])


def resnet18(optimizer, options, quick):
    """The model zoo's resnet18_v1(classes=10), batch 16 of 3x32x32 (quick: 2 of 3x8x8)."""
    import mxnet as mx
    from mxnet import gluon
    batch, side = (2, 8) if quick else (16, 32)
    mx.random.seed(0)
    net = gluon.model_zoo.vision.resnet18_v1(classes=10)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    batches = _batches(lambda rng: (rng.standard_normal((batch, 3, side, side), np.float32),
                                    rng.integers(0, 10, batch)))
    return _supervised(net, _trainer(net.collect_params(), optimizer, options), batches,
                       gluon.loss.SoftmaxCrossEntropyLoss(), [mx.cpu()])


def lstm_lm(optimizer, options, quick):
    """A language model: Embedding(50000, 128, sparse_grad=True), LSTM(128),
    Dense(50000), batch 8 x 20 tokens (Zipf ids), softmax loss on the next token."""
    import mxnet as mx
    from mxnet import gluon

    vocab, dim, batch, length = (100, 8, 2, 5) if quick else (50_000, 128, 8, 20)

    class LanguageModel(gluon.HybridBlock):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.embedding = gluon.nn.Embedding(vocab, dim, sparse_grad=True)
                self.lstm = gluon.rnn.LSTM(dim, layout='NTC')
                self.output = gluon.nn.Dense(vocab, flatten=False)

        def hybrid_forward(self, F, x):
            return self.output(self.lstm(self.embedding(x)))

    mx.random.seed(0)
    net = LanguageModel()
    net.initialize(mx.init.Xavier())
    net.hybridize()
    ids = _zipf_ids(vocab, batch * (length + 1))

    def text(rng):  # a batch of sequences: the tokens, and the token after each
        tokens = next(ids).reshape(batch, length + 1).astype(np.float32)
        return tokens[:, :-1], tokens[:, 1:]

    batches = _batches(text)
    return _supervised(net, _trainer(net.collect_params(), optimizer, options), batches,
                       gluon.loss.SoftmaxCrossEntropyLoss(), [mx.cpu()])


def kvstore_mlp(optimizer, options, quick):
    """30 Dense(64, relu) on two CPU contexts, ``update_on_kvstore=True`` (the KVStore calls
    the optimizer once per parameter), batch 2 x 32 of 64 features, L2 loss."""
    import mxnet as mx
    from mxnet import gluon
    layers, batch = (3, 4) if quick else (30, 64)
    contexts = [mx.cpu(0), mx.cpu(1)]
    mx.random.seed(0)
    net = _dense_stack(64, layers)
    net.initialize(mx.init.Xavier(), ctx=contexts)
    net.hybridize()
    trainer = _trainer(net.collect_params(), optimizer, options, update_on_kvstore=True)
    batches = _batches(lambda rng: (rng.standard_normal((batch, 64), np.float32),
                                    rng.standard_normal((batch, 64), np.float32)))
    return _supervised(net, trainer, batches, gluon.loss.L2Loss(), contexts)


def embedding(layer):
    """An embedding of 100000 x 128 (quick: 1000 x 8) made by ``layer(vocab, dim)``, 512
    Zipf ids a step (quick: 16), loss the sum of the embeddings."""
    def make(optimizer, options, quick):
        import mxnet as mx
        from mxnet import autograd
        vocab, dim, ids = (1000, 8, 16) if quick else (100_000, 128, 512)
        mx.random.seed(0)
        net = layer(vocab, dim)
        net.initialize(mx.init.Normal())
        trainer = _trainer(net.collect_params(), optimizer, options)
        batches = _zipf_ids(vocab, ids)

        def forward_backward():
            with autograd.record():
                loss = net(mx.nd.array(next(batches))).sum()
            loss.backward()

        return Loop(forward_backward, lambda: trainer.step(ids))
    return make


def _sparse_embedding(vocab, dim):
    from mxnet import gluon
    return gluon.contrib.nn.SparseEmbedding(vocab, dim)


def _embedding_sparse_grad(vocab, dim):
    from mxnet import gluon
    return gluon.nn.Embedding(vocab, dim, sparse_grad=True)


def resnet18_shapes(quick):
    """The shapes of resnet18_v1's parameters (quick: two small ones)."""
    return [(4, 3, 3, 3), (4,)] if quick else bench_step.resnet18_shapes()


def elementwise(shapes, dtype='float32', contexts=1, **trainer_options):
    """Parameters of ``shapes(quick)`` in ``dtype`` on ``contexts`` CPU contexts, whose
    "network" multiplies each parameter by a new scale each step and whose backward is
    fed a fixed random array of the parameter's shape as the gradient of that product:
    backward writes that array times the scale into each gradient, as a real network's
    backward writes its gradients, at a fraction of the cost (MXNet cannot train float16
    convolutions or dense layers on CPU, and sums float16 arrays slowly)."""
    def make(optimizer, options, quick):
        import mxnet as mx
        from mxnet import autograd, gluon
        ctx = [mx.cpu(i) for i in range(contexts)]
        mx.random.seed(0)
        params = gluon.ParameterDict()
        for i, shape in enumerate(shapes(quick)):
            params.get(f'p{i}', shape=shape, dtype=dtype, init=mx.init.Normal())
        params.initialize(ctx=ctx)
        heads = [mx.nd.random.normal(shape=p.shape, scale=0.01, ctx=c, dtype=dtype)
                 for c in ctx for p in params.values()]
        trainer = _trainer(params, optimizer, options, **trainer_options)
        scales = _batches(lambda rng: float(rng.uniform(0.5, 2)))

        def forward_backward():
            scale = next(scales)
            with autograd.record():
                outputs = [p.data(c) * scale for c in ctx for p in params.values()]
            autograd.backward(outputs, heads)

        return Loop(forward_backward, lambda: trainer.step(1))
    return make


def _kvstore_dense(quick):
    return [(64, 64), (64,)] * (3 if quick else 30)


# name -> (what it is, make(optimizer, options, quick) -> Loop)
STEP_CASES = {
    'sparse_embedding': ('SparseEmbedding(100000, 128), 512 Zipf ids a step (row_sparse '
                         'weight, lazy, update_on_kvstore)', embedding(_sparse_embedding)),
    'embedding_sparse_grad': ('Embedding(100000, 128, sparse_grad=True), 512 Zipf ids a step '
                              '(dense weight, lazy)', embedding(_embedding_sparse_grad)),
    'kvstore_two_contexts': ('update_on_kvstore=True, two CPU contexts, the 60 parameters of '
                             '30 Dense(64): one call per parameter',
                             elementwise(_kvstore_dense, contexts=2, update_on_kvstore=True)),
    'kvstore_resnet18': ('update_on_kvstore=True, two CPU contexts, ResNet-18\'s shapes',
                         elementwise(resnet18_shapes, contexts=2, update_on_kvstore=True)),
    'float16_resnet18': ('float16 with multi_precision=True, ResNet-18\'s shapes',
                         lambda optimizer, options, quick: elementwise(
                             resnet18_shapes, 'float16')(
                                 optimizer, dict(options, multi_precision=True), quick)),
    'dense_resnet18': ('float32, ResNet-18\'s shapes', elementwise(resnet18_shapes)),
}
MODELS = {
    'mlp': ('3 x Dense(1024, relu) + Dense(10), batch 64 of 784', mlp),
    'resnet18': ('model zoo resnet18_v1(classes=10), batch 16 of 3x32x32', resnet18),
    'lstm_lm': ('Embedding(50000, 128, sparse_grad=True), LSTM(128), Dense(50000), '
                'batch 8 x 20 tokens', lstm_lm),
    'kvstore_mlp': ('30 x Dense(64), two CPU contexts, update_on_kvstore=True, batch 2 x 32',
                    kvstore_mlp),
}


def _loops(make, quick, contenders):
    """{optimizer: Loop} of ``contenders`` (who -> (optimizer, options)), each warmed up by
    two iterations (states, the kernel's threads)."""
    import mxnet as mx
    loops = {who: make(name, options, quick) for who, (name, options) in contenders.items()}
    for loop in loops.values():
        for _ in range(2):
            loop.forward_backward()
            loop.step()
        mx.nd.waitall()
    return loops


def _timed(function):
    """Milliseconds ``function()`` takes, with MXNet's work it queued."""
    import mxnet as mx
    start = time.perf_counter()
    function()
    mx.nd.waitall()
    return (time.perf_counter() - start) * 1e3


def step_run(make, rounds, quick, seed):
    """One run of a storage-mode case: {optimizer: [step ms per round]}; ``seed``, of the
    order of the turns (``bench_step.turns``)."""
    import mxnet as mx
    loops = _loops(make, quick, STEP_CONTENDERS)
    times = {who: [] for who in loops}
    for order in bench_step.turns(list(loops.items()), rounds, seed):
        for who, loop in order:
            loop.forward_backward()
            mx.nd.waitall()
            times[who].append(_timed(loop.step))
    return times


def model_run(make, rounds, quick, seed):
    """One run of a model: {optimizer: {'iteration': [ms], 'forward_backward': [ms],
    'step': [ms]}}, per round a whole iteration, then one timed in two parts; ``seed``, of the
    order of the turns."""
    loops = _loops(make, quick, OPTIMIZERS)
    times = {who: {'iteration': [], 'forward_backward': [], 'step': []} for who in loops}
    for order in bench_step.turns(list(loops.items()), rounds, seed):
        for who, loop in order:
            times[who]['iteration'].append(_timed(loop.iteration))
            times[who]['forward_backward'].append(_timed(loop.forward_backward))
            times[who]['step'].append(_timed(loop.step))
    return times


def _median(samples):
    return statistics.median(samples)


def summarize_steps(runs):
    """A storage-mode case's row from its runs (each {optimizer: [ms]}); ``if_step_free``,
    the ratio a step that did nothing reached: MXNet's own part of it."""
    ratios = [_median(r['myadam']) / _median(r['adam']) for r in runs]
    return {'ratio': _median(ratios), 'ratios': ratios,
            'if_step_free': _median([_median(r['free']) / _median(r['adam']) for r in runs]),
            **{f'{who}_ms': [_median(r[who]) for r in runs] for who in STEP_CONTENDERS},
            'rounds': len(runs[0]['myadam'])}


def summarize_model(runs):
    """A model's row from its runs (each {optimizer: {part: [ms]}})."""
    medians = [{who: {part: _median(samples) for part, samples in parts.items()}
                for who, parts in r.items()} for r in runs]
    row = {'ratio': _median([m['myadam']['iteration'] / m['adam']['iteration']
                             for m in medians]),
           'ratios': [m['myadam']['iteration'] / m['adam']['iteration'] for m in medians],
           'step_ratio': _median([m['myadam']['step'] / m['adam']['step'] for m in medians]),
           'if_step_free': _median([m['myadam']['forward_backward'] / m['adam']['iteration']
                                    for m in medians]),
           'rounds': len(runs[0]['myadam']['iteration'])}
    for who in OPTIMIZERS:
        for part in ('iteration', 'forward_backward', 'step'):
            row[f'{who}_{part}_ms'] = _median([m[who][part] for m in medians])
        row[f'{who}_step_share'] = _median(
            [m[who]['step'] / (m[who]['forward_backward'] + m[who]['step']) for m in medians])
    return row


def _ratios(values):
    return ' '.join(f'{v:.2f}' for v in values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--step-rounds', type=int, default=51,
                        help='rounds per run of each storage-mode case (default 51)')
    parser.add_argument('--model-rounds', type=int, default=15,
                        help='rounds per run of each model (default 15)')
    parser.add_argument('--case', action='append', metavar='NAME',
                        choices=sorted(STEP_CASES) + sorted(MODELS),
                        help='run only this storage-mode case or model (repeatable): '
                             + ', '.join([*STEP_CASES, *MODELS]))
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes, 2 rounds, 1 run (a smoke test: figures mean nothing)')
    parser.add_argument('--json', metavar='PATH', help='also write the results as JSON')
    args = parser.parse_args()
    if args.quick:
        args.runs, args.step_rounds, args.model_rounds = 1, 2, 2
    names = args.case or [*STEP_CASES, *MODELS]
    results = {'threads': THREADS, 'runs': args.runs, 'steps': {}, 'models': {},
               'machine': machine.describe()}
    print(f"{'storage mode':22} {'ratio':>6}  {'runs':14} {'myadam ms':>10} {'adam ms':>8} "
          f"{'free ms':>8} {'if step free':>12}")
    for name in [n for n in names if n in STEP_CASES]:
        row = summarize_steps([step_run(STEP_CASES[name][1], args.step_rounds, args.quick, run)
                               for run in range(args.runs)])
        results['steps'][name] = row
        print(f"{name:22} {row['ratio']:6.2f}  {_ratios(row['ratios']):14} "
              f"{_median(row['myadam_ms']):10.3f} {_median(row['adam_ms']):8.3f} "
              f"{_median(row['free_ms']):8.3f} {row['if_step_free']:12.2f}", flush=True)
    print(f"\n{'model':12} {'ratio':>6}  {'runs':14} {'myadam ms':>10} {'adam ms':>8} "
          f"{'step ratio':>10} {'myadam step':>11} {'adam step':>9} {'if step free':>12}")
    for name in [n for n in names if n in MODELS]:
        row = summarize_model([model_run(MODELS[name][1], args.model_rounds, args.quick, run)
                               for run in range(args.runs)])
        results['models'][name] = row
        print(f"{name:12} {row['ratio']:6.2f}  {_ratios(row['ratios']):14} "
              f"{row['myadam_iteration_ms']:10.2f} {row['adam_iteration_ms']:8.2f} "
              f"{row['step_ratio']:10.2f} {row['myadam_step_share']:11.1%} "
              f"{row['adam_step_share']:9.1%} {row['if_step_free']:12.2f}", flush=True)
    results['load_after'] = os.getloadavg()[0]
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
