// Linux calls Swift's Glibc module does not expose.
#ifndef CSYSTEMSHIMS_H
#define CSYSTEMSHIMS_H

#ifdef __linux__
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>

/// prctl(PR_SET_PDEATHSIG): deliver `signal` to this process when its parent
/// dies (prctl is variadic, so Swift cannot call it directly).
static inline int ip_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL);
}

/// mallopt(3): tune glibc malloc; returns 1 on success.
static inline int ip_mallopt(int param, int value) { return mallopt(param, value); }
static const int IP_M_MMAP_THRESHOLD = M_MMAP_THRESHOLD;
static const int IP_M_TRIM_THRESHOLD = M_TRIM_THRESHOLD;
#endif

#endif
