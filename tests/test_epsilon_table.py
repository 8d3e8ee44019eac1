"""The epsilon table's "who uses it" column (README.md and docs/rule.md) against the
implementations it names: each one's Adam agrees with ``MyAdam`` in the ``epsilon_mode`` of
its row, and with neither of the other two, on gradients near epsilon (where the modes part).

Libraries run as they are: ``torch.optim.Adam``, MXNet's ``mx.optimizer.Adam``, and Keras 3's
``keras.optimizers.Adam`` on its torch backend, in a Python of its own (``KERAS_BACKEND`` is
read once per process, at ``import keras``). The others are transcribed to NumPy in
``tests/oracles.py``: d2l.ai's ``adam`` (the chapter's code), optax's ``adam`` with ``eps=0``
and ``eps_root`` (jax is not installed: see there), and the two formulas the table names
(the chapter's printed one and the paper's epsilon-hat) as :class:`oracles.NumpyAdam`.
A name in the column that no oracle here checks fails the test.
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import adam_plugin  # noqa: F401  (registers 'myadam')
from oracles import NumpyAdam, d2l_adam, optax_adam

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / 'README.md', ROOT / 'docs' / 'rule.md']
MODES = ('outside', 'inside', 'hat')
LR = 0.01
EPSILON = 1e-6  # d2l's code fixes it; every other oracle is given it
STEPS = 10
# Agreement per oracle, on the weights' changes over the run, all computed in float64:
# Keras keeps its learning rate in a float32 variable, and MXNet's adam_update takes
# beta1 and beta2 as float32 (README: 1.3e-5 relative in 1 - beta2).
TOL = dict(default=1e-10, keras=1e-6, mxnet=1e-4)
# The modes must part by far more than any tolerance on these inputs.
PARTED = 1e-2

KERAS_RUN = """\
import json, sys
import numpy as np
import keras
assert keras.backend.backend() == 'torch', keras.backend.backend()
problem = json.load(sys.stdin)
weight = keras.Variable(np.array(problem['weight']), dtype='float64')
adam = keras.optimizers.Adam(learning_rate=problem['lr'], epsilon=problem['epsilon'])
for grad in problem['grads']:
    adam.apply_gradients([(keras.ops.convert_to_tensor(np.array(grad), dtype='float64'), weight)])
