"""``python -m adam_plugin.checkpoint inspect FILE [--json]``: what a states file holds.

Internal: the command is public, this module's names are not (see :mod:`adam_plugin`).

Reads the file as :func:`adam_plugin.checkpoint.load_states` does, without
running code from it or building anything: the optimizer's class and
hyperparameters, its update counts, and each parameter's state: shapes and
dtypes, and the step count ``t``. A refused file prints the loader's message and
exits with status 1.
``--allow MODULE.CLASS`` (repeatable) allows a class one trusts, as
:func:`adam_plugin.checkpoint.add_safe_globals` does.
"""
import argparse
import importlib
import json
import sys

from .. import options
from .._pipe import run
from . import built, get_safe_globals, invalid, registered_optimizers, safe, safe_globals

# The optimizer's bookkeeping that counts updates, shown apart from the hyperparameters:
# each count by name, MXNet's per-device dicts of counts (``_all_index_update_counts``;
# ``_index_update_count`` is the current device's of them) as ``per_device``.
COUNTS = [kept.key for kept in options.KEPT if kept.update_count]


def describe(file):
    """What the states file ``file`` (a binary file object) holds, as JSON-ready data;
    raises :class:`safe.Refused`."""
    states, optimizer = safe.read(file, registered_optimizers(), _default, get_safe_globals())
    built(optimizer)  # its values, by the optimizer's own checks
    attrs = optimizer.state
    scheduler = attrs['lr_scheduler']
    return {
        'optimizer': optimizer.name,
        'hyperparameters': {k: _plain(v) for k, v in attrs.items()
                            if k not in COUNTS and k != 'lr_scheduler'},
        'lr_scheduler': None if scheduler is None else {
            'class': scheduler.name, **{k: _plain(v) for k, v in scheduler.state.items()}},
        'update_counts': {
            **{k: attrs[k] for k in COUNTS if k in attrs and not isinstance(attrs[k], dict)},
            'per_device': _plain(attrs['_all_index_update_counts'])},
        'states': {str(index): _arrays(state) for index, state in sorted(states.items())},
    }


def _default(cls):
    """A default instance of ``cls``, whose attributes the file's optimizer must have."""
    try:
        return cls()
    except Exception as err:  # any error: an optimizer that needs arguments
        raise safe.Refused(f"its optimizer {cls.__name__} cannot be checked: "
                           f"{cls.__name__}() raised {type(err).__name__}: {err}") from None


def _plain(value):
    """``value`` (checked plain data) as JSON: NumPy scalars and dtypes by value and name."""
    if isinstance(value, safe.Record):
        if getattr(value.kind, 'schedule', False):  # an object of an allowed class
            return {'class': value.name, **{k: _plain(v) for k, v in value.state.items()}}
        return value.kind.check(value).item() if value.kind is safe.SCALAR \
            else str(value.kind.check(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, complex)):
        return repr(value)
    return value


def _arrays(state):
    if isinstance(state, safe.Record):
        header = state.header
        return {'shape': list(header.shape), 'dtype': header.dtype, 'stype': header.stype,
                'device': header.device, 'class': state.name}
    if state is None or type(state) is int:
        return state
    if type(state) is list and len(state) == 1 and type(state[0]) is int:
        return {'step_count': state[0]}  # [t] (see MyAdam.create_state)
    return [_arrays(s) for s in state]


def _text(info):
    lines = [f"optimizer: {info['optimizer']}", "hyperparameters:"]
    lines += [f"  {k} = {v!r}" for k, v in info['hyperparameters'].items()]
    scheduler = info['lr_scheduler']
    lines.append(f"lr_scheduler: {scheduler and scheduler.pop('class')}")
    lines += [f"  {k} = {v!r}" for k, v in (scheduler or {}).items()]
    counts = info['update_counts']
    per_device = counts.pop('per_device')
    lines.append("update counts: " + ", ".join(f"{k} = {v}" for k, v in counts.items()))
    lines += [f"  device {d}: {per_index}" for d, per_index in per_device.items()]
    lines.append("states:")
    lines += [f"  parameter {index}: {_state_text(state)}"
              for index, state in info['states'].items()]
    return "\n".join(lines)


def _state_text(state):
    if isinstance(state, dict) and 'step_count' in state:
        return f"t={state['step_count']}"
    if isinstance(state, dict):
        shape = "x".join(map(str, state['shape'])) or "scalar"
        stype = "" if state['stype'] == 'default' else f" {state['stype']}"
        return f"{state['dtype']}[{shape}]{stype}"
    if state is None or isinstance(state, int):
        return str(state)
    return "(" + ", ".join(_state_text(s) for s in state) + ")"


def _imported(name):
    """The class ``MODULE.CLASS`` names, imported (only as the user asks, by --allow)."""
    module, _, qualname = name.rpartition('.')
    if not module:
        raise ValueError(f"{name!r} is not MODULE.CLASS")
    return getattr(importlib.import_module(module), qualname)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m adam_plugin.checkpoint',
                                     description=__doc__.splitlines()[0].replace('``', ''))
    commands = parser.add_subparsers(dest='command', required=True)
    inspect = commands.add_parser('inspect', help="print what a states file holds, "
                                  "without running code from it")
    inspect.add_argument('file')
    inspect.add_argument('--json', action='store_true', help="print JSON")
    inspect.add_argument('--allow', action='append', default=[], metavar='MODULE.CLASS',
                         help="a class you trust that the file may hold (imports MODULE), "
                         "as adam_plugin.checkpoint.add_safe_globals allows it; repeatable")
    args = parser.parse_args(argv)
    try:
        with safe_globals([_imported(name) for name in args.allow]):
            with open(args.file, 'rb') as f:
                info = describe(f)
    except (OSError, safe.Refused) as err:
        print(invalid(args.file, err), file=sys.stderr)
        return 1
    except (ImportError, AttributeError, ValueError, TypeError) as err:  # a bad --allow
        parser.error(f"--allow: {err}")
    print(json.dumps(info, indent=1) if args.json else _text(info))
    return 0


if __name__ == '__main__':
    sys.exit(run(main))
