"""The probes: bias correction and epsilon placement, read from MyAdam itself."""
import numpy as np
import pytest

from adam_plugin.chapter.probes import first_step, moments


@pytest.mark.parametrize('beta1,beta2', [(0.9, 0.999), (0.5, 0.9), (0.99, 0.5)])
def test_constant_gradient(beta1, beta2):
    # The chapter: v_t = (1 - beta1) * sum_i beta1**(t - i) * g_i, whose weights sum to
    # 1 - beta1**t; dividing by that restores g when g is constant (and g**2 for s).
    g, steps = 2.5, 12
    mom = moments([g] * steps, beta1=beta1, beta2=beta2)
    t = np.arange(1, steps + 1)
    np.testing.assert_allclose(mom.v, g * (1 - beta1 ** t), rtol=1e-5)
    np.testing.assert_allclose(mom.v_hat, g, rtol=1e-5)
    np.testing.assert_allclose(mom.s, g ** 2 * (1 - beta2 ** t), rtol=1e-5)
    np.testing.assert_allclose(mom.s_hat, g ** 2, rtol=1e-5)


def test_first_step_is_a_tenth_of_the_gradient():
    # The chapter's remark: with beta1 = 0.9, v_1 = 0.1 g_1; and s_1 = 0.001 g_1**2.
    mom = moments([-3.0, 1.0, 4.0], beta1=0.9, beta2=0.999)
    assert mom.v[0] == pytest.approx(-0.3, rel=1e-6)
    assert mom.v_hat[0] == pytest.approx(-3.0, rel=1e-6)
    assert mom.v[1] == pytest.approx(0.9 * -0.3 + 0.1 * 1.0, rel=1e-5)
    assert mom.s[0] == pytest.approx(0.009, rel=1e-5)
    assert mom.s_hat[0] == pytest.approx(9.0, rel=1e-5)
    assert mom.s[1] == pytest.approx(0.999 * 0.009 + 0.001 * 1.0, rel=1e-5)


def test_each_moments_probe_starts_fresh():
    # t = 1 again on every call: a shared optimizer would carry the first call's state.
    first = moments([5.0, 5.0])
    again = moments([5.0, 5.0])
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_each_first_step_probe_is_a_fresh_optimizers_first_step():
    # At t = 1 every step is lr * |g| / (|g| + epsilon), whatever came before in the list;
    # one optimizer reused across probes would be at t = 2, 3, ... and give other sizes.
    grads = [1.0, 1e-3, 50.0, -2.0]
    sizes = first_step(grads)
    np.testing.assert_allclose(sizes, [abs(g) / (abs(g) + 1e-8) for g in grads], rtol=1e-6)
    for g, size in zip(grads, sizes, strict=True):
        assert first_step([g])[0] == size


EPS = 1e-4
# epsilon_mode, |g|, the first step / lr by hand at t = 1 (v_hat = g, s_hat = g**2,
# 1 - beta2 = 1e-3): where each placement halves (or, inside the root, divides by sqrt 2) the step.
FIRST_STEPS = [
    ('outside', EPS, 0.5),                          # g / (|g| + eps)
    ('inside', EPS ** 0.5, 0.5 ** 0.5),             # g / sqrt(g**2 + eps)
    ('hat', EPS / 1e-3 ** 0.5, 0.5),                # g / (|g| + eps / sqrt(1 - beta2))
    ('outside', 10.0, 10 / (10 + EPS)),
    ('inside', 10.0, 10 / (100 + EPS) ** 0.5),
    ('hat', 10.0, 10 / (10 + EPS / 1e-3 ** 0.5)),
]


@pytest.mark.parametrize('mode,g,want', FIRST_STEPS)
def test_first_step_by_epsilon_placement(mode, g, want):
    for sign in (1, -1):
        got = first_step([sign * g], epsilon=EPS, epsilon_mode=mode)
        assert got.shape == (1,)
        assert got[0] == pytest.approx(want, rel=1e-5)
