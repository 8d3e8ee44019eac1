"""The notebook's and the command line's figures: each axis holds the data it is labelled with."""
import numpy as np
import pytest

from adam_plugin.chapter import linreg, plots, probes


def lines(ax):
    """``label -> (x, y)`` of the lines drawn on ``ax``."""
    return {line.get_label(): (np.asarray(line.get_xdata(), float),
                               np.asarray(line.get_ydata(), float)) for line in ax.get_lines()}


def run(losses, epochs):
    return linreg.Run(w=np.zeros(2), b=0.0, losses=list(losses), epochs=np.asarray(epochs),
                      trace=np.zeros((1, 3)))


def only_axes(fig):
    (ax,) = fig.axes
    return ax


def test_loss_curves_plot_loss_against_epoch():
    runs = {'a': run([9.0, 3.0, 1.0], [0.0, 0.5, 1.0]), 'b': run([8.0, 2.0, 0.5], [0.0, 1.0, 2.0])}
    ax = only_axes(plots.loss_curves(runs, title='t'))
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()) == ('epoch', 'loss', 'log')
    drawn = lines(ax)
    for label, r in runs.items():
        np.testing.assert_array_equal(drawn[label][0], r.epochs)
        np.testing.assert_array_equal(drawn[label][1], r.losses)


def test_bias_correction_plots_both_moments_against_step():
    grads = np.array([1.5, 0.5, 1.2, 0.8])
    mom = probes.moments(grads)
    first, second = plots.bias_correction(grads, mom, 0.9, 0.999, mean=1.0).axes
    steps = np.arange(1, 5)
    for ax, ylabel, series in ((first, 'first moment', (grads, mom.v, mom.v_hat)),
                               (second, 'second moment', (grads ** 2, mom.s, mom.s_hat))):
        assert (ax.get_xlabel(), ax.get_ylabel()) == ('step $t$', ylabel)
        drawn = [xy for label, xy in lines(ax).items() if not label.startswith('mean')]
        assert len(drawn) == 3
        for (x, y), want in zip(drawn, series, strict=True):
            np.testing.assert_array_equal(x, steps)
            np.testing.assert_allclose(y, want, rtol=1e-6)
    assert second.get_yscale() == 'log' and first.get_yscale() == 'linear'


def test_differences_plot_the_largest_difference_per_step():
    ref = np.zeros((4, 3))
    trace = np.array([[1e-7, 0, 0], [0, 0, 0], [0, -3e-6, 1e-6], [2e-5, 0, 0]])
    ax = only_axes(plots.differences({'x': trace}, ref))
    assert ax.get_xlabel() == 'step' and 'difference' in ax.get_ylabel()
    assert ax.get_yscale() == 'log'
    x, y = lines(ax)['x']
    np.testing.assert_array_equal(x, [1, 3, 4])  # step 2 has no difference: no point on a log axis
    np.testing.assert_allclose(y, [1e-7, 3e-6, 2e-5])


def test_first_steps_plot_step_against_gradient():
    g = np.logspace(-3, 1, 5)
    sizes = {'outside': probes.first_step(g, epsilon=1e-2)}
    ax = only_axes(plots.first_steps(g, sizes))
    assert ax.get_xlabel() == 'gradient $|g_1|$' and ax.get_ylabel() == 'first step / lr'
    assert ax.get_xscale() == ax.get_yscale() == 'log'
    x, y = lines(ax)['outside']
    np.testing.assert_array_equal(x, g)
    np.testing.assert_array_equal(y, sizes['outside'])
    assert y[0] < 0.2 and y[-1] > 0.99  # epsilon shrinks only the small gradients' steps


def test_paths_plot_values_against_step():
    ax = only_axes(plots.paths({'x': np.array([0.0, 0.5, -1.0])}, 'x'))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ('step $t$', 'x')
    x, y = lines(ax)['x']
    np.testing.assert_array_equal(x, [1, 2, 3])
    np.testing.assert_array_equal(y, [0.0, 0.5, -1.0])


@pytest.mark.parametrize('figure', [
    lambda: plots.loss_curves({'a': run([1.0, 0.5], [0, 1])}),
    lambda: plots.differences({'a': np.ones((2, 3))}, np.zeros((2, 3))),
    lambda: plots.paths({'a': [1.0, 2.0]}, 'x'),
])
def test_no_axes_is_empty_or_unlabelled(figure):
    for ax in figure().axes:
        assert ax.get_lines() and ax.get_xlabel() and ax.get_ylabel()
        assert ax.get_legend() is not None
