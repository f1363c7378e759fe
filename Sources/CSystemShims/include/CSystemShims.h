// Linux calls Swift's Glibc module does not expose.
#ifndef CSYSTEMSHIMS_H
#define CSYSTEMSHIMS_H

#ifdef __linux__
#include <malloc.h>

/// mallopt(3): tune glibc malloc; returns 1 on success.
static inline int ip_mallopt(int param, int value) { return mallopt(param, value); }
static const int IP_M_MMAP_THRESHOLD = M_MMAP_THRESHOLD;
static const int IP_M_TRIM_THRESHOLD = M_TRIM_THRESHOLD;
#endif

#endif
