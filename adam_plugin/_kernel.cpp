// The whole Adam step in one pass over memory, for adam_plugin.kernel (loaded with ctypes).
//
// Built by setup.py as a plain shared library (optional: without a C++ compiler the
// package installs without it and MyAdam takes its other routes). It holds no Python and
// runs without the GIL. Arrays arrive as MXNet NDArray handles; on the calling thread,
// before any element is touched, the kernel waits for the engine (MXNDArrayWaitToRead
// on each array the check for Inf/NaN reads; MXNDArrayWaitAll before a step, which
// writes) and asks MXNet for each array's data pointer (MXNDArrayGetData). The eleven
// functions of MXNet's C API it calls are handed over once, by use_mxnet, when the
// library is loaded.
//
// A call covers a list of parameters, seen as one row of elements laid end to end;
// with `threads` > 1 the threads share it in pieces (see run), which may start or end
// inside a parameter.
//
// The two loops over elements (the update and the check for Inf/NaN) are compiled once
// per variant (see VARIANT): on x86-64 for AVX-512F, for AVX2 and for the x86-64
// baseline, the rest of the library for the baseline only, so one build runs on any
// x86-64 CPU. Loading the library picks the widest variant this CPU runs; use_variant
// picks another. With ADAM_PLUGIN_NATIVE (setup.py, ADAM_PLUGIN_NATIVE=1) there is one
// variant, "native", for the flags the compiler was given (-march=native).
//
// Built with -ffp-contract=off and without -ffast-math: in every variant each operation
// is rounded to the dtype in the order written, so the results equal the textbook
// NDArray path's.
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#ifdef __x86_64__
#include <immintrin.h>
#endif

namespace {

// Columns of the constants table, one row per distinct step, in the parameters' dtype.
// columns() gives their names in this order; adam_plugin.fused fills a row by them.
#define COLUMNS(X)                                                                          \
    X(RESCALE) X(WD) X(CLIP) X(BETA1) X(ONE_MINUS_BETA1) X(BETA2) X(ONE_MINUS_BETA2)        \
    X(BC1) X(BC2) X(EPS_INSIDE) X(EPS_OUTSIDE) X(DECAY) X(LR) X(YOGI)
#define COLUMN_ENUM(NAME) NAME,
enum Column { COLUMNS(COLUMN_ENUM) NUM_CONSTANTS };
#undef COLUMN_ENUM

// Run body(p, lo, hi) over elements [lo, hi) of parameter p, for every part of the
// row that falls in [begin, end). offsets: n + 1 entries, where each parameter starts
// in the row and, last, where the row ends.
template <typename Body>
void for_slice(const std::vector<int64_t> &offsets, int64_t begin, int64_t end, Body body) {
    const int64_t n = static_cast<int64_t>(offsets.size()) - 1;
    // The first parameter ending after `begin`.
    int64_t p = std::upper_bound(offsets.begin() + 1, offsets.end(), begin) - offsets.begin() - 1;
    for (; p < n && offsets[p] < end; ++p) {
        const int64_t lo = std::max(begin, offsets[p]) - offsets[p];
        const int64_t hi = std::min(end, offsets[p + 1]) - offsets[p];
        if (lo < hi) body(p, lo, hi);
    }
}

// Elements per piece of work that a thread takes at a time: 1 MiB of float32, large
// enough that taking a piece costs nothing beside stepping it, small enough that the
// threads of a call share its last pieces evenly. The tests set another with
// set_piece_size, so that small arrays cross pieces.
constexpr int64_t CHUNK = 1 << 18;
std::atomic<int64_t> piece_size{CHUNK};

// Threads kept from one call to the next, so that a call does not pay for starting them.
// Pool threads never exit; a forked child starts with a new, empty pool.
class Pool {
public:
    // work() on the caller's thread and on `helpers` pool threads, started on first
    // need; returns when every one has returned. A thread that cannot be started is
    // done without, and a caller that finds the pool busy (another thread's call)
    // does its work alone.
    void run(int helpers, const std::function<void()> &work) {
        std::unique_lock<std::mutex> call(call_, std::try_to_lock);
        if (!call.owns_lock()) return work();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            while (static_cast<int>(threads_.size()) < helpers) {
                try {
                    threads_.emplace_back(&Pool::serve, this, threads_.size(), generation_);
                } catch (...) {
                    break;
                }
            }
            active_ = pending_ = std::min<int>(helpers, threads_.size());
            work_ = &work;
            ++generation_;
        }
        wake_.notify_all();
        work();
        std::unique_lock<std::mutex> lock(mutex_);
        finished_.wait(lock, [this] { return pending_ == 0; });
    }

    static Pool *instance;

private:
    void serve(size_t id, uint64_t seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return generation_ != seen; });
            seen = generation_;
            if (id >= static_cast<size_t>(active_)) continue;
            const std::function<void()> &work = *work_;
            lock.unlock();
            work();
            lock.lock();
            if (--pending_ == 0) finished_.notify_one();
        }
    }

    std::mutex call_, mutex_;
    std::condition_variable wake_, finished_;
    std::vector<std::thread> threads_;
    const std::function<void()> *work_ = nullptr;
    int active_ = 0, pending_ = 0;
    uint64_t generation_ = 0;
};

Pool *Pool::instance = [] {
    pthread_atfork(nullptr, nullptr, [] { Pool::instance = new Pool; });
    return new Pool;
}();

// fn(i) for every i in [0, count), on `threads` threads (the caller's one of them), which
// take the next i in turn from a shared counter, so a thread slowed by another process
// leaves more to the others.
template <typename Fn>
void run_items(int64_t count, int threads, Fn fn) {
    std::atomic<int64_t> next{0};
    auto work = [&] {
        for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < count;) fn(i);
    };
    const int64_t helpers = std::min<int64_t>(threads, count) - 1;
    if (helpers < 1) {
        for (int64_t i = 0; i < count; ++i) fn(i);
        return;
    }
    Pool::instance->run(static_cast<int>(helpers), work);
}

