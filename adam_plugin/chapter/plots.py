"""Figures for the command line and the notebook.

Every function returns a :class:`matplotlib.figure.Figure` built without
``pyplot``: no global state, no backend choice. A notebook shows the returned
figure inline; the command line writes it with :func:`save`.
"""
__all__ = ['save', 'loss_curves', 'lr_sweep', 'bias_correction', 'first_steps']

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


def bias_correction(grads, raw, corrected, beta1, mean=None):
    """Gradients, the raw first moment ``v_t`` and the corrected ``v_hat_t`` against step ``t``.

    Parameters
    ----------
    grads, raw, corrected : array_like of shape (steps,)
        As :func:`adam_plugin.chapter.probes.first_moment` returns them.
    beta1 : float
        For the labels.
    mean : float, optional
        The gradients' expected value, drawn as a horizontal line.

    Returns
    -------
    matplotlib.figure.Figure
    """
    steps = range(1, len(grads) + 1)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(steps, grads, 'o', color='0.6', label='gradient $g_t$')
    ax.plot(steps, raw, '-', label=r'raw $v_t$')
    ax.plot(steps, corrected, '--', label=rf'corrected $\hat v_t = v_t / (1 - {beta1:g}^t)$')
    if mean is not None:
        ax.axhline(mean, color='0.3', linewidth=0.8, label=f'mean gradient {mean:g}')
    ax.set_xlabel('step $t$')
    ax.set_title(rf'First moment, $\beta_1 = {beta1:g}$')
    ax.legend()
    fig.tight_layout()
    return fig


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
