"""Figures: the chapter's loss-against-epoch plot on a log scale."""
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def loss_curves(path, runs, title=None):
    """Write a PNG of each run's loss curve (log scale) on one axes.

    Parameters
    ----------
    path : str
        Output file.
    runs : dict of str to adam_plugin.linreg.Run
        Label and run; each run's ``epochs`` and ``losses`` are plotted.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for (label, run), style in zip(runs.items(), ['-', '--', ':', '-.'] * len(runs)):
        ax.semilogy(run.epochs, run.losses, style, label=label)
    ax.set_xlabel('epoch')
    ax.set_ylabel('loss')
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
