/*
 * uds_pingpong: the floor for scripts/bench-rpc. Raw Unix-socket ping-pong
 * with a 4-byte big-endian length prefix and nothing else: no protobuf, no
 * ttrpc header, no multiplexing. A framed RPC cannot beat this.
 *
 *   uds_pingpong server PATH
 *       Removes a stale PATH, listens, chmods it 0600, prints "ready", and
 *       echoes every length-prefixed message back, one thread per
 *       connection. Exits on SIGTERM/SIGINT or EOF on stdin.
 *
 *   uds_pingpong client PATH [-payload N] [-concurrency C] [-duration S] [-warmup W]
 *       C threads, one connection each, blocking write/read loops. Prints
 *       one JSON line like the other bench clients, with "impl":"c-floor".
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -pthread -o uds_pingpong uds_pingpong.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Largest message either side accepts: 64 MiB. */
#define MAX_MESSAGE (64u << 20)

static void die(const char *what) {
    fprintf(stderr, "uds_pingpong: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(void) {
    fprintf(stderr,
            "usage: uds_pingpong server PATH\n"
            "       uds_pingpong client PATH [-payload N] [-concurrency C] "
            "[-duration S] [-warmup W]\n");
    exit(2);
}

/* Writes all of buf; 0 on success, -1 on error (errno set). */
static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads exactly len bytes; 0 on success, 1 on clean EOF before the first
 * byte, -1 on error or EOF mid-message. */
static int read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            if (got == 0)
                return 1;
            errno = EPIPE;
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

static uint32_t get_be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

static void put_be32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

static int unix_address(const char *path, struct sockaddr_un *addr) {
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr->sun_path) {
        fprintf(stderr, "uds_pingpong: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(addr->sun_path, path);
    return 0;
}

/* ------------------------------------------------------------------ server */

static void *serve_connection(void *arg) {
    int fd = (int)(intptr_t)arg;
    /* One buffer holds prefix + message so each echo is a single write. */
    size_t cap = 4 + 65536;
    unsigned char *buf = malloc(cap);
    if (buf == NULL)
        goto done;
    for (;;) {
        if (read_all(fd, buf, 4) != 0)
            break;
        uint32_t len = get_be32(buf);
        if (len > MAX_MESSAGE) {
            fprintf(stderr, "uds_pingpong: message of %u bytes over the %u limit; closing\n",
                    len, MAX_MESSAGE);
            break;
        }
        if (4 + (size_t)len > cap) {
            size_t ncap = 4 + (size_t)len;
            unsigned char *nbuf = realloc(buf, ncap);
            if (nbuf == NULL)
                break;
            buf = nbuf;
            cap = ncap;
        }
        if (read_all(fd, buf + 4, len) != 0)
            break;
        if (write_all(fd, buf, 4 + (size_t)len) != 0)
            break;
    }
done:
    free(buf);
    close(fd);
    return NULL;
}

static void *accept_loop(void *arg) {
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            fprintf(stderr, "uds_pingpong: accept: %s\n", strerror(errno));
            kill(getpid(), SIGTERM);
            return NULL;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, serve_connection, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(t);
    }
}

static void *watch_stdin(void *arg) {
    (void)arg;
    char buf[256];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EINTR))
            break;
    }
    kill(getpid(), SIGTERM); /* process-directed: the main thread's sigwait gets it */
    return NULL;
}

static int run_server(const char *path) {
    struct sockaddr_un addr;
    if (unix_address(path, &addr) != 0)
        return 1;

    /* Every thread inherits this mask; main collects the signals with sigwait. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (unlink(path) != 0 && errno != ENOENT)
        die("removing stale socket");
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0)
        die("bind");
    if (chmod(path, 0600) != 0)
        die("chmod");
    if (listen(lfd, 128) != 0)
        die("listen");

    pthread_t t;
    if (pthread_create(&t, NULL, accept_loop, (void *)(intptr_t)lfd) != 0 ||
        pthread_create(&t, NULL, watch_stdin, NULL) != 0) {
        fprintf(stderr, "uds_pingpong: cannot start threads\n");
        unlink(path);
        return 1;
    }

    fputs("ready\n", stdout);
    fflush(stdout);

    int sig;
    while (sigwait(&stop, &sig) != 0) {
    }
    unlink(path);
    /* Exit without joining the connection threads. */
    _exit(0);
}

/* ------------------------------------------------------------------ client */

struct client_config {
    const char *path;
    size_t payload;
    double measure_from; /* monotonic seconds */
    double measure_to;
};

