"""Behaviour that the mutation run (`make mutants`) found unpinned by the other tests."""
import warnings

import numpy as np
import pytest
from mxnet import gluon, nd

from adam_plugin import MyAdam

# (keyword arguments, the whole message): the parameter, its value and the valid range.
MESSAGES = [
    (dict(learning_rate=-0.1), "Invalid learning_rate: -0.1 (expected >= 0)"),
    (dict(beta1=1.0), "Invalid beta1: 1.0 (expected in [0, 1))"),
    (dict(beta2=-0.5), "Invalid beta2: -0.5 (expected in [0, 1))"),
    (dict(epsilon=0.0),
     "Invalid epsilon: 0.0 (expected > 0: with 0, a zero gradient element makes the update 0 / 0)"),
    (dict(wd=-1), "Invalid wd: -1 (expected >= 0)"),
    (dict(rescale_grad=0.0), "Invalid rescale_grad: 0.0 (expected > 0)"),
    (dict(clip_gradient=-2.0), "Invalid clip_gradient: -2.0 (expected None or > 0)"),
    (dict(epsilon_mode='middle'),
     "Invalid epsilon_mode: 'middle' (expected one of ('outside', 'inside', 'hat'))"),
    (dict(nonfinite='ignore'), "Invalid nonfinite: 'ignore' (expected one of ('skip', 'raise'))"),
    (dict(learning_rate='0.1'),
     "Invalid learning_rate: '0.1' (expected >= 0; a str is not a number)"),
    (dict(amsgrad='no'), "Invalid amsgrad: 'no' (expected True or False)"),
    (dict(multi_precision=2), "Invalid multi_precision: 2 (expected True or False)"),
]


@pytest.mark.parametrize('kwargs,message', MESSAGES, ids=[m.split(':')[0] for _, m in MESSAGES])
def test_the_refusal_says_which_value_and_what_is_valid(kwargs, message):
    with pytest.raises(ValueError) as err:
        MyAdam(**kwargs)
    assert str(err.value) == message


def _first_step(trainer, param, grad):
    param.grad()[:] = grad
    param.data()._fresh_grad = True
    before = param.data().asnumpy().copy()
    trainer.step(1)
    return param.data().asnumpy() - before


@pytest.mark.parametrize('lr', [0.0, 0.05])
def test_set_learning_rate_takes_a_valid_rate(lr):
    # Adam's first step is lr * sign(g) for |g| >> epsilon.
    p = gluon.Parameter('w', shape=(3,))
    p.initialize()
    trainer = gluon.Trainer([p], 'myadam', {'learning_rate': 0.1})
    trainer.set_learning_rate(lr)
    assert trainer.learning_rate == lr
    step = _first_step(trainer, p, nd.array([2.0, -3.0, 0.5]))
    np.testing.assert_allclose(step, -lr * np.array([1.0, -1.0, 1.0]), rtol=1e-6, atol=0)


def test_set_learning_rate_refusal_names_the_value():
    with pytest.raises(ValueError) as err:
        MyAdam().set_learning_rate(-2.0)
    assert str(err.value) == "Invalid learning_rate: -2.0 (expected >= 0)"


def test_a_skipped_update_warns_naming_the_parameter():
    opt = MyAdam(learning_rate=0.1)
    weight = nd.ones((2,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        opt.update(4, weight, nd.array([1.0, np.nan]), opt.create_state(4, weight))
    assert len(caught) == 1 and caught[0].category is RuntimeWarning
    assert str(caught[0].message) == ("myadam: skipped the update of parameter index 4: "
                                      "its gradient holds NaN or Inf (1 in a row for this "
                                      "parameter, 1 in all; at max_skips=50 in a row, "
                                      "FloatingPointError)")
    np.testing.assert_array_equal(weight.asnumpy(), [1.0, 1.0])


def test_an_unpickled_optimizer_still_names_a_misfit_gradient():
    import pickle
    opt = pickle.loads(pickle.dumps(MyAdam(learning_rate=0.1)))
    weight = nd.ones((4,))
    with pytest.raises(ValueError, match='parameter index 3'):
        opt.update(3, weight, nd.ones((2,)), opt.create_state(3, weight))


def test_update_steps_a_float16_weight_in_float16():
    # update() never uses a master copy, whatever multi_precision says: the state is (m, v).
    from oracles import NumpyAdam
    opt = MyAdam(learning_rate=0.1, multi_precision=True)
    w0 = np.float16([0.5, -1.0, 2.0])
    weight = nd.array(w0, dtype='float16')
    state = opt.create_state(0, weight)
    grad = np.float16([1.0, -0.5, 0.25])
    opt.update(0, weight, nd.array(grad, dtype='float16'), state)
    want = NumpyAdam(lr=0.1).step(0, w0, grad)
    assert weight.dtype == np.float16
    np.testing.assert_allclose(weight.asnumpy(), want, rtol=2e-3, atol=1e-3)


def test_raise_names_every_bad_gradient_and_says_nothing_moved():
    opt = MyAdam(learning_rate=0.1, nonfinite='raise')
    weights = [nd.ones((2,)) for _ in range(3)]
    grads = [nd.array([np.inf, 1.0]), nd.ones((2,)), nd.array([1.0, np.nan])]
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    with pytest.raises(FloatingPointError) as err:
        opt.update([0, 1, 2], weights, grads, states)
    assert str(err.value) == ("myadam: the gradient of parameter index 0, parameter index 2 "
                              "holds NaN or Inf; nothing was updated")
    for w in weights:
        np.testing.assert_array_equal(w.asnumpy(), [1.0, 1.0])
