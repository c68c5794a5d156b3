/* Thread controls, SIMD level selection and build information. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels refuse it (EINVAL) */
#endif
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define FN_HAVE_ATFORK 1
#endif

/* Thread count precedence (documented in fastnorm/_runtime.py):
 *   - fn_threads_override > 0 (set_num_threads(n)) is fastnorm's own setting; otherwise the
 *     calling thread's OpenMP setting, omp_get_max_threads(), decides (OMP_NUM_THREADS,
 *     threadpoolctl, omp_set_num_threads);
 *   - an OpenMP setting below the process default (what a thread that never called
 *     omp_set_num_threads sees, probed once at load) is a limit someone imposed, for example
 *     threadpoolctl.threadpool_limits(1): it caps the override too. */
static int fn_threads_override = 0;
static int fn_omp_default = 0;
static int fn_isa_level = FN_ISA_BASELINE;
int64_t fn_stream_bytes = FN_STREAM_BYTES;

/* The default streaming threshold (see FN_STREAM_BYTES): the last-level cache's size where
 * the system says it, at most FN_STREAM_BYTES. */
static int64_t fn_stream_default(void)
{
    int64_t llc = 0;
#if defined(__linux__) && defined(_SC_LEVEL3_CACHE_SIZE)
    llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0)
        llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return llc > 0 && llc < FN_STREAM_BYTES ? llc : FN_STREAM_BYTES;
}

void fn_set_stream_bytes(int64_t bytes)
{
    fn_stream_bytes = bytes >= 0 ? bytes : fn_stream_default();
}

int64_t fn_get_stream_bytes(void)
{
    return fn_stream_bytes;
}

void fn_prefault(void *p, int64_t bytes)
{
#if defined(__linux__)
    if (!p || bytes <= 0)
        return;
    const long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0)
        return;
    /* the whole pages inside the range: the partial first and last pages may hold other
     * data, which this call must not fault (it would not change it either) */
    const uintptr_t a = (uintptr_t)p, b = a + (uintptr_t)bytes;
    const uintptr_t m = (uintptr_t)ps - 1, lo = (a + m) & ~m, hi = b & ~m;
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE); /* failure: no harm done */
#else
    (void)p;
    (void)bytes;
#endif
}

/* Set in a child created by fork(): GNU libgomp's thread pool does not survive fork, and
 * a parallel region in the child could wait forever for the parent's threads, so the
 * child runs every kernel on its own thread. */
static volatile int fn_forked = 0;

/* The output cache (fastnorm.h): blocks in the order they were freed, oldest first. */
static struct {
    void *p;
    size_t size;
} fn_cache[FN_CACHE_SLOTS];
static int fn_cache_n = 0;
static int64_t fn_cache_held = 0;
static int64_t fn_cache_max = 0;

#ifdef FN_HAVE_ATFORK
static pthread_mutex_t fn_cache_mutex = PTHREAD_MUTEX_INITIALIZER;
static void fn_cache_lock(void)
{
    pthread_mutex_lock(&fn_cache_mutex);
}
static void fn_cache_unlock(void)
{
    pthread_mutex_unlock(&fn_cache_mutex);
}
/* fork() while holding the lock: prepare takes it, so that no other thread holds it in
 * the child, and both sides let it go */
static void fn_atfork_child(void)
{
    fn_forked = 1;
    fn_cache_unlock();
}
static pthread_once_t fn_atfork_once = PTHREAD_ONCE_INIT;
static void fn_atfork_register(void)
{
    pthread_atfork(fn_cache_lock, fn_cache_unlock, fn_atfork_child);
}
#else
static void fn_cache_lock(void) {}
static void fn_cache_unlock(void) {}
#endif

/* Free the oldest blocks until at most `slots` remain and they hold at most `bytes`;
 * with the lock held. The blocks are freed after the lock is let go, by the caller. */
static int fn_cache_shrink(int slots, int64_t bytes, void **out)
{
    int k = 0;
    while (fn_cache_n > 0 && (fn_cache_n > slots || fn_cache_held > bytes)) {
        out[k++] = fn_cache[0].p;
        fn_cache_held -= (int64_t)fn_cache[0].size;
        fn_cache_n--;
        memmove(fn_cache, fn_cache + 1, (size_t)fn_cache_n * sizeof fn_cache[0]);
    }
    return k;
}

static void fn_free_all(void **blocks, int k)
{
    for (int i = 0; i < k; i++)
        free(blocks[i]);
}

void *fn_cache_malloc(size_t size)
{
    if ((int64_t)size >= FN_CACHE_MIN) {
        void *hit = NULL;
        fn_cache_lock();
        for (int i = fn_cache_n - 1; i >= 0; i--) { /* the most recently freed first */
            if (fn_cache[i].size == size) {
                hit = fn_cache[i].p;
                fn_cache_held -= (int64_t)size;
                fn_cache_n--;
                memmove(fn_cache + i, fn_cache + i + 1,
                        (size_t)(fn_cache_n - i) * sizeof fn_cache[0]);
                break;
            }
        }
        fn_cache_unlock();
        if (hit)
            return hit;
    }
    void *p = malloc(size ? size : 1);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p && size >= ((size_t)1 << 22)) { /* as NumPy's own allocation does */
        const uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
        const uintptr_t b = ((uintptr_t)p + size) & ~(uintptr_t)4095;
        if (b > a)
            (void)madvise((void *)a, b - a, MADV_HUGEPAGE);
    }
