"""Bad hyperparameters are refused with a ValueError naming the parameter and the value."""
import inspect
import math
import pickle
import reprlib

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd

from adam_plugin import MyAdam, MyYogi
from adam_plugin.options import OPTIONS
from configs import TOL
from oracles import NumpyAdam

NAN = float('nan')

# (keyword arguments, the parameter name the message must carry)
BAD = [
    (dict(learning_rate=-0.1), 'learning_rate'),
    (dict(learning_rate=NAN), 'learning_rate'),
    (dict(learning_rate=math.inf), 'learning_rate'),
    (dict(learning_rate='fast'), 'learning_rate'),
    (dict(learning_rate='0.1'), 'learning_rate'),  # MXNet would keep the string, then fail
    (dict(beta1='0.9'), 'beta1'),
    (dict(beta1=-0.1), 'beta1'),
    (dict(beta1=1.0), 'beta1'),
    (dict(beta1=NAN), 'beta1'),
    (dict(beta2=-1e-3), 'beta2'),
    (dict(beta2=1.0), 'beta2'),
    (dict(beta2=NAN), 'beta2'),
    (dict(epsilon=-1e-8), 'epsilon'),
    (dict(epsilon=NAN), 'epsilon'),
    (dict(epsilon=0.0), 'epsilon'),
    (dict(epsilon=0), 'epsilon'),
    (dict(epsilon=math.inf), 'epsilon'),
    (dict(wd=-0.01), 'wd'),
    (dict(wd=NAN), 'wd'),
    (dict(wd=math.inf), 'wd'),
    (dict(clip_gradient=0.0), 'clip_gradient'),
    (dict(clip_gradient=-1.0), 'clip_gradient'),
    (dict(clip_gradient=NAN), 'clip_gradient'),
    (dict(clip_gradient=math.inf), 'clip_gradient'),  # no clipping is clip_gradient=None
    (dict(rescale_grad=0.0), 'rescale_grad'),
    (dict(rescale_grad=NAN), 'rescale_grad'),
    (dict(rescale_grad=math.inf), 'rescale_grad'),
    (dict(learning_rate=10**400), 'learning_rate'),  # beyond float's range
    (dict(learning_rate=None), 'learning_rate'),  # without lr_scheduler: MXNet would take 0.01
    (dict(epsilon_mode='middle'), 'epsilon_mode'),
    (dict(epsilon_mode=None), 'epsilon_mode'),
    (dict(nonfinite='ignore'), 'nonfinite'),
    (dict(max_skips=0), 'max_skips'),
    (dict(max_skips=2.5), 'max_skips'),
    (dict(max_skips='50'), 'max_skips'),
    (dict(max_skips=True), 'max_skips'),
    # flags: bool('no') is True, so a string from a config file would turn the option on
    (dict(amsgrad='no'), 'amsgrad'),
    (dict(amsgrad=2), 'amsgrad'),
    (dict(decoupled_wd=None), 'decoupled_wd'),
    (dict(lazy_update='False'), 'lazy_update'),
    (dict(fused='false'), 'fused'),
    (dict(multi_precision='yes'), 'multi_precision'),
]

# Edges that are valid and must be accepted: (MyAdam keywords, the oracle's keywords).
# FactorScheduler's documented default base_lr is 0.01; with step=10 it stays there.
GOOD = [
    (dict(learning_rate=0.0), dict(lr=0.0)),
    (dict(beta1=0.0), dict(beta1=0.0)),
    (dict(beta2=0.0), dict(beta2=0.0)),
    (dict(epsilon=1e-30), dict(epsilon=1e-30)),
    (dict(wd=0.0), dict(wd=0.0)),
    (dict(clip_gradient=None), dict(clip_gradient=None)),
    (dict(clip_gradient=1e-6), dict(clip_gradient=1e-6)),
    (dict(learning_rate=None, lr_scheduler=mx.lr_scheduler.FactorScheduler(step=10)),
     dict(lr=0.01)),
]
# Gradients for three steps; the zero element stays zero, so m = v = 0 there.
EDGE_GRADS = [np.array([0.0, 0.5, -2.0, 3e-4]), np.array([0.0, -0.25, -1.0, 7.0]),
              np.array([0.0, 0.125, 4.0, -1e-3])]


