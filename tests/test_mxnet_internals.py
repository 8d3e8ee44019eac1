"""Every use of MXNet's private insides (adam_plugin.mxnet_internals), through what the
package needs of it: a release of MXNet that changes one fails here first, by its name.

The quick tier runs them, so ``make matrix`` runs them on every supported release.
"""
import ast
import cProfile
import ctypes
import importlib.util
import os
import pickle
import sys
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd
from mxnet.base import MXNetError

from adam_plugin import MyAdam, kernel, mxnet_internals as internals


class Recording(mx.optimizer.Optimizer):
    """Gradient descent that runs ``probe()`` at each update and keeps what it returns."""

    def __init__(self, probe):
        super().__init__(learning_rate=0.1)
        self.probe, self.found = probe, []

    def create_state(self, index, weight):
        return None

    def update(self, index, weight, grad, state):
        self.found.append(self.probe())
        weight[:] -= 0.1 * grad


def kvstore_with(optimizer):
    """A local KVStore that runs ``optimizer`` in its updater callback, key 0 set."""
    kv = mx.kv.create('local')
    kv.set_optimizer(optimizer)
    kv.init(0, nd.ones((3,)))
    return kv


# --- the KVStore's updater callback ----------------------------------------------------------

def test_in_kvstore_callback_tells_the_callback_from_other_callers():
    opt = Recording(internals.in_kvstore_callback)
    kvstore_with(opt).push(0, nd.ones((3,)))
    mx.optimizer.get_updater(opt)(0, nd.ones((3,)), nd.ones((3,)))
    opt.update(0, nd.ones((3,)), nd.ones((3,)), None)
    assert opt.found == [True, False, False]


class Failure(Exception):
    pass


def fail_in_the_callback(raised):
    """A KVStore's push, whose update arranges (raise_after_callback) to raise a Failure,
    made at the update, once MXNet is back in Python; True if that was arranged. ``raised``
    keeps the Failure until then."""
    arranged = []

    def raise_pending():
        error = raised.pop() if raised else None
        if error is not None:
            raise error

    def probe():
        try:
            raise Failure('raised in the callback')
        except Failure as error:
            raised.append(error)
        arranged.append(internals.raise_after_callback(lambda: bool(raised), raise_pending))

    kvstore_with(Recording(probe)).push(0, nd.ones((3,)))
    return arranged[0]


def test_an_error_arranged_in_the_callback_comes_out_of_the_push():
    with pytest.raises(Failure, match='raised in the callback') as caught:
        fail_in_the_callback([])
    assert any(entry.name == 'push' for entry in caught.traceback)  # KVStore.push
    assert any(entry.name == 'probe' for entry in caught.traceback)  # where it was raised
    assert sys.getprofile() is None and sys.gettrace() is None


def test_under_a_profiler_the_trace_hook_carries_it_and_the_profiler_stays():
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        with pytest.raises(Failure):
            fail_in_the_callback([])
        still = sys.getprofile(), sys.gettrace()
    finally:
        profiler.disable()
    assert still == (profiler, None)


def test_with_both_hooks_taken_nothing_is_arranged():
    profiler, tracer = cProfile.Profile(), lambda frame, event, arg: None
    profiler.enable()
    sys.settrace(tracer)
    raised = []
    try:
        assert fail_in_the_callback(raised) is False
        still = sys.getprofile(), sys.gettrace()
    finally:
        sys.settrace(None)
        profiler.disable()
    assert still == (profiler, tracer) and len(raised) == 1  # kept, not raised


def test_the_kvstores_own_updater_reads_aggregate_num_from_set_optimizer():
    opt = Recording(None)
    reads = []
    type(opt).aggregate_num = property(lambda self: reads.append(
        internals.read_by_kvstore_updater()) or 0)
    try:
        kvstore_with(opt)
        mx.optimizer.get_updater(opt)
    finally:
        del type(opt).aggregate_num
    assert reads == [True, False]
    kv = kvstore_with(MyAdam(learning_rate=0.1))  # so MyAdam's Updaters differ
    assert kv._updater.aggregate_updates is False
    assert mx.optimizer.get_updater(MyAdam(learning_rate=0.1)).aggregate_updates is True


