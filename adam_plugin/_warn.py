"""The package's warnings, attributed to the user's line rather than to ours.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.
"""
import sys
import warnings

# Frames of these packages are passed over: the user's line is the first one outside them.
INSIDE = ('adam_plugin', 'mxnet')


def _internal(frame):
    """A frame that warnings.warn itself passes over when it counts ``stacklevel``
    (the import machinery's, as during ``import adam_plugin``)."""
    filename = frame.f_code.co_filename
    return 'importlib' in filename and '_bootstrap' in filename


def warn(message, category=RuntimeWarning):
    """``warnings.warn(message, category)`` at the innermost caller outside adam_plugin and
    MXNet, so that it names the user's ``trainer.step(...)``, ``opt.update(...)`` or ``import``
    line whatever path led to it (the Trainer, an Updater, the KVStore's callback); at the
    outermost frame if every frame is theirs."""
    frame, stacklevel = sys._getframe(0), 1
    while frame.f_back is not None:
        frame = frame.f_back
        if _internal(frame):
            continue
        stacklevel += 1
        if frame.f_globals.get('__name__', '').partition('.')[0] not in INSIDE:
            break
    warnings.warn(message, category, stacklevel=stacklevel)
