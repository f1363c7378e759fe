// Functions that need more than a header: ip_spawn uses glibc's
// posix_spawn_file_actions_addclosefrom_np, declared under _GNU_SOURCE.
#define _GNU_SOURCE
#include <signal.h>
#include <spawn.h>
#include "CSystemShims.h"

#ifdef __linux__
int ip_spawn(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd, const char *directory) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return -rc;
    rc = posix_spawnattr_init(&attributes);
    if (rc != 0) { posix_spawn_file_actions_destroy(&actions); return -rc; }
    posix_spawn_file_actions_adddup2(&actions, in_fd, 0);
    posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
    posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    // glibc >= 2.29; the child fails with the chdir's errno before exec.
    if (directory != NULL) posix_spawn_file_actions_addchdir_np(&actions, directory);
    // Every signal the controller ignores or handles starts as default in
    // the child (an ignored disposition would otherwise survive exec).
    sigset_t none, defaults;
    sigemptyset(&none);
    sigfillset(&defaults);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    posix_spawnattr_setpgroup(&attributes, 0);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = 0;
    rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    return rc == 0 ? (int)pid : -rc;
}
#endif

#ifdef __linux__
#include <fcntl.h>
#include <unistd.h>
int ip_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
#endif

#ifdef __linux__
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

int ip_forbid_dumps_and_tracing(void) {
    struct rlimit none = { 0, 0 };
    if (setrlimit(RLIMIT_CORE, &none) != 0) return -errno;
    if (prctl(PR_SET_DUMPABLE, 0UL, 0UL, 0UL, 0UL) != 0) return -errno;
    return 0;
}

const char *ip_spawn_step_name(int step) {
    switch (step) {
    case IP_SPAWN_STEP_FORK: return "fork";
    case IP_SPAWN_STEP_PROCESS_GROUP: return "setpgid";
    case IP_SPAWN_STEP_STDIO: return "dup2";
    case IP_SPAWN_STEP_CLOSE: return "close_range";
    case IP_SPAWN_STEP_BOUNDING_SET: return "prctl(PR_CAPBSET_DROP)";
    case IP_SPAWN_STEP_AMBIENT: return "prctl(PR_CAP_AMBIENT_CLEAR_ALL)";
    case IP_SPAWN_STEP_SETGROUPS: return "setgroups";
    case IP_SPAWN_STEP_SETRESGID: return "setresgid";
    case IP_SPAWN_STEP_SETRESUID: return "setresuid";
    case IP_SPAWN_STEP_CAPSET: return "capset";
    case IP_SPAWN_STEP_NO_NEW_PRIVS: return "prctl(PR_SET_NO_NEW_PRIVS)";
    case IP_SPAWN_STEP_CHDIR: return "chdir";
    case IP_SPAWN_STEP_EXEC: return "execve";
    default: return "spawn";
    }
}

/// In the child after fork: reports which step failed and with which errno
/// on the close-on-exec pipe, then exits. Async-signal-safe only.
static void ip_child_fail(int report_fd, int step) {
    int message[2] = { step, errno };
    ssize_t ignored = write(report_fd, message, sizeof message);
    (void)ignored;
    _exit(127);
}

/// Closes every descriptor from `first` to `last` (inclusive).
static int ip_close_range(unsigned int first, unsigned int last) {
    if (first > last) return 0;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, first, last, 0U) == 0) return 0;
    if (errno != ENOSYS) return -1;
#endif
    struct rlimit limit;
    unsigned int top = last;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur - 1 < top) {
        top = (unsigned int)(limit.rlim_cur - 1);
    }
    for (unsigned int fd = first; fd <= top && fd >= first; fd++) close((int)fd);
    return 0;
}

