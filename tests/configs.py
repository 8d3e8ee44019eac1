"""The option registry shared by the tests: option rows, error inputs, tolerances, the shapes,
and the rows MXNet's operator runs.

In the style of torch's ``common_optimizers.py``: every parity test of a route (the
kernel, MXNet's operator, the queued KVStore step, the textbook rule itself against the
NumPy oracle) reads its configurations, the values it must refuse and its tolerances
from here, so that a route cannot be held to a looser standard by accident.
"""
import math
import os

import mxnet as mx
import numpy as np
from hypothesis import strategies as st

from adam_plugin import MyAdam, dispatch
from adam_plugin.textbook import EPSILON_MODES

LR = 0.01

# `make thorough` sets ADAM_PLUGIN_THOROUGH=1: the generated tests draw ten times as many
# examples (conftest.py's Hypothesis profile), and test_differential's big cases run more.
THOROUGH = os.environ.get('ADAM_PLUGIN_THOROUGH') == '1'

# name -> MyAdam keyword arguments (the oracle takes the same names).
CONFIGS = {
    'defaults': {},
    'wd': dict(wd=0.05),
    'rescale_grad': dict(rescale_grad=0.1),
    'clip_gradient': dict(clip_gradient=2.0),
    'lr_scheduler': dict(lr_scheduler='factor'),
    'all_base_options': dict(wd=0.05, rescale_grad=0.1, clip_gradient=1.5,
                             lr_scheduler='factor'),
    'betas_epsilon': dict(beta1=0.8, beta2=0.99, epsilon=1e-3),
    'inside': dict(epsilon_mode='inside'),
    'inside_big_eps': dict(epsilon_mode='inside', epsilon=1e-3),
    'hat': dict(epsilon_mode='hat', epsilon=1e-3),
    'amsgrad': dict(amsgrad=True),
    'amsgrad_wd': dict(amsgrad=True, wd=0.05),
    'decoupled_wd': dict(decoupled_wd=True, wd=0.05),
    'decoupled_wd_amsgrad': dict(decoupled_wd=True, wd=0.05, amsgrad=True),
    'yogi_options': dict(yogi=True, amsgrad=True, decoupled_wd=True, wd=0.05,
                         epsilon_mode='inside', clip_gradient=3.0, lr_scheduler='factor'),
    'everything': dict(beta1=0.85, beta2=0.995, epsilon=1e-4, epsilon_mode='hat',
                       amsgrad=True, decoupled_wd=True, wd=0.1, rescale_grad=0.5,
                       clip_gradient=3.0, lr_scheduler='factor'),
}


def factor_schedule(t):
    """MXNet's FactorScheduler(step=5, factor=0.5), as documented: halve every 5 updates."""
    return LR * 0.5 ** ((t - 1) // 5)


def optimizer_kwargs(config):
    """MyAdam keyword arguments for a row: ``learning_rate=LR``, the scheduler made real."""
    kwargs = dict(config, learning_rate=LR)
    if kwargs.pop('lr_scheduler', None):
        kwargs['lr_scheduler'] = mx.lr_scheduler.FactorScheduler(step=5, factor=0.5, base_lr=LR)
    return kwargs


# --- every option combination, drawn ------------------------------------------------------

def real(low, high):
    # No subnormal hyperparameters: MXNet's scalar operators parse their scalar with
    # std::stod, which refuses them ("Out of range value for scalar"), so the textbook
    # route raises MXNetError for, e.g., beta2=5e-324. A known limitation, not drawn.
    return st.floats(low, high, allow_subnormal=False)


def log_uniform(low, high):
    """Magnitudes spread over the decades from ``low`` to ``high``."""
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: 10.0 ** e)


# Learning rates, each finite in float32 (the compute type of every kernel storage but
# float64's); one finite in float64 and Inf in float32 is an error input (ERROR_INPUTS).
LEARNING_RATES = st.one_of(
    log_uniform(1e-4, 1.0),                # ordinary
    log_uniform(1e20, 1e30),               # huge: weights may overflow, alike on every route
    log_uniform(1e-38, 1e-30),             # tiny: the step underflows
    st.just(0.0))


@st.composite
def option_rows(draw, modes=EPSILON_MODES, amsgrad=None, yogi=None, decoupled_wd=None,
                clip=True, rescale=True):
    """MyAdam keyword arguments: every combination of the options (a flag given as True or
    False is fixed), hyperparameters from their valid ranges, the learning rate ordinary,
    huge, tiny or 0. ``clip``/``rescale`` False: no clipping, ``rescale_grad=1``."""
    def flag(fixed):
        return draw(st.booleans()) if fixed is None else fixed
    row = dict(learning_rate=draw(LEARNING_RATES),
               beta1=draw(st.one_of(st.just(0.9), real(0.0, 0.999))),
               beta2=draw(st.one_of(st.just(0.999), real(0.0, 0.9999))),
               epsilon=draw(st.one_of(st.just(1e-8), log_uniform(1e-30, 1.0))),
               epsilon_mode=draw(st.sampled_from(modes)),
               amsgrad=flag(amsgrad), yogi=flag(yogi), decoupled_wd=flag(decoupled_wd),
               wd=draw(st.one_of(st.just(0.0), st.just(1.0), real(1e-4, 0.5))),
               rescale_grad=draw(st.one_of(st.just(1.0), real(0.01, 2.0))) if rescale else 1.0,
               # MXNet's clip operator takes its bounds as float32, so the textbook route
               # clips a float64 gradient at clip_gradient rounded to float32: drawn exact
               # in float32.
               clip_gradient=draw(st.one_of(st.none(), st.floats(0.125, 100.0, width=32)))
               if clip else None)
    return row