@pytest.mark.parametrize('kwargs,name', BAD, ids=[f'{n}={reprlib.repr(k[n])}' for k, n in BAD])
def test_bad_hyperparameter_is_refused(kwargs, name):
    with pytest.raises(ValueError) as err:
        MyAdam(**kwargs)
    assert str(err.value).startswith(f"Invalid {name}: {kwargs[name]!r} (expected ")


FLAGS = ['amsgrad', 'yogi', 'decoupled_wd', 'lazy_update', 'fused', 'multi_precision']


@pytest.mark.parametrize('flag', FLAGS)
@pytest.mark.parametrize('value, meaning', [(True, True), (False, False), (1, True), (0, False),
                                            (np.bool_(True), True), (np.bool_(False), False)])
def test_a_flag_is_true_false_one_or_zero_and_kept_as_a_bool(flag, value, meaning):
    got = getattr(MyAdam(**{flag: value}), flag)
    assert type(got) is bool and got is meaning


@pytest.mark.parametrize('kwargs,name', BAD[:3], ids=['negative', 'nan', 'inf'])
def test_trainer_refuses_before_anything_exists(kwargs, name):
    p = gluon.Parameter('w', shape=(2,))
    p.initialize()
    with pytest.raises(ValueError, match=name):
        gluon.Trainer([p], 'myadam', kwargs)


def test_epsilon_zero_is_refused_saying_why():
    with pytest.raises(ValueError, match=r'epsilon: 0\.0 .*zero gradient element .*0 / 0'):
        MyAdam(epsilon=0.0)


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
@pytest.mark.parametrize('fused', [True, False], ids=['kernel', 'textbook'])
@pytest.mark.parametrize('kwargs,oracle_kwargs', GOOD,  # ids without object addresses (xdist)
                         ids=[','.join(f'{n}={type(v).__name__ if hasattr(v, "__dict__") else v}'
                                       for n, v in k.items()) for k, _ in GOOD])
def test_edges_are_accepted_and_step_as_the_oracle(kwargs, oracle_kwargs, fused, dtype):
    opt = MyAdam(fused=fused, **kwargs)
    oracle = NumpyAdam(**dict(dict(lr=0.001), **oracle_kwargs))
    w0 = np.array([0.5, -1.0, 2.0, 0.25], dtype)
    weight = nd.array(w0, dtype=dtype)
    state = opt.create_state(0, weight)
    want = w0
    for g in EDGE_GRADS:
        opt.update(0, weight, nd.array(g, dtype=dtype), state)
        want = oracle.step(0, want, g.astype(dtype))
    got = weight.asnumpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, **TOL[dtype])
    if oracle.lr == 0.0:
        np.testing.assert_array_equal(got, w0)
    else:  # every element with a gradient moved, the zero-gradient one did not
        assert got[0] == w0[0] and (got[1:] != w0[1:]).all()


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match='betta1'):
        MyAdam(betta1=0.9)


# (keyword arguments, what the message suggests): other libraries' names, then typos of
# MyAdam's options and of the keywords mx.optimizer.Optimizer takes
MISNAMED = [
    (dict(lr=0.1), "'learning_rate'"),
    (dict(betas=(0.9, 0.99)), "'beta1' and 'beta2'"),
    (dict(eps=1e-8), "'epsilon'"),
    (dict(weight_decay=0.01), "'wd'"),
    (dict(lerning_rate=0.1), "'learning_rate'"),
    (dict(beta_2=0.99), "'beta2'"),
    (dict(epsilonmode='hat'), "'epsilon_mode'"),
    (dict(amsgard=True), "'amsgrad'"),
    (dict(param_idx2names={}), "'param_idx2name'"),
    (dict(begin_num_updates=3), "'begin_num_update'"),
]


@pytest.mark.parametrize('make', [MyAdam, MyYogi, 'Trainer'])
@pytest.mark.parametrize('kwargs, meant', MISNAMED, ids=[next(iter(k)) for k, _ in MISNAMED])
def test_a_misnamed_keyword_is_a_type_error_naming_the_valid_one(kwargs, meant, make):
    (keyword,) = kwargs
    p = gluon.Parameter('w', shape=(2,))
    p.initialize()
    with pytest.raises(TypeError) as err:
        if make == 'Trainer':  # through mx.optimizer.create('myadam', **kwargs)
            gluon.Trainer([p], 'myadam', kwargs)
        else:
            make(**kwargs)
    name = 'MyAdam' if make == 'Trainer' else make.__name__
    assert str(err.value).startswith(
        f"{name}.__init__() got an unexpected keyword argument {keyword!r}; "
        f"did you mean {meant}")