// body run over the whole row of `sizes`, on `threads` threads, which take it in
// pieces of piece_size elements (run_items).
template <typename Body>
void run(int64_t n, const int64_t *sizes, int threads, Body body) {
    std::vector<int64_t> offsets(n + 1, 0);
    for (int64_t p = 0; p < n; ++p) offsets[p + 1] = offsets[p] + sizes[p];
    const int64_t piece = piece_size.load(std::memory_order_relaxed);
    const int64_t total = offsets[n], chunks = (total + piece - 1) / piece;
    run_items(chunks, threads, [&](int64_t c) {
        for_slice(offsets, c * piece, std::min(total, (c + 1) * piece), body);
    });
}

// Rescale, add coupled L2, clip as mshadow does (NaN passes through).
template <typename C>
[[gnu::always_inline]] inline C gradient(C g, C w, C rescale, C wd, C clip) {
    g = g * rescale;
    if (wd != 0) g = g + wd * w;
    return g > clip ? clip : (g < -clip ? -clip : g);
}

// The constants of one step (a row of the table) in the compute type C.
template <typename C>
struct Constants {
    C rescale, wd, clip, beta1, one_minus_beta1, beta2, one_minus_beta2, bc1, bc2;
    C eps_inside, eps_outside, decay, lr;
    explicit Constants(const C *k)
        : rescale(k[RESCALE]), wd(k[WD]), clip(k[CLIP]), beta1(k[BETA1]),
          one_minus_beta1(k[ONE_MINUS_BETA1]), beta2(k[BETA2]),
          one_minus_beta2(k[ONE_MINUS_BETA2]), bc1(k[BC1]), bc2(k[BC2]),
          eps_inside(k[EPS_INSIDE]), eps_outside(k[EPS_OUTSIDE]), decay(k[DECAY]), lr(k[LR]) {}
};

// The rule on one element, in the compute type C: the one place of the per-element math,
// used by every loop (float32, float64, float16 with and without a master copy, whole
// arrays and rows). Updates m, v (and vmax) and returns the new weight.
template <typename C, bool AMSGRAD, bool YOGI>
[[gnu::always_inline]] inline C adam_element(C w, C g, C &m, C &v, C &vmax,
                                             const Constants<C> &k) {
    g = gradient(g, w, k.rescale, k.wd, k.clip);
    m = k.beta1 * m + k.one_minus_beta1 * g;
    // (1 - beta2) * g first, MXNet's order: g * g alone overflows where v is representable
    const C step2 = (k.one_minus_beta2 * g) * g;
    if (YOGI) {  // a template argument: v + ((1 - beta2) * g) * g * sign(g * g - v), the
                 // sign as two comparisons (g * g may overflow to Inf, which compares right)
        const C g2 = g * g;
        v = v + step2 * (C(g2 > v) - C(g2 < v));
    } else {
        v = k.beta2 * v + step2;
    }
    C v_used = v;
    if (AMSGRAD) {  // a template argument: the plain loop never touches vmax
        vmax = vmax > v ? vmax : v;
        v_used = vmax;
    }
    const C u = (m / k.bc1) / (std::sqrt(v_used / k.bc2 + k.eps_inside) + k.eps_outside);
    return w * k.decay - k.lr * u;
}

// The check loop: does bits[lo, hi) hold an element whose exponent field is all ones
// (an Inf or a NaN)? The floats are read as integers of their width, so the test is an
// integer OR-reduction that vectorises and that no floating-point setting can fold away.
template <typename Bits>
[[gnu::always_inline]] inline bool nonfinite_range(const Bits *bits, int64_t lo, int64_t hi) {
    constexpr Bits exponent = sizeof(Bits) == 2   ? Bits(0x7C00u)
                              : sizeof(Bits) == 4 ? Bits(0x7F800000u)
                                                  : Bits(0x7FF0000000000000ull);
    Bits any = 0;
    for (int64_t i = lo; i < hi; ++i) any |= (bits[i] & exponent) == exponent;
    return any != 0;
}

// What a step found in the values it wrote, a parameter's flags (0: nothing): a second
// moment, or a weight, that is Inf or NaN although the gradient was finite (v beyond the
// dtype's range; a float16 weight past 65504, lr * u beyond the range, or a weight that
// was not finite already).
enum Overflow { V_OVERFLOW = 1, W_OVERFLOW = 2 };

// The arrays of one stretch of elements: weight and gradient stored as W, the moments
// (and the float32 master copy of a float16 weight) as S. Null when absent.
template <typename W, typename S>
struct Span {
    W *w;
    const W *g;
    S *m, *v, *vmax, *master;
};

// The update loop over n elements of one type T (float32 or float64), every operation
// rounded to T; returns its Overflow flags. Inlined into each variant's adam (below),
// which compiles it.
template <typename T, bool AMSGRAD, bool YOGI>
[[gnu::always_inline]] inline int adam_loop(T *__restrict__ w, const T *__restrict__ g,
                                             T *__restrict__ m, T *__restrict__ v,
                                             T *__restrict__ vmax, const Constants<T> &k,
                                             int64_t n) {
    int v_overflow = 0, w_overflow = 0;  // a v, a w became Inf (or NaN)
    for (int64_t i = 0; i < n; ++i) {
        T mi = m[i], vi = v[i], vmaxi = AMSGRAD ? vmax[i] : T(0);
        const T wi = adam_element<T, AMSGRAD, YOGI>(w[i], g[i], mi, vi, vmaxi, k);
        w[i] = wi;
        m[i] = mi;
        v[i] = vi;
        if (AMSGRAD) vmax[i] = vmaxi;  // a template argument: the plain loop never touches vmax
        v_overflow |= !(vi <= std::numeric_limits<T>::max());
        w_overflow |= !(std::abs(wi) <= std::numeric_limits<T>::max());
    }
    return (v_overflow ? V_OVERFLOW : 0) | (w_overflow ? W_OVERFLOW : 0);
}

// float16 <-> float32, rounding to nearest even: element by element (on x86-64 without
// F16C, libgcc's conversion functions), ...
struct ScalarHalf {
    static void widen(const _Float16 *in, float *out, int64_t n) {
        for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]);
    }
    static void narrow(const float *in, _Float16 *out, int64_t n) {
        for (int64_t i = 0; i < n; ++i) out[i] = static_cast<_Float16>(in[i]);
    }
};