struct caller {
    pthread_t thread;
    const struct client_config *cfg;
    uint64_t *lat_ns; /* recorded latencies */
    size_t count, cap;
    int failed;
};

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *caller_main(void *arg) {
    struct caller *c = arg;
    const struct client_config *cfg = c->cfg;
    struct sockaddr_un addr;
    unsigned char *msg = NULL, *reply = NULL;
    int fd = -1;
    c->failed = 1;

    if (unix_address(cfg->path, &addr) != 0)
        return NULL;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        fprintf(stderr, "uds_pingpong: connect %s: %s\n", cfg->path, strerror(errno));
        goto out;
    }

    msg = malloc(4 + cfg->payload);
    reply = malloc(4 + cfg->payload);
    if (msg == NULL || reply == NULL) {
        fprintf(stderr, "uds_pingpong: out of memory\n");
        goto out;
    }
    put_be32(msg, (uint32_t)cfg->payload);
    for (size_t i = 0; i < cfg->payload; i++)
        msg[4 + i] = (unsigned char)(i * 131u + 7u);

    uint64_t from = (uint64_t)(cfg->measure_from * 1e9), to = (uint64_t)(cfg->measure_to * 1e9);
    for (;;) {
        uint64_t t0 = now_ns();
        if (t0 >= to)
            break;
        if (write_all(fd, msg, 4 + cfg->payload) != 0) {
            fprintf(stderr, "uds_pingpong: write: %s\n", strerror(errno));
            goto out;
        }
        if (read_all(fd, reply, 4) != 0 || get_be32(reply) != cfg->payload ||
            read_all(fd, reply + 4, cfg->payload) != 0) {
            fprintf(stderr, "uds_pingpong: bad or missing reply\n");
            goto out;
        }
        uint64_t t1 = now_ns();
        /* Only calls that started and finished inside the window count. */
        if (t0 >= from && t1 <= to) {
            if (c->count == c->cap) {
                size_t ncap = c->cap ? c->cap * 2 : 65536;
                uint64_t *n = realloc(c->lat_ns, ncap * sizeof *n);
                if (n == NULL) {
                    fprintf(stderr, "uds_pingpong: out of memory\n");
                    goto out;
                }
                c->lat_ns = n;
                c->cap = ncap;
            }
            c->lat_ns[c->count++] = t1 - t0;
        }
    }
    c->failed = 0;
out:
    if (fd >= 0)
        close(fd);
    free(msg);
    free(reply);
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values, like the Go client. */
static uint64_t percentile(const uint64_t *sorted, size_t n, double p) {
    double want = p * (double)n;
    size_t rank = (size_t)want; /* ceil(want) without libm */
    if ((double)rank < want)
        rank++;
    if (rank > 0)
        rank--;
    if (rank >= n)
        rank = n - 1;
    return sorted[rank];
}

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int run_client(const char *path, int argc, char **argv) {
    double payload = 64, concurrency = 1, duration = 5, warmup = 1;
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i];
        while (*flag == '-')
            flag++; /* accept -flag and --flag */
        double *target = strcmp(flag, "payload") == 0       ? &payload
                         : strcmp(flag, "concurrency") == 0 ? &concurrency
                         : strcmp(flag, "duration") == 0    ? &duration
                         : strcmp(flag, "warmup") == 0      ? &warmup
                                                            : NULL;
        if (target == NULL || argv[i][0] != '-' || i + 1 >= argc ||
            parse_double(argv[i + 1], target) != 0)
            usage();
        i++;
    }
    if (payload < 0 || payload > MAX_MESSAGE || payload != (double)(size_t)payload || concurrency < 1 ||
        concurrency > 4096 || concurrency != (double)(size_t)concurrency || !(duration > 0) || warmup < 0)
        usage();

    signal(SIGPIPE, SIG_IGN);
    struct client_config cfg = {.path = path, .payload = (size_t)payload};
    cfg.measure_from = now_seconds() + warmup;
    cfg.measure_to = cfg.measure_from + duration;

    size_t n = (size_t)concurrency;
    struct caller *callers = calloc(n, sizeof *callers);
    if (callers == NULL)
        die("calloc");
    for (size_t i = 0; i < n; i++) {
        callers[i].cfg = &cfg;
        if (pthread_create(&callers[i].thread, NULL, caller_main, &callers[i]) != 0) {
            fprintf(stderr, "uds_pingpong: cannot start caller threads\n");
            return 1;
        }
    }
    size_t total = 0;
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        pthread_join(callers[i].thread, NULL);
        failed |= callers[i].failed;
        total += callers[i].count;
    }
    if (failed)
        return 1;
    if (total == 0) {
        fprintf(stderr, "uds_pingpong: no call completed inside the measured window\n");
        return 1;
    }
    uint64_t *all = malloc(total * sizeof *all);
    if (all == NULL)
        die("malloc");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(all + k, callers[i].lat_ns, callers[i].count * sizeof *all);
        k += callers[i].count;
        free(callers[i].lat_ns);
    }
    qsort(all, total, sizeof *all, cmp_u64);
    printf("{\"impl\":\"c-floor\",\"payload\":%zu,\"concurrency\":%zu,\"calls\":%zu,"
           "\"seconds\":%.3f,\"calls_per_sec\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
           cfg.payload, n, total, duration, (double)total / duration,
           (double)percentile(all, total, 0.50) / 1e3, (double)percentile(all, total, 0.99) / 1e3);
    fflush(stdout);
    free(all);
    free(callers);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "server") == 0)
        return run_server(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "client") == 0)
        return run_client(argv[2], argc - 3, argv + 3);
    usage();
    return 2;
}