int ip_spawn_as_user(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd,
                     unsigned int uid, unsigned int gid, const char *directory, int *failed_step) {
    *failed_step = IP_SPAWN_STEP_NONE;
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) { *failed_step = IP_SPAWN_STEP_FORK; return -errno; }
    // Keep the report pipe clear of the three descriptors the child dup2s onto.
    for (int end = 0; end < 2; end++) {
        if (report[end] <= 2) {
            int moved = fcntl(report[end], F_DUPFD_CLOEXEC, 3);
            if (moved < 0) { int e = errno; close(report[0]); close(report[1]); *failed_step = IP_SPAWN_STEP_FORK; return -e; }
            close(report[end]);
            report[end] = moved;
        }
    }
    // No signal handler may run in the child before the dispositions are reset.
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = report[1];
        for (int sig = 1; sig < _NSIG; sig++) {
            struct sigaction action;
            memset(&action, 0, sizeof action);
            action.sa_handler = SIG_DFL;
            sigemptyset(&action.sa_mask);
            (void)sigaction(sig, &action, NULL);  // fails harmlessly for SIGKILL, SIGSTOP
        }
        if (setpgid(0, 0) != 0) ip_child_fail(fd, IP_SPAWN_STEP_PROCESS_GROUP);
        if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) ip_child_fail(fd, IP_SPAWN_STEP_STDIO);
        if (ip_close_range(3, (unsigned int)fd - 1) != 0 || ip_close_range((unsigned int)fd + 1, ~0U) != 0) {
            ip_child_fail(fd, IP_SPAWN_STEP_CLOSE);
        }
        // While still privileged: empty the bounding set and the ambient set.
        for (int cap = 0; cap < 64; cap++) {
            int present = prctl(PR_CAPBSET_READ, (unsigned long)cap, 0UL, 0UL, 0UL);
            if (present < 0) break;  // past the last capability this kernel knows
            if (present == 1 && prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0UL, 0UL, 0UL) != 0) {
                ip_child_fail(fd, IP_SPAWN_STEP_BOUNDING_SET);
            }
        }
        if (prctl(PR_CAP_AMBIENT, (unsigned long)PR_CAP_AMBIENT_CLEAR_ALL, 0UL, 0UL, 0UL) != 0 && errno != EINVAL) {
            ip_child_fail(fd, IP_SPAWN_STEP_AMBIENT);
        }
        // Raw system calls: this thread is the only one, and glibc's wrappers
        // would try to change every thread of the parent's image.
        gid_t groups[1] = { (gid_t)gid };
        if (syscall(SYS_setgroups, 1, groups) != 0) ip_child_fail(fd, IP_SPAWN_STEP_SETGROUPS);
        if (syscall(SYS_setresgid, (gid_t)gid, (gid_t)gid, (gid_t)gid) != 0) ip_child_fail(fd, IP_SPAWN_STEP_SETRESGID);
        if (syscall(SYS_setresuid, (uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) ip_child_fail(fd, IP_SPAWN_STEP_SETRESUID);
        struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct data[2];
        memset(data, 0, sizeof data);
        if (syscall(SYS_capset, &header, data) != 0) ip_child_fail(fd, IP_SPAWN_STEP_CAPSET);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1UL, 0UL, 0UL, 0UL) != 0) ip_child_fail(fd, IP_SPAWN_STEP_NO_NEW_PRIVS);
        // As the shim's user: a directory it may not enter is refused here.
        if (directory != NULL && chdir(directory) != 0) ip_child_fail(fd, IP_SPAWN_STEP_CHDIR);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(path, argv, envp);
        ip_child_fail(fd, IP_SPAWN_STEP_EXEC);
    }
    int fork_error = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    close(report[1]);
    if (pid < 0) {
        close(report[0]);
        *failed_step = IP_SPAWN_STEP_FORK;
        return -fork_error;
    }
    (void)setpgid(pid, pid);  // as the child does: no window outside its group
    int message[2] = { 0, 0 };
    size_t got = 0;
    while (got < sizeof message) {
        ssize_t count = read(report[0], (char *)message + got, sizeof message - got);
        if (count < 0 && errno == EINTR) continue;
        if (count <= 0) break;
        got += (size_t)count;
    }
    close(report[0]);
    if (got == 0) return (int)pid;  // closed by a successful exec
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    *failed_step = got == sizeof message ? message[0] : IP_SPAWN_STEP_EXEC;
    return got == sizeof message && message[1] != 0 ? -message[1] : -EIO;
}
#endif