#ifdef __x86_64__
// ... or eight at a time with F16C's instructions (GCC 12 does not vectorise the
// conversions of _Float16 itself).
struct F16cHalf {
    [[gnu::target("avx2,f16c")]] static void widen(const _Float16 *in, float *out, int64_t n) {
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                          reinterpret_cast<const __m128i *>(in + i))));
        for (; i < n; ++i) out[i] = static_cast<float>(in[i]);
    }
    [[gnu::target("avx2,f16c")]] static void narrow(const float *in, _Float16 *out, int64_t n) {
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128(reinterpret_cast<__m128i *>(out + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(in + i),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        for (; i < n; ++i) out[i] = static_cast<_Float16>(in[i]);
    }
};
#endif

// The update of n float16 weights, each element computed in float32 by adam_loop, in
// blocks widened to float32 buffers and narrowed back (Half: see above). With MASTER
// (S float) the float32 master copy and moments step in place and the weight becomes
// the master copy rounded to float16; without, the float16 weight and moments are
// widened, stepped and stored rounded to float16. Returns the Overflow flags, the
// weight's read in float16 (a finite float32 one past 65504 rounds to Inf).
template <typename S, bool AMSGRAD, bool YOGI, bool MASTER, typename Half>
[[gnu::always_inline]] inline int adam_half(const Span<_Float16, S> &a, const Constants<float> &k,
                                            int64_t n) {
    constexpr int64_t BLOCK = 1024;
    alignas(64) float g[BLOCK], w[BLOCK], m[BLOCK], v[BLOCK], vmax[BLOCK];
    int overflow = 0;
    for (int64_t lo = 0; lo < n; lo += BLOCK) {
        const int64_t count = std::min(BLOCK, n - lo);
        Half::widen(a.g + lo, g, count);
        if constexpr (MASTER) {
            overflow |= adam_loop<float, AMSGRAD, YOGI>(a.master + lo, g, a.m + lo, a.v + lo,
                                                        AMSGRAD ? a.vmax + lo : nullptr, k,
                                                        count) & V_OVERFLOW;
            Half::narrow(a.master + lo, a.w + lo, count);
        } else {
            Half::widen(a.w + lo, w, count);
            Half::widen(a.m + lo, m, count);
            Half::widen(a.v + lo, v, count);
            if (AMSGRAD) Half::widen(a.vmax + lo, vmax, count);
            adam_loop<float, AMSGRAD, YOGI>(w, g, m, v, vmax, k, count);
            Half::narrow(w, a.w + lo, count);
            Half::narrow(m, a.m + lo, count);
            Half::narrow(v, a.v + lo, count);  // a finite float32 v may round to Inf
            if (nonfinite_range(reinterpret_cast<const uint16_t *>(a.v + lo), 0, count))
                overflow |= V_OVERFLOW;
            if (AMSGRAD) Half::narrow(vmax, a.vmax + lo, count);
        }
        if (nonfinite_range(reinterpret_cast<const uint16_t *>(a.w + lo), 0, count))
            overflow |= W_OVERFLOW;
    }
    return overflow;
}


// The update of one stretch of elements, whatever its storage: float32 and float64 by
// adam_loop, float16 (with a master copy when the moments S are float32) by adam_half.
// AMSGRAD and YOGI are template arguments, so neither is a run-time test inside a loop
// (one kept GCC from vectorising it). Returns the Overflow flags of what it wrote.
template <bool AMSGRAD, bool YOGI, typename Half, typename W, typename S, typename C>
[[gnu::always_inline]] inline int adam_span(const Span<W, S> &a, const Constants<C> &k,
                                             int64_t n) {
    if constexpr (std::is_same_v<W, C>)
        return adam_loop<C, AMSGRAD, YOGI>(a.w, a.g, a.m, a.v, a.vmax, k, n);
    else
        return adam_half<S, AMSGRAD, YOGI, std::is_same_v<S, C>, Half>(a, k, n);
}

// A variant: a struct NAME whose static functions adam and nonfinite are the two loops
// compiled with the GCC function attribute TARGET (empty: the compiler's flags), with
// HALF's float16 conversions, and that runs on a CPU where RUNS_HERE is true. noinline
// keeps each one a function of its own, called only once the variant is chosen
// (objdump -d shows them by name).
#define VARIANT(NAME, TARGET, HALF, RUNS_HERE)                                              \
    struct NAME {                                                                           \
        static constexpr const char *name = #NAME;                                          \
        static bool runs_here() { return RUNS_HERE; }                                       \
        template <typename W, typename S, typename C>                                       \
        [[gnu::noinline]] TARGET static int adam(const Span<W, S> &a, const C *table,       \
                                                  int64_t n, bool amsgrad) {                \
            const Constants<C> k(table);                                                    \
            const bool yogi = table[YOGI] != 0;                                             \
            if (amsgrad)                                                                    \
                return yogi ? adam_span<true, true, HALF>(a, k, n)                          \
                            : adam_span<true, false, HALF>(a, k, n);                        \
            return yogi ? adam_span<false, true, HALF>(a, k, n)                             \
                        : adam_span<false, false, HALF>(a, k, n);                           \
        }                                                                                   \
        template <typename Bits>                                                            \
        [[gnu::noinline]] TARGET static bool nonfinite(const Bits *bits, int64_t lo,        \
                                                       int64_t hi) {                        \
            return nonfinite_range(bits, lo, hi);                                           \
        }                                                                                   \
    };

// The variants compiled, widest first. A native build (or one for another architecture)
// has one, compiled for the flags the compiler was given.
#if defined(ADAM_PLUGIN_NATIVE) || !defined(__x86_64__)
#if defined(__F16C__)
VARIANT(native, , F16cHalf, true)
#else
VARIANT(native, , ScalarHalf, true)
#endif
using Variants = std::tuple<native>;
#else
// F16C (float16 <-> float32 conversion in vector registers) came with every AVX2 CPU.
VARIANT(avx512f, [[gnu::target("avx512f,f16c")]], F16cHalf,
        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("f16c"))
VARIANT(avx2, [[gnu::target("avx2,f16c")]], F16cHalf,
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"))
VARIANT(baseline, , ScalarHalf, true)
using Variants = std::tuple<avx512f, avx2, baseline>;
#endif

// f(variant) for a default-constructed object of each variant, in order.
template <typename F>
void for_each_variant(F f) {
    std::apply([&](auto... variant) { (f(variant), ...); }, Variants{});
}

// The position in Variants of the variant in use.
std::atomic<int> in_use = [] {
#ifdef __x86_64__
    __builtin_cpu_init();  // __builtin_cpu_supports may run before libgcc's constructor
#endif
    int chosen = -1, i = 0;
    for_each_variant([&](auto variant) {
        if (chosen < 0 && variant.runs_here()) chosen = i;
        ++i;
    });
    return chosen;
}();

// f(variant) for the variant in use.
template <typename F>
int with_variant(F f) {
    const int chosen = in_use.load(std::memory_order_relaxed);
    int result = 0, i = 0;
    for_each_variant([&](auto variant) {
        if (i++ == chosen) result = f(variant);
    });
    return result;
}

// MXNet's Context (struct Context in include/mxnet/base.h, 1.7 to 1.9.1), which
// MXEnginePushSyncND reads through its ContextHandle: the device type, an enum
// (DeviceType: 1 cpu, 2 gpu, 3 cpu_pinned, 5 cpu_shared), and the device id.
struct Context {
    int dev_type;
    int32_t dev_id;
};
static_assert(sizeof(Context) == 8, "MXNet's Context is two 32-bit fields");

// MXNet's C API functions the kernel calls, each returning 0, or -1 with MXNet's last
// error set: MXNDArrayGetData (the array's data pointer in *out), MXNDArrayWaitToRead
// (returns once no pending engine operation writes the array), MXNDArrayWaitAll
// (once no operation is pending at all), MXEnginePushSyncND (queues fn(run context,
// param) in MXNet's engine on `context` behind the pending writes to the `const` arrays
// and every pending operation on the `mutable` ones; deleter(param) once it has run, or
// at once when it refuses), and the array's shape (MXNDArrayGetShapeEx64; ndim -1:
// unknown), dtype and storage type (MXNet's codes) and context (device type and id),
// MXNDArraySaveRawBytes (the array's serialization, in a buffer of the calling thread's
// that MXNet keeps until that thread's next call of it), and MXNDArrayToDLPack with
// MXNDArrayCallDLPackDeleter (a view of the array's stored values, and its release).
using GetData = int (*)(void *handle, void **out);
using WaitToRead = int (*)(void *handle);
using WaitAll = int (*)();
using PushSync = int (*)(void (*fn)(void *, void *), void *param, void (*deleter)(void *),
                         const Context *context, void *const *const_handles, int num_const,
                         void *const *mutable_handles, int num_mutable, const void *property,
                         int priority, const char *name);
using GetShape = int (*)(void *handle, int *ndim, const int64_t **dims);
using GetCode = int (*)(void *handle, int *code);
using GetContext = int (*)(void *handle, int *device_type, int *device_id);
using SaveRawBytes = int (*)(void *handle, size_t *size, const char **bytes);
using ToDLPack = int (*)(void *handle, void **dlpack);
using CallDLPackDeleter = int (*)(void *dlpack);
GetData get_data = nullptr;
WaitToRead wait_to_read = nullptr;
WaitAll wait_all = nullptr;
PushSync push_sync = nullptr;
GetShape get_shape = nullptr;
GetCode get_dtype = nullptr, get_storage_type = nullptr;
GetContext get_context = nullptr;
SaveRawBytes save_raw_bytes = nullptr;
ToDLPack to_dlpack = nullptr;
CallDLPackDeleter call_dlpack_deleter = nullptr;

// The start of DLPack's DLManagedTensor, its DLTensor (dlpack.h 0.x, as MXNet 1.x fills it
// in MXNDArrayToDLPack): the fields read here, the stored values of an array.
struct DLTensorStart {
    void *data;
    int device_type, device_id, ndim;
    uint8_t code, bits;
    uint16_t lanes;
    const int64_t *shape;
};

// MXNet's codes: mshadow's type flags, NDArrayStorageType's kDefaultStorage, and the
// device types of host memory (cpu, cpu_pinned, cpu_shared).
template <typename T>
constexpr int DTYPE = std::is_same_v<T, float> ? 0 : std::is_same_v<T, double> ? 1 : 2;
constexpr int DENSE = 0;
constexpr bool host(int device_type) {
    return device_type == 1 || device_type == 3 || device_type == 5;
}

// Does the array behind `handle` hold `size` elements of T, dense? (False, too, when MXNet
// cannot say.)
template <typename T>
bool holds(void *handle, int64_t size) {
    int ndim = 0, dtype = -1, storage = -1;
    const int64_t *dims = nullptr;
    if (get_shape(handle, &ndim, &dims) != 0 || ndim < 0 || get_dtype(handle, &dtype) != 0 ||
        get_storage_type(handle, &storage) != 0)
        return false;
    int64_t elements = 1;
    for (int i = 0; i < ndim; ++i) elements *= dims[i];
    return elements == size && dtype == DTYPE<T> && storage == DENSE;
}

// The data pointers of handles[0 .. count) (null for a null handle), each taken after
// waiting for the pending writes to it when `read`. An empty vector when MXNet
// refused one.
std::vector<void *> data_pointers(void *const *handles, int64_t count, bool read) {
    std::vector<void *> pointers(count);
    for (int64_t i = 0; i < count; ++i)
        if (handles[i] && ((read && wait_to_read(handles[i]) != 0) ||
                           get_data(handles[i], &pointers[i]) != 0))
            return {};
    return pointers;
}

// The rows of the handles table, each of n handles (a null handle: no such array).
enum Array { WEIGHT, GRAD, MEAN, VAR, VMAX, MASTER, NUM_ARRAYS };

// The integer type of a float's bits, which the check for Inf/NaN reads.
template <typename T>
using BitsOf = std::conditional_t<sizeof(T) == 2, uint16_t,
                                  std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;

// Asks the memory for parameter p's stored row i (of the lazy step of its elements below
// `hi`, counted in its gradient's stored rows as Stepper counts them): for that row of w, m,
// v, vmax and master (those present), the first PREFETCH_BYTES of each (the rest of a longer
// row is read in sequence, which the CPU foresees). Called PREFETCH_AHEAD rows before the
// step reaches the row: the rows a sparse gradient holds lie anywhere in the arrays, and
// each read of a row not in the cache would stall the step. It changes no value. Always
// inlined: GCC drops a call of a function that only prefetches, as one without effects.
constexpr int64_t PREFETCH_AHEAD = 4, PREFETCH_BYTES = 1024;

template <typename W, typename S>
[[gnu::always_inline]] inline void prefetch_row(void *const *pointers, int64_t n, int64_t p,
                                                const int64_t *rows, int64_t i, int64_t hi,
                                                int64_t length) {
    if (i > (hi - 1) / length) return;  // past the rows of this step
    for (int array : {WEIGHT, MEAN, VAR, VMAX, MASTER}) {
        const int64_t size = array == WEIGHT ? sizeof(W) : sizeof(S);
        if (const char *base = static_cast<const char *>(pointers[array * n + p]))
            for (int64_t b = 0; b < std::min(length * size, PREFETCH_BYTES); b += 64)
                __builtin_prefetch(base + rows[i] * length * size + b, 1, 3);
    }
}

// The step of elements [lo, hi) of one parameter of n, weights and gradients stored as W,
// moments as S, computed in C, on the data pointers of the handles table (NUM_ARRAYS rows
// of n: w, g, m, v, vmax for amsgrad, master for a float16 weight's float32 master copy
// with S float), with the variant V: its Overflow flags. rows: n pointers, null for a
// parameter stepped whole; else its gradient is row_sparse and lazy: g holds its stored
// rows, one after the other, rows[p] their positions in w (each below w's first
// dimension: the caller checks), [lo, hi) counts in g, and only those rows of w, m, v,
// vmax and master are read and written.
template <typename W, typename S, typename C>
struct Stepper {
    int64_t n;
    void *const *pointers;
    const int64_t *row_length;
    const int64_t *const *rows;
    const int64_t *table_rows;
    const C *table;
    bool amsgrad;

    // The arrays of parameter p from element `at` on (the gradient's from g_at).
    Span<W, S> span(int64_t p, int64_t at, int64_t g_at) const {
        auto from = [&](int array, auto *type, int64_t i) {
            auto *base = static_cast<decltype(type)>(pointers[array * n + p]);
            return base ? base + i : nullptr;
        };
        return Span<W, S>{from(WEIGHT, (W *)nullptr, at), from(GRAD, (W *)nullptr, g_at),
                          from(MEAN, (S *)nullptr, at), from(VAR, (S *)nullptr, at),
                          from(VMAX, (S *)nullptr, at), from(MASTER, (S *)nullptr, at)};
    }

    // The gradient's stored values of parameter p, as the integers the check reads.
    const BitsOf<W> *grad_bits(int64_t p) const {
        return static_cast<const BitsOf<W> *>(pointers[GRAD * n + p]);
    }

    template <typename V>
    int operator()(V variant, int64_t p, int64_t lo, int64_t hi) const {
        const C *k = table + table_rows[p] * NUM_CONSTANTS;
        if (!rows[p]) return variant.adam(span(p, lo, lo), k, hi - lo, amsgrad);
        int found = 0;
        const int64_t length = row_length[p];
        for (int64_t at = lo; at < hi;) {  // at: in the gradient's stored rows
            const int64_t i = at / length, j = at % length;
            prefetch_row<W, S>(pointers, n, p, rows[p], i + PREFETCH_AHEAD, hi, length);
            const int64_t count = std::min(hi - at, length - j);
            found |= variant.adam(span(p, rows[p][i] * length + j, at), k, count, amsgrad);
            at += count;
        }
        return found;
    }
};

// One step of n parameters (see Stepper): sizes[p] the elements stepped (row_length[p]
// per row present; 0 leaves the parameter untouched). overflow[p] gets the Overflow
// flags of what the step wrote of parameter p.
template <typename W, typename S, typename C>
void step(int64_t n, void *const *pointers, const int64_t *sizes,
          const int64_t *row_length, const int64_t *const *rows, const int64_t *table_rows,
          const C *table, int amsgrad, uint8_t *overflow, int threads) {
    const Stepper<W, S, C> stepper{n, pointers, row_length, rows, table_rows, table,
                                   amsgrad != 0};
    with_variant([&](auto variant) {
        run(n, sizes, threads, [&](int64_t p, int64_t lo, int64_t hi) {
            if (const int found = stepper(variant, p, lo, hi))
                __atomic_fetch_or(&overflow[p], found, __ATOMIC_RELAXED);
        });
        return 0;
    });
}

// step, of the parameters whose gradient holds only finite values (its stored values,
// lazy), each gradient checked just before the parameter is stepped: finite[p] is set to
// 0 for a parameter whose gradient holds an Inf or a NaN, which is left untouched.
// The work is a list of pieces that the threads take in order (run_items). A parameter
// of at most piece_size elements is one piece: checked, then stepped at once by one thread,
// its gradient still in cache. A larger one is checked in such pieces, then stepped in
// those pieces, the last checked first (its gradient in the shared cache as far as it
// fits): a thread that takes one of its steps waits until every piece of it is checked.
// The checks come before in the list and wait for nothing, so no thread waits long.
template <typename W, typename S, typename C>
void checked_step(int64_t n, void *const *pointers, const int64_t *sizes,
                  const int64_t *row_length, const int64_t *const *rows,
                  const int64_t *table_rows, const C *table, int amsgrad, uint8_t *finite,
                  uint8_t *overflow, int threads) {
    const Stepper<W, S, C> stepper{n, pointers, row_length, rows, table_rows, table,
                                   amsgrad != 0};
    enum Kind { WHOLE, CHECK, STEP };
    struct Piece {
        int64_t p, lo, hi;
        Kind kind;
    };
    const int64_t size = piece_size.load(std::memory_order_relaxed);
    std::vector<Piece> pieces;
    std::vector<std::atomic<int64_t>> unchecked(n);  // per parameter: its pieces not checked
    for (int64_t p = 0; p < n; ++p) {
        if (sizes[p] > 0 && sizes[p] <= size) pieces.push_back({p, 0, sizes[p], WHOLE});
        if (sizes[p] <= size) continue;
        const int64_t count = (sizes[p] + size - 1) / size;
        unchecked[p].store(count, std::memory_order_relaxed);
        for (int64_t c = 0; c < count; ++c)
            pieces.push_back({p, c * size, std::min(sizes[p], (c + 1) * size), CHECK});
        for (int64_t c = count - 1; c >= 0; --c)
            pieces.push_back({p, c * size, std::min(sizes[p], (c + 1) * size), STEP});
    }
    with_variant([&](auto variant) {
        run_items(static_cast<int64_t>(pieces.size()), threads, [&](int64_t i) {
            const Piece &piece = pieces[i];
            if (piece.kind == STEP) {
                while (unchecked[piece.p].load(std::memory_order_acquire) != 0)
                    std::this_thread::yield();
            } else if (variant.nonfinite(stepper.grad_bits(piece.p), piece.lo, piece.hi)) {
                __atomic_store_n(&finite[piece.p], 0, __ATOMIC_RELAXED);
            }
            if (piece.kind == CHECK)
                unchecked[piece.p].fetch_sub(1, std::memory_order_release);
            else if (__atomic_load_n(&finite[piece.p], __ATOMIC_RELAXED))
                if (const int found = stepper(variant, piece.p, piece.lo, piece.hi))
                    __atomic_fetch_or(&overflow[piece.p], found, __ATOMIC_RELAXED);
        });
        return 0;
    });
}

// finite[p] is set to 0 when the Bits at pointers[p], sizes[p] of them, hold an Inf or a NaN.
template <typename Bits>
void check(int64_t n, const void *const *pointers, const int64_t *sizes, uint8_t *finite,
           int threads) {
    with_variant([&](auto variant) {
        run(n, sizes, threads, [&](int64_t p, int64_t lo, int64_t hi) {
            if (variant.nonfinite(static_cast<const Bits *>(pointers[p]), lo, hi))
                __atomic_store_n(&finite[p], 0, __ATOMIC_RELAXED);
        });
        return 0;
    });
}

// The step on the calling thread, once the engine has nothing pending (see step).
// Returns 0, or -1 (nothing touched) when MXNet could not give a data pointer.
template <typename W, typename S, typename C>
int adam(int64_t n, void *const *handles, const int64_t *sizes, const int64_t *row_length,
         const int64_t *const *rows, const int64_t *table_rows, const C *table, int amsgrad,
         uint8_t *overflow, int threads) {
    if (wait_all() != 0) return -1;  // no engine operation reads or writes any of them
    const std::vector<void *> pointers = data_pointers(handles, NUM_ARRAYS * n, false);
    if (pointers.empty() && n > 0) return -1;
    step<W, S, C>(n, pointers.data(), sizes, row_length, rows, table_rows, table, amsgrad, overflow,
                  threads);
    return 0;
}

// checked_step on the calling thread, once the engine has nothing pending: finite[p]
// (set to 1 by the caller) becomes 0 for a parameter left untouched, its gradient not
// finite. Returns 0, or -1 (nothing touched) when MXNet could not give a data pointer.
template <typename W, typename S, typename C>
int checked_adam(int64_t n, void *const *handles, const int64_t *sizes,
                 const int64_t *row_length, const int64_t *const *rows,
                 const int64_t *table_rows, const C *table, int amsgrad, uint8_t *finite,
                 uint8_t *overflow, int threads) {
    if (wait_all() != 0) return -1;
    const std::vector<void *> pointers = data_pointers(handles, NUM_ARRAYS * n, false);
    if (pointers.empty() && n > 0) return -1;
    checked_step<W, S, C>(n, pointers.data(), sizes, row_length, rows, table_rows, table, amsgrad,
                          finite, overflow, threads);
    return 0;
}

// finite[p] is set to 0 when array p holds an Inf or a NaN, once no pending operation
// writes it.
template <typename Bits>
int finite(int64_t n, void *const *handles, const int64_t *sizes, uint8_t *finite,
           int threads) {
    const std::vector<void *> pointers = data_pointers(handles, n, true);
    if (pointers.empty() && n > 0) return -1;
    check<Bits>(n, pointers.data(), sizes, finite, threads);
    return 0;
}

// A step of one parameter queued in MXNet's engine (see queue): what it needs, copied, and
// what it found. Two owners, the engine (until it has run: its deleter) and the caller
// (release).
struct Queued {
    std::atomic<int> owners{2};
    std::atomic<int> done{0};  // 1 once run, the gradient finite, no Overflow; 2 otherwise
    void *pointers[NUM_ARRAYS];
    int64_t size;
    alignas(double) uint8_t table[NUM_CONSTANTS * sizeof(double)];  // the constants, as C
    int amsgrad, threads;
    uint8_t grad_finite = 1, overflow = 0;
};

void release(void *queued) {
    auto *q = static_cast<Queued *>(queued);
    if (q->owners.fetch_sub(1, std::memory_order_acq_rel) == 1) delete q;
}

// Run by MXNet's engine once the gradient is written and nothing else uses the other
// arrays: the step of the parameter if its gradient is finite (checked_step).
template <typename W, typename S, typename C>
void run_queued(void * /*run context*/, void *queued) {
    auto *q = static_cast<Queued *>(queued);
    const int64_t *const whole = nullptr;  // dense: no rows
    const int64_t table_row = 0;
    checked_step<W, S, C>(1, q->pointers, &q->size, &q->size, &whole, &table_row,
                          reinterpret_cast<const C *>(q->table), q->amsgrad, &q->grad_finite,
                          &q->overflow, q->threads);
    q->done.store(q->grad_finite && !q->overflow ? 1 : 2, std::memory_order_release);
}

// Queue in MXNet's engine the step of one dense parameter (handles: its NUM_ARRAYS arrays,
// as a column of adam's table; size: its elements; table: one row of constants) behind the
// pending writes to its gradient and every pending use of its other arrays, on the
// weight's context, and return at once; *out: the Queued, whose results queued_done and
// queued_flags read, for the caller to release. The gradient is checked there first: when
// it holds an Inf or a NaN, the parameter is not stepped.
// Returns 0; -1 (nothing queued, *out null) when MXNet refused a call; -2 (the same)
// when the weight or gradient, which the caller hands anew at every call, is not what the
// step takes: dense, of `size` elements and of W, in host memory. The states (moments of
// S, a master copy of float) are the caller's own, checked when it made the table, and
// an array's shape, dtype and storage never change.
template <typename W, typename S, typename C>
int queue(void *const *handles, int64_t size, const C *table, int amsgrad, int threads,
          void **out) {
    *out = nullptr;
    int device = 0, id = 0, grad_device = 0, grad_id = 0;
    if (get_context(handles[WEIGHT], &device, &id) != 0 ||
        get_context(handles[GRAD], &grad_device, &grad_id) != 0)
        return -1;
    if (!host(device) || !host(grad_device) || !holds<W>(handles[WEIGHT], size) ||
        !holds<W>(handles[GRAD], size))
        return -2;
    const std::vector<void *> pointers = data_pointers(handles, NUM_ARRAYS, false);
    if (pointers.empty()) return -1;
    auto *q = new Queued;
    std::copy(pointers.begin(), pointers.end(), q->pointers);
    q->size = size;
    std::memcpy(q->table, table, NUM_CONSTANTS * sizeof(C));
    q->amsgrad = amsgrad;
    q->threads = threads;
    void *writes[NUM_ARRAYS];
    int num_writes = 0;
    for (int array : {WEIGHT, MEAN, VAR, VMAX, MASTER})
        if (handles[array]) writes[num_writes++] = handles[array];
    const Context context{device, id};
    // The engine owns q from here, even when it refuses: its deleter then runs at once.
    // An ordinary operation (no property: kNormal), run by an engine thread beside the
    // caller (kAsync would run it on the calling thread: see docs/mxnet-modes.md).
    if (push_sync(run_queued<W, S, C>, q, release, &context, &handles[GRAD], 1, writes, num_writes,
                  nullptr, 0, "adam_plugin_step") != 0) {
        release(q);
        return -1;
    }
    *out = q;
    return 0;
}

}  // namespace

extern "C" {

void use_mxnet(GetData mxnet_get_data, WaitToRead mxnet_wait_to_read, WaitAll mxnet_wait_all,
               PushSync mxnet_push_sync, GetShape mxnet_get_shape, GetCode mxnet_get_dtype,
               GetCode mxnet_get_storage_type, GetContext mxnet_get_context,
               SaveRawBytes mxnet_save_raw_bytes, ToDLPack mxnet_to_dlpack,
               CallDLPackDeleter mxnet_call_dlpack_deleter) {
    get_data = mxnet_get_data;
    wait_to_read = mxnet_wait_to_read;
    wait_all = mxnet_wait_all;
    push_sync = mxnet_push_sync;
    get_shape = mxnet_get_shape;
    get_dtype = mxnet_get_dtype;
    get_storage_type = mxnet_get_storage_type;
    get_context = mxnet_get_context;
    save_raw_bytes = mxnet_save_raw_bytes;
    to_dlpack = mxnet_to_dlpack;
    call_dlpack_deleter = mxnet_call_dlpack_deleter;
}

// The names of the constants table's columns (enum Column), in order, separated by spaces.
const char *columns() {
#define COLUMN_NAME(NAME) #NAME " "
    return COLUMNS(COLUMN_NAME);
#undef COLUMN_NAME
}

// The names of the variants compiled, widest first, separated by spaces.
const char *variants() {
    static const std::string names = [] {
        std::string list;
        for_each_variant([&](auto variant) { list += (list.empty() ? "" : " ") + std::string(variant.name); });
        return list;
    }();
    return names.c_str();
}

// The name of the variant in use.
const char *variant_in_use() {
    const char *name = nullptr;
    int i = 0;
    for_each_variant([&](auto variant) {
        if (i++ == in_use.load()) name = variant.name;
    });
    return name;
}

// 1 when this CPU runs the variant called `name`, 0 when it does not, -1 when no
// variant has that name.
int variant_runs_here(const char *name) {
    int result = -1;
    for_each_variant([&](auto variant) {
        if (std::string(variant.name) == name) result = variant.runs_here();
    });
    return result;
}

// Use the variant called `name` from the next call on: 0, or -1 when no variant has
// that name, or -2 when this CPU cannot run it (the variant in use stays).
int use_variant(const char *name) {
    const int runs = variant_runs_here(name);
    if (runs != 1) return runs == 0 ? -2 : -1;
    int i = 0;
    for_each_variant([&](auto variant) {
        if (std::string(variant.name) == name) in_use.store(i);
        ++i;
    });
    return 0;
}

// Three entry points per storage, adam_NAME (the step on the calling thread),
// checked_adam_NAME (the same, of the parameters whose gradient is finite, each checked
// just before its step) and queue_adam_NAME (that, of one parameter, queued in MXNet's
// engine): float32, float64, float16 computed in float32 and stored in float16, and
// float16 weights with float32 master copy and moments.
#define ADAM_ENTRY(NAME, W, S, C)                                                           \
    int adam_##NAME(int64_t n, void *const *handles, const int64_t *sizes,                 \
                    const int64_t *row_length, const int64_t *const *rows,                 \
                    const int64_t *table_rows, const C *table, int amsgrad,               \
                    uint8_t *overflow, int threads) {                                     \
        return adam<W, S, C>(n, handles, sizes, row_length, rows, table_rows, table,         \
                             amsgrad, overflow, threads);                                   \
    }                                                                                       \
    int checked_adam_##NAME(int64_t n, void *const *handles, const int64_t *sizes,         \
                            const int64_t *row_length, const int64_t *const *rows,         \
                            const int64_t *table_rows, const C *table, int amsgrad,       \
                            uint8_t *finite, uint8_t *overflow, int threads) {            \
        return checked_adam<W, S, C>(n, handles, sizes, row_length, rows, table_rows, table, \
                                     amsgrad, finite, overflow, threads);                   \
    }                                                                                       \
    int queue_adam_##NAME(void *const *handles, int64_t size, const C *table, int amsgrad, \
                          int threads, void **out) {                                       \
        return queue<W, S, C>(handles, size, table, amsgrad, threads, out);                 \
    }
