/* Make this process and its children see a CPU without AVX-512, VNNI, BF16 or AMX.
 *
 * Why our own: issue 13's goals name an AVX2-only CPU, and no library offers a switch for all of
 * them at once. PyTorch has ATEN_CPU_CAPABILITY, oneDNN has ONEDNN_MAX_CPU_ISA, but ONNX
 * Runtime's MLAS and fbgemm read CPUID directly and have none. Linux can make the CPUID
 * instruction fault (arch_prctl(ARCH_SET_CPUID, 0), on CPUs with the `cpuid_fault` flag); this
 * preload library turns on that fault at load time, answers each CPUID from the real CPU in
 * its SIGSEGV handler with the AVX-512/VNNI/BF16/AMX/AVX10 feature bits cleared, and steps
 * over the instruction. Every library then picks its AVX2 kernels on this same host. Reads of
 * /proc/cpuinfo get the same flags removed, so tools that read the kernel's view (wattwise's
 * own machine probe) see the same AVX2-only CPU.
 * What it cannot do: make an AVX-512 core's AVX2 units behave like an older AVX2-only core's
 * (clock, port count, cache sizes stay this machine's).
 *
 * Build: gcc -O2 -shared -fPIC -o libisamask.so isa_mask.c -ldl
 * Use:   LD_PRELOAD=$PWD/libisamask.so python ...   (bench/as_avx2.sh does both)
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static struct sigaction chained;      /* the SIGSEGV handler others asked for */
static int installed;

static void mask_features(uint32_t leaf, uint32_t subleaf, uint32_t *a, uint32_t *b,
                          uint32_t *c, uint32_t *d) {
    if (leaf == 7 && subleaf == 0) {
        /* EBX: avx512 f, dq, ifma, pf, er, cd, bw, vl */
        *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
                (1u << 30) | (1u << 31));
        /* ECX: avx512 vbmi, vbmi2, vnni, bitalg, vpopcntdq */
        *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4vnniw, 4fmaps, vp2intersect, amx-bf16, avx512fp16, amx-tile, amx-int8 */
        *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
                (1u << 25));
    } else if (leaf == 7 && subleaf == 1) {
        /* EAX: avx-vnni, avx512_bf16, amx-fp16, avx-ifma */
        *a &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        /* EDX: avx-vnni-int8, avx-ne-convert, avx-vnni-int16, avx10 */
        *d &= ~((1u << 4) | (1u << 5) | (1u << 10) | (1u << 19));
    } else if (leaf == 0x24) {
        *a = *b = *c = *d = 0; /* AVX10 leaf */
    }
}

