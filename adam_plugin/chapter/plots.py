"""Figures for the command line and the notebook.

Every function returns a :class:`matplotlib.figure.Figure` built without
``pyplot``: no global state, no backend choice. A notebook shows the returned
figure inline; the command line writes it with :func:`save`.
"""
__all__ = ['save', 'loss_curves', 'lr_sweep', 'bias_correction', 'differences', 'paths',
           'first_steps']

import numpy as np
from matplotlib.figure import Figure

STYLES = ('-', '--', ':', '-.')


def save(fig, path):
    """Write ``fig`` to ``path`` (the format follows the file's extension)."""
    fig.savefig(path, dpi=100)


def _lines(series, xlabel, ylabel, title=None, log='y'):
    """One axes, one line per ``label: (x, y)`` in ``series``; ``log`` names the log axes."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for i, (label, (x, y)) in enumerate(series.items()):
        ax.plot(x, y, STYLES[i % len(STYLES)], label=label)
    if 'x' in log:
        ax.set_xscale('log')
    if 'y' in log:
        ax.set_yscale('log')
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def loss_curves(runs, title=None):
    """The chapter's figure: each run's loss against epoch, on a log scale.

    Parameters
    ----------
    runs : dict of str to adam_plugin.chapter.linreg.Run
        Label and run; each run's ``epochs`` and ``losses`` are plotted.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    return _lines({label: (run.epochs, run.losses) for label, run in runs.items()},
                  'epoch', 'loss', title)


def lr_sweep(runs, batch_size):
    """The chapter's exercise: one loss curve per learning rate.

    Parameters
    ----------
    runs : dict of float to adam_plugin.chapter.linreg.Run
        Learning rate and run, as :func:`adam_plugin.chapter.linreg.sweep` returns them.
    batch_size : int
        For the title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    return loss_curves({f'lr = {lr:g}': run for lr, run in runs.items()},
                       title=f"Trainer 'myadam', batch size {batch_size}")


def bias_correction(grads, moments, beta1, beta2, mean=None, letters=('v', 's')):
    """Both moments against step ``t``, raw and corrected, as ``MyAdam`` holds them.

    Left: the gradients, ``v_t`` and ``v_hat_t``. Right, on a log axis: ``g_t**2``,
    ``s_t`` and ``s_hat_t`` (``s_1 = (1 - beta2) g_1**2`` is a thousand times too small).

    Parameters
    ----------
    grads : array_like of shape (steps,)
    moments : adam_plugin.chapter.probes.Moments
        As :func:`adam_plugin.chapter.probes.moments` returns them for ``grads``.
    beta1, beta2 : float
        For the labels.
    mean : float, optional
        The gradients' expected value, drawn as a horizontal line on the left.
    letters : (str, str)
        The moments' letters in the labels: the chapter's ``('v', 's')``, or
        ``('m', 'v')`` as ``MyAdam`` and the rest of its documentation name them.

    Returns
    -------
    matplotlib.figure.Figure
    """
    steps = np.arange(1, len(grads) + 1)
    fig = Figure(figsize=(11, 4))
    first, second = fig.subplots(1, 2)
    first.plot(steps, grads, 'o', color='0.6', label='gradient $g_t$')
    first_letter, second_letter = letters
    first.plot(steps, moments.v, '-', label=rf'raw ${first_letter}_t$')
    first.plot(steps, moments.v_hat, '--', label=rf'corrected $\hat {first_letter}_t = '
                                                 rf'{first_letter}_t / (1 - {beta1:g}^t)$')
    if mean is not None:
        first.axhline(mean, color='0.3', linewidth=0.8, label=f'mean gradient {mean:g}')
    first.set_ylabel('first moment')
    first.set_title(rf'First moment, $\beta_1 = {beta1:g}$')
    second.plot(steps, np.square(grads), 'o', color='0.6', label='$g_t^2$')
    second.plot(steps, moments.s, '-', label=rf'raw ${second_letter}_t$')
    second.plot(steps, moments.s_hat, '--', label=rf'corrected $\hat {second_letter}_t = '
                                                  rf'{second_letter}_t / (1 - {beta2:g}^t)$')
    second.set_yscale('log')
    second.set_ylabel('second moment')
    second.set_title(rf'Second moment, $\beta_2 = {beta2:g}$')
    for ax in (first, second):
        ax.set_xlabel('step $t$')
        ax.legend()
    fig.tight_layout()
    return fig


def differences(traces, reference, title=None):
    """The largest absolute difference from ``reference`` in any parameter, per step, log axis.

    Parameters
    ----------
    traces : dict of str to ndarray of shape (steps, params)
        Label and trace (``Run.trace``); each is compared with ``reference``.
    reference : ndarray of shape (steps, params)
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Steps where the difference is exactly 0 are left out (a log axis has no 0).
    """
    series = {}
    for label, trace in traces.items():
        diff = np.abs(np.asarray(trace) - np.asarray(reference)).max(axis=1)
        steps = np.arange(1, len(diff) + 1)
        series[label] = (steps[diff > 0], diff[diff > 0])
    return _lines(series, 'step', 'largest |difference| in a parameter', title)


def paths(series, ylabel, title=None):
    """One line per ``label: values`` against step ``t`` = 1, 2, ... (linear axes).

    Returns
    -------
    matplotlib.figure.Figure
    """
    return _lines({label: (np.arange(1, len(y) + 1), y) for label, y in series.items()},
                  'step $t$', ylabel, title, log='')


def first_steps(grads, sizes, title=None):
    """The first step in units of the learning rate against ``|g|``, on log-log axes.

    Parameters
    ----------
    grads : array_like
        Gradient magnitudes.
    sizes : dict of str to array_like
        Label and step sizes, as :func:`adam_plugin.chapter.probes.first_step` returns them.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    return _lines({label: (grads, size) for label, size in sizes.items()},
                  'gradient $|g_1|$', 'first step / lr', title, log='xy')
