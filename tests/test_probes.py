"""The probes: bias correction and epsilon placement, read from MyAdam itself."""
import numpy as np
import pytest

from adam_plugin.chapter.probes import first_moment, first_step


@pytest.mark.parametrize('beta1', [0.9, 0.5, 0.99])
def test_constant_gradient(beta1):
    # The chapter: v_t = (1 - beta1) * sum_i beta1**(t - i) * g_i, whose weights sum to
    # 1 - beta1**t; dividing by that restores g when g is constant.
    g, steps = 2.5, 12
    raw, corrected = first_moment([g] * steps, beta1=beta1)
    t = np.arange(1, steps + 1)
    np.testing.assert_allclose(raw, g * (1 - beta1 ** t), rtol=1e-5)
    np.testing.assert_allclose(corrected, g, rtol=1e-5)


def test_first_step_is_a_tenth_of_the_gradient():
    # The chapter's remark: with beta1 = 0.9, v_1 = 0.1 g_1.
    raw, corrected = first_moment([-3.0, 1.0, 4.0], beta1=0.9)
    assert raw[0] == pytest.approx(-0.3, rel=1e-6)
    assert corrected[0] == pytest.approx(-3.0, rel=1e-6)
    assert raw[1] == pytest.approx(0.9 * -0.3 + 0.1 * 1.0, rel=1e-5)


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
