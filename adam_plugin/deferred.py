"""Errors raised inside MXNet's KVStore callback, carried to the user.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

With ``update_on_kvstore=True`` (``gluon.Trainer``'s default with several
devices) the KVStore runs the optimizer from C through a ctypes callback,
``updater_handle`` in ``mxnet/kvstore/kvstore.py``. ctypes cannot pass an
exception back through C: it hands it to ``sys.unraisablehook``, which prints
it, and the push returns normally. So an exception raised there is kept here
instead, and raised as soon as MXNet's C code has returned to Python: a hook on
the thread that ran the callback (its profile hook, or its trace hook when a
profiler holds that one, so that neither a profiler nor a tracer is displaced:
:func:`adam_plugin.mxnet_internals.raise_after_callback`) raises it, with its
original traceback, at that thread's first Python call outside the callback,
which is in MXNet's code right after the push or pull. So it comes out of the
call that ran the update: ``Trainer.step``, ``Module.update``, ``Module.fit``.
Should no Python run on that thread outside the callback (a callback on one of
MXNet's own threads), or both hooks be taken (a profiler and a tracer at once),
the optimizer's next entry point outside the callback raises it:
``Trainer.step`` and ``Trainer.update`` set ``rescale_grad`` first thing in
every call, and ``Trainer.save_states`` pickles the optimizer.

A warning says so at once, for a loop that swallows the exception.

A distributed KVStore's server (``DMLC_ROLE=server``) runs the same callback but
has no Trainer to raise from: there the exception goes on to ctypes, whose
``sys.unraisablehook`` the servers of :mod:`adam_plugin.scaleout.launch` make fatal.
"""
import traceback

from . import _warn, distributed, mxnet_internals


class ErrorCarrier:
    """Runs updates, and carries the first exception one raised inside the KVStore
    callback out of it (see the module's docstring).

    :meth:`run` calls an update. Outside the callback an exception propagates as
    usual; inside it, it is kept, and the updates after it are not applied, as a
    raising loop would stop: the KVStore calls once per parameter, so those updated
    before the failure keep their step. :meth:`raise_pending` raises the kept
    exception, with its original traceback, once.
    """

    def __init__(self):
        self.error = None

    def run(self, update, *args):
        """``update(*args)``, keeping its exception when inside the KVStore callback."""
        if self.error is not None:
            if mxnet_internals.in_kvstore_callback():
                return  # the step stopped at the kept error
            self.raise_pending()
        try:
            update(*args)
        except Exception as error:
            if not mxnet_internals.in_kvstore_callback() or distributed.on_server():
                raise
            self.error = error
            origin = traceback.extract_tb(error.__traceback__)[-1]
            when = ("as soon as MXNet returns to Python (out of Trainer.step, Module.update, "
                    "...)" if self._deliver() else
                    "by the optimizer's next call outside the callback (the next "
                    "Trainer.step, a save): a profiler and a tracer run, both of this "
                    "thread's hooks are taken")
            _warn.warn(f"myadam: {type(error).__name__}({error}), raised at "
                       f"{origin.filename}:{origin.lineno} in {origin.name} inside the "
                       f"KVStore's updater callback, which cannot pass it on; it is raised {when}")

    def _deliver(self):
        """Raise the kept error at this thread's first Python call outside the callback
        (see the module's docstring); False if this thread's hooks are both taken."""
        return mxnet_internals.raise_after_callback(lambda: self.error is not None,
                                                    self.raise_pending)

    def raise_pending(self):
        """Raise the kept exception, if any, and forget it."""
        error, self.error = self.error, None
        if error is not None:
            raise error