print(json.dumps([keras.__version__, keras.ops.convert_to_numpy(weight).tolist()]))
"""


def keras_adam(weight, grads, tmp_path):
    env = {**os.environ, 'KERAS_BACKEND': 'torch', 'KERAS_HOME': str(tmp_path / 'keras')}
    done = subprocess.run([sys.executable, '-c', KERAS_RUN], capture_output=True, text=True,
                          timeout=300, env=env,
                          input=json.dumps(dict(weight=weight.tolist(), lr=LR, epsilon=EPSILON,
                                                grads=[g.tolist() for g in grads])))
    assert done.returncode == 0, done.stderr[-3000:]
    version, result = json.loads(done.stdout.strip().splitlines()[-1])
    assert version.startswith('3.'), f'Keras {version}, not Keras 3'
    return np.array(result)


def torch_adam(weight, grads, tmp_path):
    import torch
    param = torch.tensor(weight, requires_grad=True)
    adam = torch.optim.Adam([param], lr=LR, eps=EPSILON)
    for grad in grads:
        param.grad = torch.tensor(grad)
        adam.step()
    return param.detach().numpy()


def mxnet_adam(weight, grads, tmp_path, optimizer=None):
    optimizer = optimizer or mx.optimizer.Adam(learning_rate=LR, epsilon=EPSILON)
    w = mx.nd.array(weight, dtype='float64')
    state = optimizer.create_state(0, w)
    for grad in grads:
        optimizer.update(0, w, mx.nd.array(grad, dtype='float64'), state)
    return w.asnumpy()


def chapter_code(weight, grads, tmp_path):
    p = np.array(weight)
    states, hyperparams = [(np.zeros_like(p), np.zeros_like(p))], {'lr': LR, 't': 1}
    for grad in grads:
        d2l_adam([(p, grad)], states, hyperparams)
    return p


def formula(mode):
    def run(weight, grads, tmp_path):
        adam = NumpyAdam(lr=LR, epsilon=EPSILON, epsilon_mode=mode)
        w = weight
        for grad in grads:
            w = adam.step(0, w, grad)
        return w
    return run


# The column's names -> (oracle key, the implementation it names)
ORACLES = {
    "the chapter's code": ('default', chapter_code),
    'PyTorch': ('default', torch_adam),
    'Keras 3': ('keras', keras_adam),
    "the chapter's printed formula": ('default', formula('inside')),
    "optax's `eps_root`": ('default', lambda weight, grads, tmp_path: optax_adam(
        LR, [[g] for g in grads], [weight], eps=0.0, eps_root=EPSILON)[0]),
    "the paper's epsilon-hat": ('default', formula('hat')),
    '`mx.optimizer.Adam`': ('mxnet', mxnet_adam),
}


def who_uses_it(text, where):
    """``{mode: [name, ...]}`` from the epsilon table of the page ``where`` that holds
    ``text``; a parenthesis after a name (a citation) is left out."""
    lines = text.split('\n')
    header = [i for i, line in enumerate(lines)
              if line.startswith('| `epsilon_mode` | `u =`') and line.endswith('| who uses it |')]
    assert len(header) == 1, f'{where}: {len(header)} epsilon tables, not one'
    table = {}
    for line in lines[header[0] + 2:]:
        if not line.startswith('|'):
            break
        cells = [c.strip() for c in line.strip('|').split('|')]
        mode = re.match(r"`'(\w+)'`", cells[0]).group(1)
        names = re.split(r'[;,] ', re.sub(r'\s*\([^)]*\)', '', cells[-1]))
        table[mode] = [name.strip() for name in names if name.strip()]
    assert sorted(table) == sorted(MODES), f'{where}: the table has rows {sorted(table)}'
    return table


@pytest.fixture(scope='module')
def problem():
    """A weight and gradients of magnitudes 1e-7.5 to 1e-4, near epsilon = 1e-6."""
    rng = np.random.default_rng(7)
    weight = rng.normal(size=40)
    grads = [rng.choice([-1.0, 1.0], size=40) * 10 ** rng.uniform(-7.5, -4, size=40)
             for _ in range(STEPS)]
    return weight, grads


@pytest.fixture(scope='module')
def modes(problem):
    """``MyAdam``'s change to the weight in each ``epsilon_mode``."""
    weight, grads = problem
    return {mode: mxnet_adam(weight, grads, None, mx.optimizer.create(
        'myadam', learning_rate=LR, epsilon=EPSILON, epsilon_mode=mode)) - weight
        for mode in MODES}


def parted(a, b):
    """How far apart two changes of the weight are, relative to the larger."""
    return np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)))


def test_the_inputs_part_the_modes(modes):
    for i, a in enumerate(MODES):
        for b in MODES[i + 1:]:
            assert parted(modes[a], modes[b]) > PARTED, (a, b, parted(modes[a], modes[b]))


def test_the_column_reader():
    text = ("| `epsilon_mode` | `u =` | who uses it |\n|---|---|---|\n"
            "| `'outside'` | x | A, B (a citation); C |\n| `'inside'` | x | D |\n"
            "| `'hat'` | x | E |\n")
    assert who_uses_it(text, 'made-up') == {'outside': ['A', 'B', 'C'], 'inside': ['D'],
                                            'hat': ['E']}


@pytest.mark.slow
@pytest.mark.parametrize('page', PAGES, ids=[p.name for p in PAGES])
def test_each_named_adam_computes_its_rows_mode(page, problem, modes, tmp_path):
    weight, grads = problem
    wrong = []
    for mode, names in who_uses_it(page.read_text(), page.name).items():
        for name in names:
            if name not in ORACLES:
                wrong.append(f'{name!r} ({mode}): no oracle here checks it')
                continue
            key, run = ORACLES[name]
            change = run(weight, [g.copy() for g in grads], tmp_path) - weight
            gaps = {m: parted(change, modes[m]) for m in MODES}
            agrees = [m for m in MODES if gaps[m] <= TOL[key]]
            if agrees != [mode]:
                wrong.append(f'{name!r}: the table says {mode!r}; it agrees with {agrees} '
                             f'(relative gaps {", ".join(f"{m} {g:.1e}" for m, g in gaps.items())})')
    assert not wrong, f'{page.name}:\n' + '\n'.join(wrong)