# --- MXNet's C API: what the kernel calls, by the signatures it calls them with -------------

def c_function(name, restype, *argtypes):
    addresses = zip(internals.KERNEL_FUNCTIONS, internals.kernel_functions(), strict=True)
    address = dict(addresses)[name]
    return ctypes.CFUNCTYPE(restype, *argtypes)(address.value)


def test_the_kernels_functions_read_what_mxnet_holds():
    handle = ctypes.c_void_p
    array = nd.array(np.arange(6).reshape(2, 3), ctx=mx.cpu_pinned(0), dtype='float64')
    assert c_function('MXNDArrayWaitToRead', ctypes.c_int, handle)(array.handle) == 0
    assert c_function('MXNDArrayWaitAll', ctypes.c_int)() == 0
    ndim, dims = ctypes.c_int(), ctypes.POINTER(ctypes.c_int64)()
    assert c_function('MXNDArrayGetShapeEx64', ctypes.c_int, handle, ctypes.POINTER(ctypes.c_int),
                      ctypes.POINTER(ctypes.POINTER(ctypes.c_int64)))(
        array.handle, ctypes.byref(ndim), ctypes.byref(dims)) == 0
    assert dims[:ndim.value] == [2, 3]
    codes = {}
    for name in ('MXNDArrayGetDType', 'MXNDArrayGetStorageType'):
        code = ctypes.c_int()
        assert c_function(name, ctypes.c_int, handle, ctypes.POINTER(ctypes.c_int))(
            array.handle, ctypes.byref(code)) == 0
        codes[name] = code.value
    assert codes == {'MXNDArrayGetDType': 1, 'MXNDArrayGetStorageType': 0}  # float64, dense
    device, device_id = ctypes.c_int(), ctypes.c_int()
    assert c_function('MXNDArrayGetContext', ctypes.c_int, handle, ctypes.POINTER(ctypes.c_int),
                      ctypes.POINTER(ctypes.c_int))(
        array.handle, ctypes.byref(device), ctypes.byref(device_id)) == 0
    assert (device.value, device_id.value) == (3, 0)  # cpu_pinned(0)
    data = ctypes.c_void_p()
    assert c_function('MXNDArrayGetData', ctypes.c_int, handle, ctypes.POINTER(ctypes.c_void_p))(
        array.handle, ctypes.byref(data)) == 0
    ctypes.c_double.from_address(data.value + 8 * 4).value = -1.0  # written in place
    assert array.asnumpy().tolist() == [[0, 1, 2], [3, -1, 5]]


class Context(ctypes.Structure):
    """MXNet's struct Context, as _kernel.cpp declares it for MXEnginePushSyncND."""
    _fields_ = [('dev_type', ctypes.c_int), ('dev_id', ctypes.c_int32)]


SYNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def test_the_engine_runs_a_pushed_function_then_its_deleter():
    ran, deleted = [], []
    sync = SYNC(lambda run_context, param: ran.append(param))
    deleter = DELETER(lambda param: deleted.append(param))
    reads, writes = nd.zeros((2,)), nd.zeros((2,))
    push = c_function('MXEnginePushSyncND', ctypes.c_int, SYNC, ctypes.c_void_p, DELETER,
                      ctypes.POINTER(Context), ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                      ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_void_p,
                      ctypes.c_int, ctypes.c_char_p)
    const, mutable = (ctypes.c_void_p * 1)(reads.handle.value), (ctypes.c_void_p * 1)(
        writes.handle.value)
    assert push(sync, 7, deleter, ctypes.byref(Context(1, 0)), const, 1, mutable, 1, None, 0,
                b'adam_plugin_test') == 0
    writes.wait_to_read()  # the pushed function writes it, as far as the engine knows
    assert ran == [7]
    for _ in range(500):  # the engine frees the operation, and calls the deleter, after it
        if deleted:
            break
        time.sleep(0.01)
    assert deleted == [7]