#endif
    return p;
}

void fn_cache_free(void *p, size_t size)
{
    if (!p)
        return;
    void *drop[FN_CACHE_SLOTS + 1];
    int k = 0;
    fn_cache_lock();
    if ((int64_t)size >= FN_CACHE_MIN && (int64_t)size <= fn_cache_max) {
        k = fn_cache_shrink(FN_CACHE_SLOTS - 1, fn_cache_max - (int64_t)size, drop);
        fn_cache[fn_cache_n].p = p;
        fn_cache[fn_cache_n].size = size;
        fn_cache_n++;
        fn_cache_held += (int64_t)size;
        p = NULL;
    }
    fn_cache_unlock();
    fn_free_all(drop, k);
    free(p);
}

void fn_cache_set_limit(int64_t bytes)
{
    void *drop[FN_CACHE_SLOTS];
    fn_cache_lock();
    fn_cache_max = bytes > 0 ? bytes : 0;
    const int k = fn_cache_shrink(FN_CACHE_SLOTS, fn_cache_max, drop);
    fn_cache_unlock();
    fn_free_all(drop, k);
}

int64_t fn_cache_limit(void)
{
    return fn_cache_max;
}

int64_t fn_cache_bytes(void)
{
    fn_cache_lock();
    const int64_t b = fn_cache_held;
    fn_cache_unlock();
    return b;
}

#ifdef _OPENMP
/* omp_get_max_threads() in a fresh thread: the process-wide default (OMP_NUM_THREADS or the
 * number of processors), whatever the importing thread's own setting is at the time (an
 * import inside a threadpool_limits block must not make that limit the default). */
#ifdef FN_HAVE_ATFORK
static void *fn_probe_omp_default(void *arg)
{
    *(int *)arg = omp_get_max_threads();
    return NULL;
}
#endif

static int fn_probe_default(void)
{
    int n = 0;
#ifdef FN_HAVE_ATFORK
    pthread_t t;
    if (pthread_create(&t, NULL, fn_probe_omp_default, &n) == 0)
        pthread_join(t, NULL);
    else
        n = 0;
#endif
    return n > 0 ? n : omp_get_max_threads();
}
#endif

void fn_runtime_init(void)
{
    static int stream_set = 0;
    if (!stream_set) {
        fn_stream_bytes = fn_stream_default();
        stream_set = 1;
    }
#ifdef FN_HAVE_ATFORK
    pthread_once(&fn_atfork_once, fn_atfork_register);
#endif
#ifdef _OPENMP
    if (fn_omp_default == 0)
        fn_omp_default = fn_probe_default();
#endif
}

int fn_in_forked_child(void)
{
    return fn_forked;
}

void fn_set_num_threads(int n)
{
    fn_threads_override = n > 0 ? n : 0;
}

#if defined(_MSC_VER)
static __declspec(thread) int fn_serial_flag = 0;
#else
static _Thread_local int fn_serial_flag = 0;
#endif

void fn_set_serial(int on)
{
    fn_serial_flag = on != 0;
}

int fn_get_serial(void)
{
    return fn_serial_flag;
}

int fn_get_num_threads(void)
{
#ifdef _OPENMP
    if (fn_forked)
        return 1;
    const int omp = omp_get_max_threads();
    const int n = fn_threads_override;
    if (n <= 0)
        return omp;
    return omp < fn_omp_default && omp < n ? omp : n;
#else
    return 1;
#endif
}

int fn_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fn_threads_for(int64_t items, int64_t elems)
{
    if (elems < FN_SERIAL_ELEMS || items < 2 || fn_serial_flag)
        return 0;
    const int n = fn_get_num_threads();
    return items < n ? (int)items : n;
}

int fn_isa_supported(void)
{
#if FN_MULTI_ISA
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("f16c"))
        return FN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return FN_ISA_AVX2;
#endif
    return FN_ISA_BASELINE;
}

int fn_isa_select(int level)
{
    if (level < FN_ISA_BASELINE || level > fn_isa_supported())
        return FN_ERR_ARG;
    fn_isa_level = level;
    return FN_OK;
}

int fn_isa_active(void)
{
    return fn_isa_level;
}

const char *fn_isa_name(int level)
{
    switch (level) {
    case FN_ISA_BASELINE:
        return "baseline";
    case FN_ISA_AVX2:
        return "avx2";
    case FN_ISA_AVX512:
        return "avx512";
    default:
        return "unknown";
    }
}

#ifndef FN_BUILD_FLAGS
#define FN_BUILD_FLAGS ""
#endif
#if defined(__clang__)
#define FN_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define FN_COMPILER "gcc " __VERSION__
#else
#define FN_COMPILER "unknown compiler"
#endif
#ifdef _OPENMP
#define FN_STR_(x) #x
#define FN_STR(x) FN_STR_(x)
#define FN_OMP_INFO "OpenMP " FN_STR(_OPENMP)
#else
#define FN_OMP_INFO "no OpenMP"
#endif

const char *fn_build_info(void)
{
    return FN_COMPILER "; " FN_OMP_INFO "; flags: " FN_BUILD_FLAGS;
}
