"""One worker of a ``dist_sync`` linreg run, started by ``python -m adam_plugin.scaleout.launch``.

A plain script: nothing is caught, so an error ends the worker as it would end a
user's script. On success it prints one JSON line ``{"rank": ..., "params": [w0, w1, b]}``
(the parameters as exact float32 bit patterns in hex, so the test can compare
workers bitwise). ``run(config)`` is the same training in one process, for the
test's reference.

Usage: ``python dist_worker.py CONFIG_JSON`` where the config holds
``update_on_kvstore``, ``optimizer`` ('myadam', or 'unpicklable': a subclass that
only a worker's ``__main__`` defines, so no server can unpickle it),
``optimizer_params``, ``poison`` (put a NaN into the data), ``num_epochs``
(default 2, of 5 steps each) and ``fail``: ``{"rank": R, "step": S, "how": HOW}``
makes worker ``R`` print ``failing: HOW`` after step ``S`` and then, as ``HOW`` says,
raise ``RuntimeError`` ('raise') or SIGKILL this job's 'server' or 'scheduler'
and carry on training.
"""
import json
import os
import signal
import sys

import mxnet as mx
import numpy as np

import adam_plugin
from adam_plugin.chapter import linreg

DATA = dict(num_examples=40, seed=3)
TRAIN = dict(batch_size=8, lr=0.05, num_epochs=2, seed=3, log_interval=40)


@mx.optimizer.Optimizer.register
class Unpicklable(adam_plugin.MyAdam):
    """Lives in ``__main__`` when this file runs as a worker: no server can import it."""


def run(config, kvstore='device', on_step=None):
    """Train the linreg task as ``config`` says; return ``[w0, w1, b]`` as float32."""
    features, labels = linreg.make_dataset(**DATA)
    if config.get('poison'):
        features[0] = np.nan  # a NaN gradient at the first batch holding example 0
    train = dict(TRAIN, num_epochs=config.get('num_epochs', TRAIN['num_epochs']))
    result = linreg.train_trainer(features, labels, kvstore=kvstore,
                                  optimizer=config.get('optimizer', 'myadam'),
                                  optimizer_params=config.get('optimizer_params'),
                                  update_on_kvstore=config.get('update_on_kvstore'),
                                  on_step=on_step, **train)
    return np.append(result.w, result.b).astype(np.float32)


def job_pid(role):
    """The pid of this job's process in ``role`` (the one with our scheduler port)."""
    wanted = {f'DMLC_ROLE={role}'.encode(),
              f"DMLC_PS_ROOT_PORT={os.environ['DMLC_PS_ROOT_PORT']}".encode()}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                environ = set(f.read().split(b'\0'))
        except OSError:
            continue
        if wanted <= environ:
            return int(pid)
    raise LookupError(f'no {role} process found')


def failure(rank, rank_fails, step, how):
    """An ``on_step`` callback that fails as ``how`` says after ``step`` steps on ``rank_fails``."""
    steps = [0]

    def on_step():
        steps[0] += 1
        if rank != rank_fails or steps[0] != step:
            return
        print(f'failing: {how}', flush=True)
        if how == 'raise':
            raise RuntimeError(f'worker {rank} fails at step {step}, as the test asked')
        os.kill(job_pid(how.split()[-1]), signal.SIGKILL)
    return on_step


def main(config_json):
    config = json.loads(config_json)
    kv = mx.kv.create('dist_sync')
    fail = config.get('fail')
    on_step = fail and failure(kv.rank, fail['rank'], fail['step'], fail['how'])
    params = run(config, kvstore=kv, on_step=on_step)
    print(json.dumps({'rank': kv.rank, 'params': [p.hex() for p in params.tolist()]}),
          flush=True)


if __name__ == '__main__':
    main(sys.argv[1])