ADAM_ENTRY(float32, float, float, float)
ADAM_ENTRY(float64, double, double, double)
ADAM_ENTRY(float16, _Float16, _Float16, float)
ADAM_ENTRY(float16_master, _Float16, float, float)

// Of n queued steps: 0 while one has not run; then 1 when each found its gradient finite
// and no Overflow, else 2 (queued_flags tells which).
int queued_done(void *const *queued, int64_t n) {
    int status = 1;
    for (int64_t i = 0; i < n; ++i) {
        const int done = static_cast<Queued *>(queued[i])->done.load(std::memory_order_acquire);
        if (done == 0) return 0;
        status = std::max(status, done);
    }
    return status;
}

// The queued step's findings, once done: is the gradient finite (1 or 0), and the
// Overflow flags of what the step wrote.
void queued_flags(void *queued, uint8_t *grad_finite, uint8_t *overflow) {
    const auto *q = static_cast<Queued *>(queued);
    *grad_finite = q->grad_finite;
    *overflow = q->overflow;
}

// The caller's release of a Queued (the engine holds it until its step has run).
void queued_release(void *queued) { release(queued); }

// The rows a row_sparse array stores, read on the calling thread from MXNet's serialization
// of it (NDArray::Save, described in adam_plugin/mxnet_internals beside the reader of the
// whole of it), where its `indices` are a copy by an engine operation: a handoff between
// threads even when the array is ready. The pending writes to the array are waited for
// first (MXNet reads the storage shape before it waits). The serialization: uint32 magic,
// int32 storage type, the storage shape and the shape (each int32 ndim, then ndim int64
// sizes), int32 device type and id, int32 dtype, int32 dtype of the rows, their shape, then
// the values and, last, the rows (x86-64 and MXNet's files: little-endian).
// The serialization copies the stored values too: past max_bytes of them (read from the
// array's DLPack view first) the rows are not read here.
// Returns 0 with *rows (in MXNet's buffer, kept until this thread's next call of
// MXNDArraySaveRawBytes: copy them first) and *count, when each row is below weight_rows and
// they are strictly increasing (MXNet keeps them sorted and distinct); 1 when the caller is
// to read them from `indices` instead: the values are more than max_bytes, the rows are not
// so, or the serialization is not one read here (MXNet refused to write it, as under NumPy
// shape semantics; rows that are not int64; a magic, storage type or number of dimensions
// this does not know); -1 when MXNet failed.
int sparse_rows(void *handle, int64_t weight_rows, int64_t max_bytes, const char **rows,
                int64_t *count) {
    constexpr uint32_t MAGIC = 0xF993FAC9;  // 0xF993FACA, NumPy shape semantics: no sparse
    constexpr int32_t ROW_SPARSE = 1, INT64 = 6, MAX_NDIM = 32;
    if (wait_to_read(handle) != 0) return -1;
    void *view = nullptr;
    if (to_dlpack(handle, &view) != 0) return -1;
    const auto *values = static_cast<const DLTensorStart *>(view);
    int64_t bytes_of_values = values->bits / 8 * values->lanes;
    for (int i = 0; i < values->ndim; ++i) bytes_of_values *= values->shape[i];
    if (call_dlpack_deleter(view) != 0) return -1;
    if (bytes_of_values > max_bytes) return 1;
    size_t size = 0;
    const char *bytes = nullptr;
    if (save_raw_bytes(handle, &size, &bytes) != 0) return 1;
    size_t at = 0;
    auto read = [&](auto &field) {  // the next field, false past the end
        if (size - at < sizeof field) return false;
        std::memcpy(&field, bytes + at, sizeof field);
        at += sizeof field;
        return true;
    };
    auto shape = [&](int32_t &ndim) {  // reads ndim, skips the sizes
        if (!read(ndim) || ndim < 1 || ndim > MAX_NDIM || size - at < 8 * size_t(ndim))
            return false;
        at += 8 * size_t(ndim);
        return true;
    };
    uint32_t magic;
    int32_t storage, ndim, device[2], dtype, row_dtype;
    int64_t stored;
    if (!read(magic) || magic != MAGIC || !read(storage) || storage != ROW_SPARSE ||
        !shape(ndim) || !shape(ndim) || !read(device) || !read(dtype) || !read(row_dtype) ||
        row_dtype != INT64 || !read(ndim) || ndim != 1 || !read(stored) || stored < 0 ||
        (size - at) / 8 < uint64_t(stored))
        return 1;
    const char *first = bytes + size - 8 * stored;
    int64_t previous = -1;
    for (int64_t i = 0; i < stored; ++i) {
        int64_t row;
        std::memcpy(&row, first + 8 * i, 8);
        if (row <= previous || row >= weight_rows) return 1;
        previous = row;
    }
    *rows = first;
    *count = stored;
    return 0;
}

