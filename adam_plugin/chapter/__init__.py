"""The Adam chapter of *Dive into Deep Learning*, as teaching code around the optimizer.

- :mod:`.reference`: the chapter's hand-rolled ``adam(params, vs, sqrs, ...)``, as printed.
- :mod:`.linreg`: the chapter's data set, model and both training loops (hand-rolled and Trainer).
- :mod:`.probes`: small experiments that show bias correction at work.
- :mod:`.exercises`: the later edition's exercises (folded correction, decay, Reddi's counterexample).
- :mod:`.plots`: the figures (needs the ``chapter`` extra: matplotlib).
- :mod:`.cli`: ``python -m adam_plugin linreg | sweep | compare | moments | first-steps | reddi`` (needs the extra's tqdm).

Nothing in the optimizer library (:mod:`adam_plugin`) imports this package.
"""
__all__ = ['cli', 'exercises', 'linreg', 'plots', 'probes', 'reference']