static sigaction_fn real_sigaction(void) {
    static sigaction_fn fn;
    if (!fn) fn = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return fn;
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = (ucontext_t *)context;
    greg_t *regs = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    if (ip[0] == 0x0f && ip[1] == 0xa2) {
        uint32_t leaf = (uint32_t)regs[REG_RAX], subleaf = (uint32_t)regs[REG_RCX];
        uint32_t a, b, c, d;
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
        __cpuid_count(leaf, subleaf, a, b, c, d);
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
        mask_features(leaf, subleaf, &a, &b, &c, &d);
        regs[REG_RAX] = a;
        regs[REG_RBX] = b;
        regs[REG_RCX] = c;
        regs[REG_RDX] = d;
        regs[REG_RIP] += 2;
        return;
    }
    /* A real fault: hand it to whoever asked for SIGSEGV, else die as usual. */
    if (chained.sa_flags & SA_SIGINFO) {
        if (chained.sa_sigaction) {
            chained.sa_sigaction(sig, info, context);
            return;
        }
    } else if (chained.sa_handler != SIG_DFL && chained.sa_handler != SIG_IGN &&
               chained.sa_handler != NULL) {
        chained.sa_handler(sig);
        return;
    }
    /* Back to the default action through the real sigaction (ours would only record it);
     * returning re-runs the faulting instruction, which now kills the process as usual. A
     * SIGSEGV sent by kill() has no instruction to re-run, so it is raised again. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    real_sigaction()(SIGSEGV, &dfl, NULL);
    if (info->si_code <= 0) raise(SIGSEGV);
}

/* Others (Python's faulthandler, pytest) install SIGSEGV handlers: keep ours in front and
 * chain theirs, so CPUID keeps being answered. */
int sigaction(int signum, const struct sigaction *act, struct sigaction *oldact) {
    if (signum == SIGSEGV && installed) {
        struct sigaction previous = chained;
        if (act) chained = *act;
        if (oldact) *oldact = previous;
        return 0;
    }
    return real_sigaction()(signum, act, oldact);
}

__sighandler_t signal(int signum, __sighandler_t handler) {
    if (signum == SIGSEGV && installed) {
        __sighandler_t previous = chained.sa_handler;
        memset(&chained, 0, sizeof chained);
        chained.sa_handler = handler;
        return previous;
    }
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (real_sigaction()(signum, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

/* ---- /proc/cpuinfo with the masked flags removed ---- */

static const char *const masked_prefixes[] = {"avx512", "amx_", "avx_vnni", "avx_ifma",
                                              "avx_ne_convert", "avx10", NULL};

static int is_masked_flag(const char *word, size_t len) {
    for (int i = 0; masked_prefixes[i]; i++) {
        size_t n = strlen(masked_prefixes[i]);
        if (len >= n && strncmp(word, masked_prefixes[i], n) == 0) return 1;
    }
    return 0;
}

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);

/* A memfd holding /proc/cpuinfo without the masked flags; -1 on failure (then the real file). */
static int filtered_cpuinfo(void) {
    static open_fn real_open;
    if (!real_open) real_open = (open_fn)dlsym(RTLD_NEXT, "open");
    int in = real_open("/proc/cpuinfo", O_RDONLY);
    if (in < 0) return -1;
    size_t cap = 1 << 16, used = 0;
    char *text = malloc(cap);
    ssize_t got;
    while (text && (got = read(in, text + used, cap - used)) > 0) {
        used += (size_t)got;
        if (used == cap) text = realloc(text, cap *= 2);
    }
    close(in);
    if (!text) return -1;
    int out = memfd_create("cpuinfo", 0);
    if (out < 0) { free(text); return -1; }
    size_t pos = 0;
    while (pos < used) {
        size_t end = pos;
        while (end < used && text[end] != '\n') end++;
        int is_flags = strncmp(text + pos, "flags", 5) == 0;
        if (!is_flags) {
            if (write(out, text + pos, end - pos + (end < used)) < 0) break;
        } else {
            size_t word = pos;
            while (word < end) {
                size_t stop = word;
                while (stop < end && text[stop] != ' ') stop++;
                if (!is_masked_flag(text + word, stop - word)) {
                    if (write(out, text + word, stop - word) < 0) break;
                    if (stop < end && write(out, " ", 1) < 0) break;
                }
                word = stop + 1;
            }
            if (end < used && write(out, "\n", 1) < 0) break;
        }
        pos = end + 1;
    }
    free(text);
    lseek(out, 0, SEEK_SET);
    return out;
}

static int wants_cpuinfo(const char *path, int flags) {
    return installed && path && strcmp(path, "/proc/cpuinfo") == 0 && (flags & O_ACCMODE) == O_RDONLY;
}

/* The body both open() and openat() wrappers share: read the optional mode, serve the filtered
 * /proc/cpuinfo, else call the real function with `real_args`. */
#define OPEN_BODY(fn_type, name, real_args)                                        \
    static fn_type real;                                                           \
    mode_t mode = 0;                                                               \
    if (flags & (O_CREAT | O_TMPFILE)) {                                           \
        va_list args;                                                              \
        va_start(args, flags);                                                     \
        mode = va_arg(args, mode_t);                                               \
        va_end(args);                                                              \
    }                                                                              \
    if (wants_cpuinfo(path, flags)) {                                              \
        int fd = filtered_cpuinfo();                                               \
        if (fd >= 0) return fd;                                                    \
    }                                                                              \
    if (!real) real = (fn_type)dlsym(RTLD_NEXT, #name);                            \
    return real real_args;

int open(const char *path, int flags, ...) { OPEN_BODY(open_fn, open, (path, flags, mode)) }
int open64(const char *path, int flags, ...) { OPEN_BODY(open_fn, open64, (path, flags, mode)) }
int openat(int dirfd, const char *path, int flags, ...) {
    OPEN_BODY(openat_fn, openat, (dirfd, path, flags, mode))
}
int openat64(int dirfd, const char *path, int flags, ...) {
    OPEN_BODY(openat_fn, openat64, (dirfd, path, flags, mode))
}

__attribute__((constructor)) static void start_masking(void) {
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_segv;
    act.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&act.sa_mask);
    memset(&chained, 0, sizeof chained);
    chained.sa_handler = SIG_DFL;
    if (real_sigaction()(SIGSEGV, &act, NULL) != 0) {
        fprintf(stderr, "isa_mask: cannot install the SIGSEGV handler; CPUID not masked\n");
        return;
    }
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr, "isa_mask: this CPU or kernel has no CPUID faulting (flag cpuid_fault); "
                        "CPUID not masked\n");
        exit(97);
    }
    installed = 1;
}