def test_a_keyword_like_none_lists_the_valid_ones():
    with pytest.raises(TypeError) as err:
        MyAdam(foreach=True)
    message = str(err.value)
    assert message.startswith("MyAdam.__init__() got an unexpected keyword argument 'foreach'; "
                              "it takes ")
    taken = set(message.split('it takes ')[1].split(', '))
    optimizers = set(inspect.signature(mx.optimizer.Optimizer.__init__).parameters) - {'self'}
    assert taken == {o.name for o in OPTIONS} | optimizers


def test_every_keyword_of_mxnets_optimizer_is_taken():
    """Its own names, read from its signature, reach ``Optimizer.__init__``."""
    names = set(inspect.signature(mx.optimizer.Optimizer.__init__).parameters) - {'self'}
    ours = {o.name for o in OPTIONS}
    assert {'param_idx2name', 'begin_num_update'} <= names - ours
    opt = MyAdam(param_idx2name={0: 'w'}, begin_num_update=4,
                 **{n: inspect.signature(mx.optimizer.Optimizer.__init__).parameters[n].default
                    for n in names - ours - {'param_idx2name', 'begin_num_update'}})
    assert (opt.idx2name, opt.begin_num_update, opt.num_update) == ({0: 'w'}, 4, 4)


# (a value that is not a number, the option given it)
NOT_NUMBERS = [('0.1', 'learning_rate'), (True, 'learning_rate'), ('0.9', 'beta1'),
               (False, 'epsilon'), (None, 'wd'), ('1', 'clip_gradient'), ([0.5], 'rescale_grad')]


@pytest.mark.parametrize('value, name', NOT_NUMBERS)
def test_a_value_that_is_not_a_number_is_refused_saying_so(value, name):
    with pytest.raises(ValueError) as err:
        MyAdam(**{name: value})
    assert str(err.value).startswith(f"Invalid {name}: {value!r} (expected ")
    assert str(err.value).endswith(f"; a {type(value).__name__} is not a number)")


@pytest.mark.parametrize('value, word', [(NAN, 'NaN'), (math.inf, 'infinite')])
def test_epsilon_nan_or_inf_is_refused_saying_which(value, word):
    with pytest.raises(ValueError) as err:
        MyAdam(epsilon=value)
    assert str(err.value) == f"Invalid epsilon: {value!r} (expected > 0, not {word})"


@pytest.mark.parametrize('lr', [-1.0, NAN, math.inf])
def test_set_learning_rate_refuses_and_keeps_the_old_rate(lr):
    p = gluon.Parameter('w', shape=(2,))
    p.initialize()
    trainer = gluon.Trainer([p], 'myadam', {'learning_rate': 0.1})
    with pytest.raises(ValueError, match='learning_rate'):
        trainer.set_learning_rate(lr)
    assert trainer.learning_rate == 0.1


HYPER = dict(learning_rate=0.02, beta1=0.8, beta2=0.95, epsilon=1e-4, epsilon_mode='inside',
             amsgrad=True, yogi=True, decoupled_wd=True, lazy_update=False, nonfinite='raise',
             wd=0.1, rescale_grad=0.5, clip_gradient=2.0, multi_precision=True, max_skips=7,
             lr_scheduler=mx.lr_scheduler.FactorScheduler(step=3, factor=0.5, base_lr=0.02))


def test_pickle_keeps_every_hyperparameter_and_the_behaviour():
    opt = MyAdam(**HYPER)
    clone = pickle.loads(pickle.dumps(opt))
    assert type(clone) is MyAdam
    for attr in ('lr', 'beta1', 'beta2', 'epsilon', 'epsilon_mode', 'amsgrad', 'yogi',
                 'decoupled_wd', 'lazy_update', 'nonfinite', 'wd', 'rescale_grad', 'clip_gradient',
                 'multi_precision', 'num_skipped', 'max_skips'):
        assert getattr(clone, attr) == getattr(opt, attr), attr
    assert clone.lr_scheduler.base_lr == opt.lr_scheduler.base_lr
    weights = []
    for o in (opt, clone):
        w = nd.array(np.linspace(-1, 1, 6))
        state = o.create_state(0, w)
        for k in range(5):
            o.update(0, w, nd.array(np.linspace(-3, 2, 6) * (k + 1)), state)
        weights.append(w.asnumpy())
    np.testing.assert_array_equal(weights[0], weights[1])
    assert not np.allclose(weights[0], np.linspace(-1, 1, 6))