// What a layout is read from (adam_plugin.kernel.describe), for each of n arrays in turn:
// its dtype, storage type, device type, device id and number of dimensions, then its
// shape, as MXNet's C API gives them (ndim -1: a shape not known yet), in out[0 ..
// capacity). Returns the count written, or -1 (MXNet's error set), or -2 when it would
// be more than capacity.
int64_t describe(int64_t n, void *const *handles, int64_t *out, int64_t capacity) {
    int64_t count = 0;
    for (int64_t a = 0; a < n; ++a) {
        int ndim = 0, dtype = -1, storage = -1, device = 0, id = 0;
        const int64_t *dims = nullptr;
        if (get_dtype(handles[a], &dtype) != 0 || get_storage_type(handles[a], &storage) != 0 ||
            get_context(handles[a], &device, &id) != 0 ||
            get_shape(handles[a], &ndim, &dims) != 0)
            return -1;
        const int64_t values = 5 + std::max(ndim, 0);
        if (count + values > capacity) return -2;
        int64_t *at = out + count;
        at[0] = dtype;
        at[1] = storage;
        at[2] = device;
        at[3] = id;
        at[4] = ndim;
        for (int i = 0; i < ndim; ++i) at[5 + i] = dims[i];
        count += values;
    }
    return count;
}

// For the tests: calls from the next on cut their elements into pieces of `elements`
// (CHUNK, 2^18, by default); returns the size used until now. A size below 1 changes nothing.
int64_t set_piece_size(int64_t elements) {
    return elements < 1 ? piece_size.load() : piece_size.exchange(elements);
}

int finite_float32(int64_t n, void *const *handles, const int64_t *sizes, uint8_t *finite_out,
                   int threads) {
    return finite<uint32_t>(n, handles, sizes, finite_out, threads);
}

int finite_float64(int64_t n, void *const *handles, const int64_t *sizes, uint8_t *finite_out,
                   int threads) {
    return finite<uint64_t>(n, handles, sizes, finite_out, threads);
}

int finite_float16(int64_t n, void *const *handles, const int64_t *sizes, uint8_t *finite_out,
                   int threads) {
    return finite<uint16_t>(n, handles, sizes, finite_out, threads);
}

}  // extern "C"