NOT_AN_ARRAY = b'\x01' * 64


def load_raw(lib, raw):
    """MXNDArrayLoadFromRawBytes of ``raw`` in ``lib``: its status (the array freed)."""
    array = ctypes.c_void_p()
    status = lib.MXNDArrayLoadFromRawBytes(raw, ctypes.c_size_t(len(raw)), ctypes.byref(array))
    if status == 0:
        lib.MXNDArrayFree(array)
    return status


def test_check_raises_mxnets_last_error():
    internals.check(load_raw(mx.base._LIB, saved(nd.ones((2,)))))
    with pytest.raises(MXNetError, match='Check failed'):
        internals.check(load_raw(mx.base._LIB, NOT_AN_ARRAY))


def test_stored_rows_counts_the_rows_a_row_sparse_array_stores():
    array = nd.sparse.row_sparse_array((np.ones((3, 2)), [0, 4, 7]), shape=(9, 2))
    assert internals.stored_rows(array) == 3
    nd.sparse.zeros('row_sparse', (9, 2)).copyto(array)  # pending, then none stored
    assert internals.stored_rows(array) == 0


# --- MXNet's serialization of an array ---------------------------------------------------------

def saved(array):
    """What an array's pickle holds: MXNet's serialization of it."""
    return bytes(array.__getstate__()['handle'])


ARRAYS = {  # name -> (array, its stype, the dtypes and shapes of its auxiliary arrays)
    'float16': (nd.array([[1, 2]], dtype='float16'), 'default', []),
    'float64_on_cpu_pinned': (nd.array([1, 2, 3], ctx=mx.cpu_pinned(1), dtype='float64'),
                              'default', []),
    'row_sparse': (nd.sparse.row_sparse_array((np.ones((2, 3)), [1, 4]), shape=(6, 3)),
                   'row_sparse', [('int64', (2,))]),
    'csr': (nd.sparse.csr_matrix(np.array([[0, 1.5], [2, 0], [0, 0]])), 'csr',
            [('int64', (4,)), ('int64', (2,))]),
}


@pytest.mark.parametrize('name', ARRAYS)
def test_the_saved_header_and_values_are_the_arrays(name):
    array, stype, aux = ARRAYS[name]
    raw = saved(array)
    header = internals.saved_header(raw)
    assert (header.stype, header.shape, header.dtype, header.device, header.np_shape) == (
        stype, array.shape, np.dtype(array.dtype), str(array.context), False)
    assert [(dtype.name, shape) for dtype, shape in header.aux] == aux
    storage_shape, values, arrays = internals.saved_values(raw, header)
    if stype == 'default':
        np.testing.assert_array_equal(values.reshape(array.shape), array.asnumpy())
    else:
        np.testing.assert_array_equal(values.reshape(storage_shape), array.data.asnumpy())
        expected = [array.indices] if stype == 'row_sparse' else [array.indptr, array.indices]
        for got, want in zip(arrays, expected, strict=True):
            np.testing.assert_array_equal(got, want.asnumpy())


def test_an_array_saved_under_numpy_shape_semantics():
    with mx.util.np_shape(True):
        header = internals.saved_header(saved(nd.zeros((0, 3))))
    assert (header.shape, header.np_shape) == ((0, 3), True)


# --- what gluon.Trainer and gluon.Parameter keep to themselves ----------------------------

class DistTyped(mx.kvstore.KVStore):
    """A local KVStore whose type says 'dist': what a Trainer sees of a distributed one."""
    type = 'dist_sync'


@pytest.fixture
def excepthook(monkeypatch):
    """sys.excepthook restored after the test (a distributed Trainer's MyAdam replaces it)."""
    monkeypatch.setattr(sys, 'excepthook', sys.excepthook)


def two_device_parameter(name, **kwargs):
    param = gluon.Parameter(name, shape=(4, 2), **kwargs)
    param.initialize(ctx=[mx.cpu(0), mx.cpu(1)])
    return param


