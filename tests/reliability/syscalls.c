/* R8: fail the system calls that write a store, DuckDB's included, from inside the process.
 *
 * Loaded with LD_PRELOAD, it wraps write, pwrite(64), fsync, fdatasync and ftruncate(64).
 * While armed, a call on a file under the chosen root is counted per function, and the
 * planned one (the n-th call of one function; with `always`, every later one too) fails
 * with the planned errno, as a full or failing disk would. Calls on other files (the
 * standard streams, pipes) are never touched, and the wrappers never call back into
 * Python, so DuckDB's threads cannot wait on the interpreter.
 *
 * Controlled through ctypes: shim_root, shim_plan, shim_arm, shim_count, shim_fired.
 * (libfiu's POSIX preload does the same for every descriptor, but its external callback
 * would have to call into Python from DuckDB's threads, which deadlocks.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

enum { WRITE, PWRITE, FSYNC, FDATASYNC, FTRUNCATE, FUNCTIONS };

static char root[4096];
static size_t root_len;
static atomic_int armed;
static atomic_long counts[FUNCTIONS];
static atomic_long fired;
static int plan_function = -1, plan_errno, plan_always;
static long plan_nth = -1;

void shim_root(const char *path) {
    snprintf(root, sizeof root, "%s", path);
    root_len = strlen(root);
}

void shim_plan(int function, long nth, int error, int always) {
    plan_function = function;
    plan_nth = nth;
    plan_errno = error;
    plan_always = always;
    for (int i = 0; i < FUNCTIONS; i++) atomic_store(&counts[i], 0);
    atomic_store(&fired, 0);
}

void shim_arm(int on) { atomic_store(&armed, on); }
long shim_count(int function) { return atomic_load(&counts[function]); }
long shim_fired(void) { return atomic_load(&fired); }

static int under_root(int fd) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0 || root_len == 0) return 0;
    path[n] = '\0';
    return strncmp(path, root, root_len) == 0;
}

/* Whether this call fails (errno set). */
static int fault(int function, int fd) {
    if (!atomic_load(&armed) || !under_root(fd)) return 0;
    long n = atomic_fetch_add(&counts[function], 1);
    if (function != plan_function) return 0;
    if (n == plan_nth || (plan_always && n > plan_nth)) {
        atomic_fetch_add(&fired, 1);
        errno = plan_errno;
        return 1;
    }
    return 0;
}

#define REAL(name) static __typeof__(name) *real; if (!real) real = dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(write);
    return fault(WRITE, fd) ? -1 : real(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite);
    return fault(PWRITE, fd) ? -1 : real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    REAL(pwrite64);
    return fault(PWRITE, fd) ? -1 : real(fd, buf, count, offset);
}

int fsync(int fd) {
    REAL(fsync);
    return fault(FSYNC, fd) ? -1 : real(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    return fault(FDATASYNC, fd) ? -1 : real(fd);
}

int ftruncate(int fd, off_t length) {
    REAL(ftruncate);
    return fault(FTRUNCATE, fd) ? -1 : real(fd, length);
}

int ftruncate64(int fd, off64_t length) {
    REAL(ftruncate64);
    return fault(FTRUNCATE, fd) ? -1 : real(fd, length);
}