# --- error inputs: values each call checks in the dtypes it steps -------------------------

def finite_in(value, dtype):
    """Is ``value`` finite and non-zero once rounded to the compute type of ``dtype``'s
    parameters (float32 for float16 ones, whose every element is computed in float32)?"""
    compute = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    with np.errstate(over='ignore', under='ignore'):
        rounded = compute(value)
    return bool(np.isfinite(rounded) and rounded != 0)


# rescale_grad values that some dtypes must refuse (Trainer.step(batch_size) sets
# 1 / batch_size): Inf in float32 but not in float64, 0 in float32 but not in float64,
# and ones that every dtype takes (gradients of 2 at most keep a float16 moment finite).
RESCALE_GRADS = [1e39, 3.5e38, 1e-46, 1e-300, 0.5, 1e3, 1e-30]

# Learning rates finite in float64 and Inf in the float32 that float32 and float16
# parameters are computed in: the step would multiply by Inf (NaN weights where u = 0).
# Refused in those dtypes, as rescale_grad is.
LEARNING_RATES_INF_IN_FLOAT32 = [1e39, 3.5e38]

# Learning rates finite in float32 and Inf in float16: refused for a float16 weight
# without a float32 master copy (the weight the step writes is float16), taken with one.
LEARNING_RATES_INF_IN_FLOAT16 = [7e4, 1e20]

# Huge learning rates for a float16 weight without a master copy: within float16's range,
# past what its weights hold after one step (65504).
HUGE_FOR_FLOAT16 = log_uniform(1e3, 6e4)


# --- tolerances ----------------------------------------------------------------------------

# The kernel's storages whose results equal the textbook route's bit for bit: the kernel
# performs the textbook's operations in its order, each rounded to the compute type (float16
# ones computed in float32, as the textbook route computes them).
BITWISE = ('float32', 'float16_master', 'float16')

# float64: the kernel rounds each hyperparameter once from Python's float; MXNet's scalar
# operators parse the decimal string Python gives them, and that parse is not correctly
# rounded for some 17-digit strings (``1 - 0.9**6`` is off by one unit in the last place):
# per step, agreement to a few units in the last place of the terms of each result.
STEP_TOL = {'float64': 64 * float(np.finfo(np.float64).eps)}

# Agreement with an oracle after 20 steps (the NumPy oracle, the chapter's adam(), torch).
TOL = {
    'float32': dict(rtol=1e-5, atol=2e-6),
    'float64': dict(rtol=1e-10, atol=1e-12),
}

# Trajectories of 20 steps through the kernel against the textbook route (test_fused).
FUSED_TOL = {'float32': dict(rtol=1e-6, atol=1e-7), 'float64': dict(rtol=1e-12, atol=1e-14)}

# Agreement with the float64 oracle, per dtype: this fraction of the weight, plus this
# fraction of the largest step the oracle takes (a cancellation in ``m`` costs absolute,
# not relative, precision), plus the rounding of the result to the dtype (a float16 weight
# is the cast of its float32 master copy).
ORACLE_TOL = {'float64': 1e-10, 'float32': 2e-5, 'float16': 2e-3}

# MXNet's adam_update against the textbook route: it takes its hyperparameters as float32
# (``1 - beta2`` 1.3e-5 relative off for beta2=0.999) and folds the bias corrections into
# the learning rate: agreement to float32's precision, for float64 weights too.
OPERATOR_TOL = 2e-5


# MXNet's own test_adam tolerances, for every dtype: the tests ported from MXNet's suite.
RTOL, ATOL = 1e-4, 2e-5


SHAPES = [(3, 4, 5), (10, 4), (7,)]


def layout(dense=True, dtype=np.float32, device='cpu', grad_in_host_memory=True):
    """The layout of a 12-element weight and its gradient, anywhere (a GPU too)."""
    return dispatch.Layout(dense=dense, dtype=np.dtype(dtype), device_type=device,
                           shape=(12,), grad_in_host_memory=grad_in_host_memory)


# The rows MXNet's fused operator runs (dispatch routes a GPU weight to it).
OPERATOR_CONFIGS = [name for name, config in CONFIGS.items()
                    if dispatch.route(layout(device='gpu'),
                                      MyAdam(**optimizer_kwargs(config))) == 'operator']