def step(trainer, param):
    """A backward pass on each device, then ``trainer.step``."""
    for ctx in param.list_ctx():
        with autograd.record():
            loss = param.data(ctx).sum()
        loss.backward()
    trainer.step(1)


@pytest.mark.parametrize('update_on_kvstore', [False, True])
def test_a_trainer_on_a_distributed_kvstore_is_told(excepthook, update_on_kvstore):
    param = two_device_parameter('w')
    local = gluon.Trainer([param], 'myadam', {'learning_rate': 0.1}, kvstore='local',
                          update_on_kvstore=update_on_kvstore)
    step(local, param)
    assert not internals.in_distributed_trainer(local.optimizer.param_dict)
    assert not internals.states_on_servers(local)
    kv = mx.kv.create('local')
    kv.__class__ = DistTyped
    param = two_device_parameter('v')
    trainer = gluon.Trainer([param], 'myadam', {'learning_rate': 0.1}, kvstore=kv,
                            update_on_kvstore=update_on_kvstore)
    assert not internals.in_distributed_trainer(trainer.optimizer.param_dict)  # no KVStore yet
    if update_on_kvstore:  # the optimizer goes to the servers, which hold the states
        step(trainer, param)
        assert internals.states_on_servers(trainer)
    else:  # every worker updates, which MyAdam refuses
        with pytest.raises(RuntimeError, match='update_on_kvstore=False'):
            step(trainer, param)
        assert not internals.states_on_servers(trainer)
    assert internals.in_distributed_trainer(trainer.optimizer.param_dict)
    assert internals.in_distributed_trainer(trainer.optimizer.param_dict, [0])
    assert not internals.in_distributed_trainer(trainer.optimizer.param_dict, [1])


def test_a_trainers_parameters_and_their_arrays():
    dense, sparse = two_device_parameter('a'), two_device_parameter('b', stype='row_sparse')
    trainer = gluon.Trainer([sparse, dense], 'myadam', {'learning_rate': 0.1})
    assert internals.trainer_parameters(trainer) == [sparse, dense]  # by index
    assert [internals.parameter_stype(p) for p in (sparse, dense)] == ['row_sparse', 'default']
    assert internals.parameter_arrays(dense) == dense.list_data()
    arrays = internals.parameter_arrays(sparse)
    assert [(a.stype, a.shape, a.context) for a in arrays] == [
        ('row_sparse', (4, 2), mx.cpu(0)), ('row_sparse', (4, 2), mx.cpu(1))]
    with pytest.raises(RuntimeError):
        sparse.list_data()  # why parameter_arrays is needed


def test_a_kvstore_without_updater_refuses_to_load_states(tmp_path):
    """What checkpoint.load_states reads states_on_servers after: the KVStore's assert."""
    fname = tmp_path / 'states'
    fname.write_bytes(pickle.dumps({}))
    with pytest.raises(AssertionError, match='distributed'):
        mx.kv.create('local').load_optimizer_states(str(fname))


# --- the scheduler's code ------------------------------------------------------------------

def test_the_schedulers_code_finds_and_calls_the_library_mxnet_runs_on():
    """SCHEDULER_CODE loads mxnet/libinfo.py alone: it finds the library MXNet loaded, whose
    C API creates a KVStore and reports an error. (The slow tests of the launcher run the
    scheduler itself.)"""
    assert 'libinfo.py' in internals.SCHEDULER_CODE
    path = os.path.join(os.path.dirname(importlib.util.find_spec('mxnet').origin), 'libinfo.py')
    spec = importlib.util.spec_from_file_location('mxnet_libinfo_alone', path)
    libinfo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(libinfo)
    found = libinfo.find_lib_path()[0]
    assert os.path.samefile(found, mx.base._LIB._name)
    lib = ctypes.CDLL(found, ctypes.RTLD_LOCAL)
    lib.MXGetLastError.restype = ctypes.c_char_p
    kvstore = ctypes.c_void_p()
    assert lib.MXKVStoreCreate(b'local', ctypes.byref(kvstore)) == 0 and kvstore.value
    assert lib.MXKVStoreFree(kvstore) == 0
    assert load_raw(lib, NOT_AN_ARRAY) != 0 and b'Check failed' in lib.MXGetLastError()
    assert hasattr(lib, 'MXKVStoreRunServer')


