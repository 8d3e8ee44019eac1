"""What the tests share about configurations: the option table (one row per MyAdam
configuration), the shapes, the tolerances per dtype, and the rows MXNet's operator runs."""
import mxnet as mx
import numpy as np

from adam_plugin import MyAdam, dispatch

LR = 0.01

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


SHAPES = [(3, 4, 5), (10, 4), (7,)]


# Per-dtype tolerances for agreement with an oracle after 20 steps.
TOL = {
    'float32': dict(rtol=1e-5, atol=2e-6),
    'float64': dict(rtol=1e-10, atol=1e-12),
}


# Per-dtype tolerances of the fast routes (adam_plugin.dispatch) against the textbook route.
FUSED_TOL = {'float32': dict(rtol=1e-6, atol=1e-7), 'float64': dict(rtol=1e-12, atol=1e-14)}


def layout(dense=True, dtype=np.float32, device='cpu', grad_in_host_memory=True):
    """The layout of a 12-element weight and its gradient, anywhere (a GPU too)."""
    return dispatch.Layout(dense=dense, dtype=np.dtype(dtype), device_type=device,
                           shape=(12,), grad_in_host_memory=grad_in_host_memory)


# The rows MXNet's fused operator runs (dispatch routes a GPU weight to it).
OPERATOR_CONFIGS = [name for name, config in CONFIGS.items()
                    if dispatch.route(layout(device='gpu'),
                                      MyAdam(**optimizer_kwargs(config))) == 'operator']


# MXNet's own test_adam tolerances, for every dtype: the tests ported from MXNet's suite.
RTOL, ATOL = 1e-4, 2e-5
