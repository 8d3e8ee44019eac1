"""One worker of a ``dist_sync`` linreg run, started by ``python -m adam_plugin.scaleout.launch``.

Prints one JSON line ``{"rank": ..., "params": [w0, w1, b]}`` (the parameters as
exact float32 bit patterns in hex, so the test can compare workers bitwise).
``run(config)`` is the same training in one process, for the test's reference.

Usage: ``python dist_worker.py CONFIG_JSON`` where the config holds
``update_on_kvstore``, ``optimizer`` ('myadam', or 'unpicklable': a subclass that
only a worker's ``__main__`` defines, so no server can unpickle it),
``optimizer_params``, and ``poison`` (put a NaN into the data).
"""
import json
import sys
import traceback

import numpy as np
import mxnet as mx

import adam_plugin
from adam_plugin.chapter import linreg

DATA = dict(num_examples=40, seed=3)
TRAIN = dict(batch_size=8, lr=0.05, num_epochs=2, seed=3, log_interval=40)


@mx.optimizer.Optimizer.register
class Unpicklable(adam_plugin.MyAdam):
    """Lives in ``__main__`` when this file runs as a worker: no server can import it."""


def run(config, kvstore='device'):
    """Train the linreg task as ``config`` says; return ``[w0, w1, b]`` as float32."""
    features, labels = linreg.make_dataset(**DATA)
    if config.get('poison'):
        features[0] = np.nan  # a NaN gradient at the first batch holding example 0
    result = linreg.train_trainer(features, labels, kvstore=kvstore,
                                  optimizer=config.get('optimizer', 'myadam'),
                                  optimizer_params=config.get('optimizer_params'),
                                  update_on_kvstore=config.get('update_on_kvstore'), **TRAIN)
    return np.append(result.w, result.b).astype(np.float32)


def main(config_json):
    """Train; print the report, or the traceback and return 1.

    The exception is caught here so that the KVStore closes (a barrier with the
    other workers) while MXNet is still running: left to the interpreter's
    shutdown, closing it sometimes waited forever.
    """
    config = json.loads(config_json)
    kv = mx.kv.create('dist_sync')
    try:
        params = run(config, kvstore=kv)
    except Exception:  # noqa: BLE001  (reported, and the status says so)
        traceback.print_exc()
        return 1
    print(json.dumps({'rank': kv.rank, 'params': [p.hex() for p in params.tolist()]}),
          flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