def test_the_kernel_takes_the_functions_and_steps():
    """kernel.load hands the kernel kernel_functions(): a library loaded afresh steps."""
    library = kernel.load()
    assert library is not None
    opt = MyAdam(learning_rate=0.1)
    weight = nd.ones((3,))
    state = opt.create_state(0, weight)
    installed, kernel.LIBRARY = kernel.LIBRARY, library
    try:
        opt.update(0, weight, nd.ones((3,)), state)
    finally:
        kernel.LIBRARY = installed
    np.testing.assert_allclose(weight.asnumpy(), 0.9, rtol=1e-6)


def test_pickled_states_are_ndarrays_the_way_the_checkpoint_reader_expects():
    """An NDArray pickles as NDArray(None) then __setstate__({'handle': its serialization})."""
    array = nd.array([1.0, 2.0])
    func, args, state = array.__reduce__()
    assert (func, args, list(state)) == (nd.NDArray, (None,), ['handle'])
    assert internals.saved_header(bytes(state['handle'])).shape == (2,)
    assert pickle.loads(pickle.dumps(array)).asnumpy().tolist() == [1.0, 2.0]


# --- no other module of the package reaches into MXNet ------------------------------------

# Underscore attributes the package may read outside mxnet_internals: the protected API of
# mx.optimizer.Optimizer that MXNet's own optimizers use, a NamedTuple's API, os._exit.
PROTECTED = {'_get_lr', '_get_wd', '_update_count', '_index_update_count',
             '_all_index_update_counts', '_set_current_context', '_fields', '_exit'}
# The names of MXNet's C API and of the hooks and frames that only mxnet_internals uses.
ONLY_INTERNALS = {'_LIB', 'check_call', 'setprofile', 'settrace', '__code__', 'co_consts',
                  'f_back', 'f_code'}
# _warn.py walks the stack from its own frame to name the user's line in a warning: frames
# of Python's, whatever their module (adam_plugin's, MXNet's or the import machinery's).
FRAME_WALKERS = {'_warn.py': {'_getframe', 'f_back', 'f_code'}}
# Names of the package's own that getattr reads: MyAdam's, from checkpoint.save_states.
OWN = {'_take_queued'}


def test_no_other_module_uses_mxnets_private_insides():
    package = os.path.dirname(os.path.dirname(internals.__file__))
    found = []
    for folder, _, files in os.walk(package):
        for name in files:
            if not name.endswith('.py') or folder == os.path.dirname(internals.__file__):
                continue
            path = os.path.join(folder, name)
            with open(path) as f:
                tree = ast.parse(f.read())
            allowed = FRAME_WALKERS.get(name, set())
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr not in allowed and (
                        node.attr in ONLY_INTERNALS or node.attr.startswith('_')
                        and not node.attr.startswith('__') and node.attr not in PROTECTED
                        and ast.unparse(node.value) not in ('self', 'cls')):
                    found.append((name, node.lineno, ast.unparse(node)))
                elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('mxnet'):
                    found += [(name, node.lineno, alias.name) for alias in node.names
                              if alias.name.startswith('_') or alias.name in ONLY_INTERNALS]
                elif isinstance(node, ast.Name) and node.id in ONLY_INTERNALS:
                    found.append((name, node.lineno, node.id))
                elif (isinstance(node, ast.Call) and ast.unparse(node.func) in (
                        'getattr', 'setattr', 'hasattr', 'delattr') and len(node.args) > 1
                        and isinstance(node.args[1], ast.Constant)
                        and str(node.args[1].value).startswith('_')
                        and not str(node.args[1].value).startswith('__')
                        and node.args[1].value not in PROTECTED | OWN):
                    found.append((name, node.lineno, ast.unparse(node)))
    assert found == []