# (gradient shape, gradient dtype) that do not fit a float32 weight of shape (4,)
MISFIT_GRADIENTS = [((1,), 'float32'), ((2, 2), 'float32'), ((5,), 'float32'),
                    ((4,), 'float64'), ((4,), 'float16')]


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('shape,dtype', MISFIT_GRADIENTS)
def test_gradient_that_does_not_fit_its_weight_is_refused(shape, dtype, fused):
    opt = MyAdam(learning_rate=0.1, fused=fused)
    weights = [nd.ones((3,)), nd.ones((4,))]
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    grads = [nd.ones((3,)), nd.ones(shape, dtype=dtype)]
    with pytest.raises(ValueError, match='parameter index 1') as err:
        opt.update([0, 1], weights, grads, states)
    assert str(shape) in str(err.value) and dtype in str(err.value)
    for w in weights:  # nothing moved, not even the parameter that fitted
        np.testing.assert_array_equal(w.asnumpy(), np.ones(w.shape, 'float32'))
    assert opt._index_update_count == {}


def test_a_misfit_gradient_is_refused_after_fitting_ones_for_the_same_index():
    # The fit check remembers fitted (weight, gradient) objects; a new object must be asked.
    opt = MyAdam(learning_rate=0.1)
    w = nd.ones((4,))
    state = opt.create_state(0, w)
    grad = nd.ones((4,))
    opt.update(0, w, grad, state)
    opt.update(0, w, grad, state)
    moved = w.asnumpy().copy()
    with pytest.raises(ValueError, match='shape'):
        opt.update(0, w, nd.ones((1,)), state)
    np.testing.assert_array_equal(w.asnumpy(), moved)
    assert opt._index_update_count[0] == 2


# The option table (adam_plugin.options) is the one declaration of every hyperparameter.
@pytest.mark.parametrize('option', OPTIONS, ids=[o.name for o in OPTIONS])
def test_each_option_is_in_the_signature_the_docs_and_a_default_instance(option):
    parameter = inspect.signature(MyAdam).parameters[option.name]
    assert parameter.default == option.default or parameter.default is option.default
    assert f"\n    {option.name} : {option.type}, default {option.default!r}\n" in MyAdam.__doc__
    assert getattr(MyAdam(), option.key) == option.default


def test_positional_arguments_keep_their_order():
    opt = MyAdam(0.05, 0.8, 0.99, 1e-6, 'inside', True)
    assert (opt.lr, opt.beta1, opt.beta2, opt.epsilon, opt.epsilon_mode, opt.amsgrad) == \
        (0.05, 0.8, 0.99, 1e-6, 'inside', True)


class _OwnFields(mx.lr_scheduler.LRScheduler):
    """A user's scheduler that keeps its own fields, not MXNet's (no super().__init__)."""

    def __init__(self):
        self.rate = 0.01

    def __call__(self, num_update):
        return self.rate


def test_a_users_scheduler_subclass_is_not_held_to_mxnets_fields():
    assert MyAdam(learning_rate=None, lr_scheduler=_OwnFields()).lr_scheduler.rate == 0.01


@pytest.mark.parametrize('scheduler, name', [
    (mx.lr_scheduler.FactorScheduler(step=3), 'step'),
    (mx.lr_scheduler.MultiFactorScheduler(step=[2, 5]), 'cur_step_ind'),
    (mx.lr_scheduler.PolyScheduler(max_update=5), 'max_update'),
    (mx.lr_scheduler.CosineScheduler(max_update=5), 'final_lr')])
def test_mxnets_scheduler_with_a_field_out_of_range_is_refused(scheduler, name):
    MyAdam(lr_scheduler=scheduler)  # as made: valid
    scheduler.__dict__[name] = -1
    with pytest.raises(ValueError) as err:
        MyAdam(lr_scheduler=scheduler)
    assert str(err.value).startswith(f"Invalid lr_scheduler.{name}: -1 (expected ")
