// Linux calls Swift's Glibc module does not expose.
#ifndef CSYSTEMSHIMS_H
#define CSYSTEMSHIMS_H

#ifdef __linux__
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <poll.h>
#include <unistd.h>

/// prctl(PR_SET_PDEATHSIG): deliver `signal` to this process when its parent
/// dies (prctl is variadic, so Swift cannot call it directly).
static inline int ip_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL);
}

/// mallopt(3): tune glibc malloc; returns 1 on success.
static inline int ip_mallopt(int param, int value) { return mallopt(param, value); }
static const int IP_M_MMAP_THRESHOLD = M_MMAP_THRESHOLD;
static const int IP_M_TRIM_THRESHOLD = M_TRIM_THRESHOLD;
static const int IP_M_ARENA_MAX = M_ARENA_MAX;

/// Waits up to `timeout_ms` for process `pid` (not necessarily a child) to
/// exit, via pidfd_open(2) and poll(2). Returns 1 if it exited, 0 on
/// timeout, -1 if it could not be watched (errno set).
static inline int ip_wait_for_process_exit(int pid, int timeout_ms) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) return -1;
    struct pollfd entry = { .fd = fd, .events = POLLIN, .revents = 0 };
    int ready = poll(&entry, 1, timeout_ms);
    close(fd);
    return ready > 0 ? 1 : (ready == 0 ? 0 : -1);
}

/// Starts `path` with `argv` and `envp` (NULL-terminated) in a process group
/// of its own, with `in_fd`, `out_fd`, `err_fd` as its stdin, stdout and
/// stderr, every other descriptor closed, and default signal handling,
/// in `directory` (NULL: this process's). Returns the pid, or -errno.
/// (In CSystemShims.c: it needs _GNU_SOURCE.)
int ip_spawn(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd, const char *directory);

/// pipe2(fds, O_CLOEXEC); 0 or -1 with errno.
int ip_pipe_cloexec(int fds[2]);

/// No core dumps and no ptrace or /proc access by the same uid:
/// setrlimit(RLIMIT_CORE, 0) and prctl(PR_SET_DUMPABLE, 0). Returns 0 or
/// -errno.
int ip_forbid_dumps_and_tracing(void);

/// The step of ``ip_spawn_as_user`` that failed.
enum {
    IP_SPAWN_STEP_NONE = 0,
    IP_SPAWN_STEP_FORK,
    IP_SPAWN_STEP_PROCESS_GROUP,
    IP_SPAWN_STEP_STDIO,
    IP_SPAWN_STEP_CLOSE,
    IP_SPAWN_STEP_BOUNDING_SET,
    IP_SPAWN_STEP_AMBIENT,
    IP_SPAWN_STEP_SETGROUPS,
    IP_SPAWN_STEP_SETRESGID,
    IP_SPAWN_STEP_SETRESUID,
    IP_SPAWN_STEP_CAPSET,
    IP_SPAWN_STEP_NO_NEW_PRIVS,
    IP_SPAWN_STEP_EXEC,
    IP_SPAWN_STEP_CHDIR,
};

/// The system call a failed step names, e.g. "setresuid".
const char *ip_spawn_step_name(int step);

/// Like ``ip_spawn`` (own process group, the three descriptors, every other
/// one closed, every signal default and unblocked), and the child drops to
/// `uid`/`gid` before exec: supplementary groups set to just `gid`, the
/// capability bounding and ambient sets emptied, effective, permitted and
/// inheritable capabilities cleared, and PR_SET_NO_NEW_PRIVS set. fork +
/// execve, with only async-signal-safe calls in the child; a failure in the
/// child (exec included) comes back through a close-on-exec pipe. Returns
/// the pid, or -errno with `*failed_step` naming the step. The child
/// changes to `directory` (NULL: stays in this process's) as the new user,
/// after dropping privileges.
int ip_spawn_as_user(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd,
                     unsigned int uid, unsigned int gid, const char *directory, int *failed_step);
#endif

#endif
