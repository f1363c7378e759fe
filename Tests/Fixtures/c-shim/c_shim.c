/*
 * c-shim: a provider shim written in C, to show that the instancepoller wire
 * protocol (proto/PROTOCOL.md) needs nothing from Swift or Go. It speaks
 * ttrpc 1.x framing by hand, encodes messages with protobuf-c (code generated
 * from the repository's .proto files by build.sh), and serves
 * instancepoller.provider.v1.Provider over a static fake cloud:
 *
 *   c-1  running       "running"                 two interfaces
 *   c-2  stopped       "stopped" ("stopped by operator")  one interface
 *   c-3  provisioning  "building"                no interfaces
 *
 * A credential is good iff its attributes hold token=letmein.
 *
 * Process contract (PROTOCOL.md section 5): the socket path comes from
 * INSTANCEPOLLER_SOCKET; once listening, one line on stdout
 *   instancepoller-shim|1|unix|<path>|ttrpc
 * and nothing more there; logs on stderr; exit 0 on EOF on stdin, SIGTERM or a
 * Shutdown call, removing the socket.
 *
 * One thread, one ppoll() loop over the listener, stdin and the connections.
 * Requests are answered one at a time in arrival order; connections are
 * independent of each other.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "google/rpc/status.pb-c.h"
#include "instancepoller/provider/v1/provider.pb-c.h"
#include "ttrpc/ttrpc.pb-c.h"

#define SERVICE_NAME "instancepoller.provider.v1.Provider"
#define HEADER_SIZE 10
#define MAX_DATA (4u << 20)          /* ttrpc's frame limit: 4 MiB of data */
#define FRAME_REQUEST 1
#define FRAME_RESPONSE 2
#define READ_CHUNK (64u << 10)
#define OUTPUT_HIGH_WATER (1u << 20) /* stop reading a peer that does not read */

/* google.rpc.Code values used here. */
enum {
    CODE_OK = 0,
    CODE_INVALID_ARGUMENT = 3,
    CODE_RESOURCE_EXHAUSTED = 8,
    CODE_FAILED_PRECONDITION = 9,
    CODE_UNIMPLEMENTED = 12,
    CODE_INTERNAL = 13,
    CODE_UNAUTHENTICATED = 16,
};

/* Short names for the generated types and enum values. */
typedef Instancepoller__Provider__V1__Address Address;
typedef Instancepoller__Provider__V1__NetworkInterface NetworkInterface;
typedef Instancepoller__Provider__V1__Credential Credential;
#define P(name) INSTANCEPOLLER__PROVIDER__V1__##name
#define IPV4 P(ADDRESS_TYPE__ADDRESS_TYPE_IPV4)
#define IPV6 P(ADDRESS_TYPE__ADDRESS_TYPE_IPV6)
#define PUBLIC P(ADDRESS_SCOPE__ADDRESS_SCOPE_PUBLIC)
#define CLOUD_LOCAL P(ADDRESS_SCOPE__ADDRESS_SCOPE_CLOUD_LOCAL)

static void logf_(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fputs("c-shim: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
}

/* ------------------------------------------------------------------ the fake cloud */

typedef struct {
    const char *value;
    Instancepoller__Provider__V1__AddressType type;
    Instancepoller__Provider__V1__AddressScope scope;
    const char *cidr;
} AddressSpec;

typedef struct {
    int32_t device_index;
    const char *mac, *provider_id, *subnet, *network, *name, *cidr;
    int primary;
    AddressSpec addresses[2];
    size_t n_addresses;
    AddressSpec shadows[2];
    size_t n_shadows;
} InterfaceSpec;

typedef struct {
    const char *id;
    Instancepoller__Provider__V1__InstanceState state;
    const char *raw_status, *message;
    InterfaceSpec interfaces[2];
    size_t n_interfaces;
} InstanceSpec;

static const InstanceSpec CLOUD[] = {
    {"c-1", P(INSTANCE_STATE__INSTANCE_STATE_RUNNING), "running", "",
     {{0, "02:c0:00:00:00:01", "eni-c1a", "subnet-c", "vpc-c", "eth0", "10.9.0.0/24", 1,
       {{"10.9.0.11", IPV4, CLOUD_LOCAL, "10.9.0.0/24"}}, 1,
       {{"198.51.100.11", IPV4, PUBLIC, ""}}, 1},
      {1, "02:c0:00:00:00:02", "eni-c1b", "subnet-c6", "vpc-c", "eth1", "fd00:9::/64", 0,
       {{"fd00:9::11", IPV6, CLOUD_LOCAL, "fd00:9::/64"}}, 1,
       {{0}}, 0}},
     2},
    {"c-2", P(INSTANCE_STATE__INSTANCE_STATE_STOPPED), "stopped", "stopped by operator",
     {{0, "02:c0:00:00:00:03", "eni-c2a", "subnet-c", "vpc-c", "eth0", "10.9.0.0/24", 1,
       {{"10.9.0.12", IPV4, CLOUD_LOCAL, "10.9.0.0/24"}}, 1,
       {{0}}, 0}},
     1},
    {"c-3", P(INSTANCE_STATE__INSTANCE_STATE_PROVISIONING), "building", "", {{0}}, 0},
};

static const InstanceSpec *find_instance(const char *id) {
    for (size_t i = 0; i < sizeof CLOUD / sizeof CLOUD[0]; i++) {
        if (strcmp(CLOUD[i].id, id) == 0) return &CLOUD[i];
    }
    return NULL;
}

/* The credential is good iff attributes say token=letmein (the last entry
 * for a key wins, as for any protobuf map). Attributes are never logged. */
static int credential_ok(const Credential *credential) {
    if (credential == NULL) return 0;
    const char *token = NULL;
    for (size_t i = 0; i < credential->n_attributes; i++) {
        if (strcmp(credential->attributes[i]->key, "token") == 0) token = credential->attributes[i]->value;
    }
    return token != NULL && strcmp(token, "letmein") == 0;
}

/* --------------------------------------------------- per-request scratch memory */

/* Response messages are built from zeroed blocks that all go at once when
 * the request has been answered. Allocation failure is fatal: a fixture. */
static void **scratch_blocks;
static size_t scratch_count, scratch_capacity;

static void *scratch(size_t size) {
    if (scratch_count == scratch_capacity) {
        scratch_capacity = scratch_capacity ? scratch_capacity * 2 : 64;
        scratch_blocks = realloc(scratch_blocks, scratch_capacity * sizeof *scratch_blocks);
        if (scratch_blocks == NULL) { logf_("out of memory"); exit(1); }
    }
    void *block = calloc(1, size ? size : 1);
    if (block == NULL) { logf_("out of memory"); exit(1); }
    scratch_blocks[scratch_count++] = block;
    return block;
}

static void scratch_release(void) {
    for (size_t i = 0; i < scratch_count; i++) free(scratch_blocks[i]);
    scratch_count = 0;
}

/* protobuf-c wants char * even for strings it only reads. */
#define S(literal) ((char *)(uintptr_t)(literal))

/* ------------------------------------------------------------------ the methods */

/* What a handler produces: a response message, or a status code and message. */
typedef struct {
    ProtobufCMessage *response;
    int code;
    const char *message;
} Reply;

static int shutdown_requested;

static void fail(Reply *reply, int code, const char *message) {
    reply->code = code;
    reply->message = message;
}

static void handshake(const ProtobufCMessage *message, Reply *reply) {
    const Instancepoller__Provider__V1__HandshakeRequest *request = (const void *)message;
    int offered = 0;
    for (size_t i = 0; i < request->n_protocol_versions; i++) {
        if (request->protocol_versions[i] == 1) offered = 1;
    }
    if (!offered) {
        fail(reply, CODE_FAILED_PRECONDITION, "c-shim speaks protocol version 1 only");
        return;
    }
    static char *cloud_types[] = {S("c-static")};
    Instancepoller__Provider__V1__Capabilities *capabilities = scratch(sizeof *capabilities);
    instancepoller__provider__v1__capabilities__init(capabilities);
    capabilities->max_batch_size = 100;
    Instancepoller__Provider__V1__HandshakeResponse *response = scratch(sizeof *response);
    instancepoller__provider__v1__handshake_response__init(response);
    response->protocol_version = 1;
    response->shim_name = S("c-shim");
    response->shim_version = S("1.0.0");
    response->n_cloud_types = 1;
    response->cloud_types = cloud_types;
    response->capabilities = capabilities;
    reply->response = &response->base;
}

static void health(const ProtobufCMessage *message, Reply *reply) {
    (void)message;
    Instancepoller__Provider__V1__HealthResponse *response = scratch(sizeof *response);
    instancepoller__provider__v1__health_response__init(response);
    response->status = P(HEALTH_RESPONSE__SERVING_STATUS__SERVING_STATUS_SERVING);
    reply->response = &response->base;
}

static void validate_credential(const ProtobufCMessage *message, Reply *reply) {
    const Instancepoller__Provider__V1__ValidateCredentialRequest *request = (const void *)message;
    Instancepoller__Provider__V1__ValidateCredentialResponse *response = scratch(sizeof *response);
    instancepoller__provider__v1__validate_credential_response__init(response);
    response->valid = credential_ok(request->credential);
    if (!response->valid) response->reason = S("token rejected");
    reply->response = &response->base;
}

static void instances(const ProtobufCMessage *message, Reply *reply) {
    const Instancepoller__Provider__V1__InstancesRequest *request = (const void *)message;
    if (!credential_ok(request->credential)) {
        fail(reply, CODE_UNAUTHENTICATED, "token rejected");
        return;
    }
    Instancepoller__Provider__V1__InstancesResponse *response = scratch(sizeof *response);
    instancepoller__provider__v1__instances_response__init(response);
    response->n_results = request->n_instance_ids;
    response->results = scratch(request->n_instance_ids * sizeof *response->results);
    for (size_t i = 0; i < request->n_instance_ids; i++) {
        /* The id strings belong to the request, which outlives the packing. */
        Instancepoller__Provider__V1__InstanceResult *result = scratch(sizeof *result);
        instancepoller__provider__v1__instance_result__init(result);
        result->instance_id = request->instance_ids[i];
        const InstanceSpec *spec = find_instance(request->instance_ids[i]);
        if (spec != NULL) {
            Instancepoller__Provider__V1__InstanceStatus *status = scratch(sizeof *status);
            instancepoller__provider__v1__instance_status__init(status);
            status->state = spec->state;
            status->raw_status = S(spec->raw_status);
            status->message = S(spec->message);
            result->found = 1;
            result->status = status;
        }
        response->results[i] = result;
    }
    reply->response = &response->base;
}

static Address **build_addresses(const AddressSpec *specs, size_t count) {
    Address **addresses = scratch(count * sizeof *addresses);
    for (size_t i = 0; i < count; i++) {
        Address *address = scratch(sizeof *address);
        instancepoller__provider__v1__address__init(address);
        address->value = S(specs[i].value);
        address->type = specs[i].type;
        address->scope = specs[i].scope;
        address->cidr = S(specs[i].cidr);
        addresses[i] = address;
    }
    return addresses;
}

static NetworkInterface *build_interface(const InterfaceSpec *spec) {
    NetworkInterface *interface = scratch(sizeof *interface);
    instancepoller__provider__v1__network_interface__init(interface);
    interface->device_index = spec->device_index;
    interface->mac_address = S(spec->mac);
    interface->provider_id = S(spec->provider_id);
    interface->provider_subnet_id = S(spec->subnet);
    interface->provider_network_id = S(spec->network);
    interface->interface_name = S(spec->name);
    interface->cidr = S(spec->cidr);
    interface->primary = spec->primary;
    interface->n_addresses = spec->n_addresses;
    interface->addresses = build_addresses(spec->addresses, spec->n_addresses);
    interface->n_shadow_addresses = spec->n_shadows;
    interface->shadow_addresses = build_addresses(spec->shadows, spec->n_shadows);
    return interface;
}

static void network_interfaces(const ProtobufCMessage *message, Reply *reply) {
    const Instancepoller__Provider__V1__NetworkInterfacesRequest *request = (const void *)message;
    if (!credential_ok(request->credential)) {
        fail(reply, CODE_UNAUTHENTICATED, "token rejected");
        return;
    }
    Instancepoller__Provider__V1__NetworkInterfacesResponse *response = scratch(sizeof *response);
    instancepoller__provider__v1__network_interfaces_response__init(response);
    response->n_results = request->n_instance_ids;
    response->results = scratch(request->n_instance_ids * sizeof *response->results);
    for (size_t i = 0; i < request->n_instance_ids; i++) {
        Instancepoller__Provider__V1__InstanceInterfaces *result = scratch(sizeof *result);
        instancepoller__provider__v1__instance_interfaces__init(result);
        result->instance_id = request->instance_ids[i];
        const InstanceSpec *spec = find_instance(request->instance_ids[i]);
        if (spec != NULL) {
            result->found = 1;
            result->n_interfaces = spec->n_interfaces;
            result->interfaces = scratch(spec->n_interfaces * sizeof *result->interfaces);
            for (size_t j = 0; j < spec->n_interfaces; j++) {
                result->interfaces[j] = build_interface(&spec->interfaces[j]);
            }
        }
        response->results[i] = result;
    }
    reply->response = &response->base;
}

static void shutdown_call(const ProtobufCMessage *message, Reply *reply) {
    (void)message;
    Instancepoller__Provider__V1__ShutdownResponse *response = scratch(sizeof *response);
    instancepoller__provider__v1__shutdown_response__init(response);
    reply->response = &response->base;
    shutdown_requested = 1; /* answered first, then the main loop exits */
}

static const struct {
    const char *name;
    const ProtobufCMessageDescriptor *request;
    void (*handle)(const ProtobufCMessage *request, Reply *reply);
} METHODS[] = {
    {"Handshake", &instancepoller__provider__v1__handshake_request__descriptor, handshake},
    {"Health", &instancepoller__provider__v1__health_request__descriptor, health},
    {"ValidateCredential", &instancepoller__provider__v1__validate_credential_request__descriptor, validate_credential},
    {"Instances", &instancepoller__provider__v1__instances_request__descriptor, instances},
    {"NetworkInterfaces", &instancepoller__provider__v1__network_interfaces_request__descriptor, network_interfaces},
    {"Shutdown", &instancepoller__provider__v1__shutdown_request__descriptor, shutdown_call},
};

/* ------------------------------------------------------------------ connections */

typedef struct {
    int fd;
    uint8_t *in;           /* received bytes not yet consumed */
    size_t in_len, in_cap;
    size_t discard;        /* data bytes of an oversize frame still to skip */
    uint8_t *out;          /* encoded frames not yet written */
    size_t out_len, out_cap;
    int read_closed;       /* the peer sent EOF: close once `out` is written */
} Conn;

static Conn *conns;
static size_t n_conns;

static void reserve(uint8_t **buffer, size_t *capacity, size_t needed) {
    if (needed <= *capacity) return;
    size_t grown = *capacity ? *capacity : READ_CHUNK;
    while (grown < needed) grown *= 2;
    *buffer = realloc(*buffer, grown);
    if (*buffer == NULL) { logf_("out of memory"); exit(1); }
    *capacity = grown;
}

static void put_u32(uint8_t *p, uint32_t value) {
    p[0] = (uint8_t)(value >> 24); p[1] = (uint8_t)(value >> 16);
    p[2] = (uint8_t)(value >> 8); p[3] = (uint8_t)value;
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Queues one response frame: a ttrpc.Response carrying either `payload` or
 * the status (code, message). */
static void send_response(Conn *conn, uint32_t stream, int code, const char *message,
                          const uint8_t *payload, size_t payload_len) {
    Ttrpc__Response response = TTRPC__RESPONSE__INIT;
    Google__Rpc__Status status = GOOGLE__RPC__STATUS__INIT;
    if (code != CODE_OK) {
        status.code = code;
        status.message = S(message);
        response.status = &status;
    } else {
        response.payload.data = (uint8_t *)(uintptr_t)payload;
        response.payload.len = payload_len;
    }
    size_t length = ttrpc__response__get_packed_size(&response);
    if (length > MAX_DATA) { /* never send a frame the peer must refuse */
        send_response(conn, stream, CODE_RESOURCE_EXHAUSTED, "response exceeds the 4 MiB frame limit", NULL, 0);
        return;
    }
    reserve(&conn->out, &conn->out_cap, conn->out_len + HEADER_SIZE + length);
    uint8_t *frame = conn->out + conn->out_len;
    put_u32(frame, (uint32_t)length);
    put_u32(frame + 4, stream);
    frame[8] = FRAME_RESPONSE;
    frame[9] = 0;
    ttrpc__response__pack(&response, frame + HEADER_SIZE);
    conn->out_len += HEADER_SIZE + length;
}

/* Decodes and answers one request frame. */
static void handle_request(Conn *conn, uint32_t stream, const uint8_t *data, size_t length) {
    Ttrpc__Request *request = ttrpc__request__unpack(NULL, length, data);
    if (request == NULL) {
        send_response(conn, stream, CODE_INVALID_ARGUMENT, "malformed request: cannot decode ttrpc.Request", NULL, 0);
        return;
    }
    if (stream % 2 == 0) {
        send_response(conn, stream, CODE_INVALID_ARGUMENT, "even stream id; client stream ids must be odd", NULL, 0);
        ttrpc__request__free_unpacked(request, NULL);
        return;
    }
    char text[256];
    size_t index = sizeof METHODS / sizeof METHODS[0];
    if (strcmp(request->service, SERVICE_NAME) == 0) {
        for (index = 0; index < sizeof METHODS / sizeof METHODS[0]; index++) {
            if (strcmp(METHODS[index].name, request->method) == 0) break;
        }
    }
    if (index == sizeof METHODS / sizeof METHODS[0]) {
        snprintf(text, sizeof text, "unknown method %.100s/%.100s", request->service, request->method);
        send_response(conn, stream, CODE_UNIMPLEMENTED, text, NULL, 0);
        ttrpc__request__free_unpacked(request, NULL);
        return;
    }
    ProtobufCMessage *call = protobuf_c_message_unpack(METHODS[index].request, NULL,
                                                       request->payload.len, request->payload.data);
    if (call == NULL) {
        snprintf(text, sizeof text, "malformed %s request", METHODS[index].name);
        send_response(conn, stream, CODE_INVALID_ARGUMENT, text, NULL, 0);
        ttrpc__request__free_unpacked(request, NULL);
        return;
    }
    Reply reply = {NULL, CODE_OK, NULL};
    METHODS[index].handle(call, &reply);
    if (reply.response != NULL) {
        size_t size = protobuf_c_message_get_packed_size(reply.response);
        uint8_t *packed = malloc(size ? size : 1);
        if (packed == NULL) { logf_("out of memory"); exit(1); }
        protobuf_c_message_pack(reply.response, packed);
        send_response(conn, stream, CODE_OK, NULL, packed, size);
        free(packed);
    } else {
        send_response(conn, stream, reply.code, reply.message, NULL, 0);
    }
    scratch_release();
    protobuf_c_message_free_unpacked(call, NULL);
    ttrpc__request__free_unpacked(request, NULL);
}

/* Consumes every whole frame in conn->in (several may arrive in one read,
 * and one may span many reads). */
static void process_input(Conn *conn) {
    size_t at = 0;
    while (!shutdown_requested) {
        if (conn->discard > 0) {
            size_t skip = conn->in_len - at < conn->discard ? conn->in_len - at : conn->discard;
            at += skip;
            conn->discard -= skip;
            if (conn->discard > 0) break;
            continue;
        }
        if (conn->in_len - at < HEADER_SIZE) break;
        const uint8_t *header = conn->in + at;
        uint32_t length = get_u32(header), stream = get_u32(header + 4);
        uint8_t type = header[8];
        if (length > MAX_DATA) {
            /* Skip the data as it arrives, never buffering it; answer the stream. */
            at += HEADER_SIZE;
            conn->discard = length;
            if (type == FRAME_REQUEST) {
                send_response(conn, stream, CODE_RESOURCE_EXHAUSTED,
                              "request exceeds the ttrpc frame limit of 4194304 bytes", NULL, 0);
            }
            continue;
        }
        if (conn->in_len - at < HEADER_SIZE + (size_t)length) {
            reserve(&conn->in, &conn->in_cap, HEADER_SIZE + (size_t)length + READ_CHUNK);
            break;
        }
        if (type == FRAME_REQUEST) handle_request(conn, stream, conn->in + at + HEADER_SIZE, length);
        /* Other frame types (2 response, 3 data, unknown) are ignored. */
        at += HEADER_SIZE + length;
    }
    memmove(conn->in, conn->in + at, conn->in_len - at);
    conn->in_len -= at;
}

/* Writes what it can without blocking; returns -1 if the connection broke. */
static int flush_output(Conn *conn) {
    size_t written = 0;
    while (written < conn->out_len) {
        ssize_t n = send(conn->fd, conn->out + written, conn->out_len - written, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return -1;
        }
        written += (size_t)n;
    }
    memmove(conn->out, conn->out + written, conn->out_len - written);
    conn->out_len -= written;
    return 0;
}

/* Returns -1 when the connection should be closed. */
static int read_input(Conn *conn) {
    reserve(&conn->in, &conn->in_cap, conn->in_len + READ_CHUNK);
    ssize_t n = recv(conn->fd, conn->in + conn->in_len, conn->in_cap - conn->in_len, 0);
    if (n < 0) return (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    if (n == 0) {
        conn->read_closed = 1;
        return 0;
    }
    conn->in_len += (size_t)n;
    process_input(conn);
    return 0;
}

static void close_conn(size_t index) {
    close(conns[index].fd);
    free(conns[index].in);
    free(conns[index].out);
    conns[index] = conns[--n_conns];
}

/* ------------------------------------------------------------------ the process */

static const char *socket_path;
static int listen_fd = -1;
static dev_t socket_dev;
static ino_t socket_ino;
static volatile sig_atomic_t terminated;

static void on_sigterm(int signal_number) {
    (void)signal_number;
    terminated = 1;
}

/* Removes the socket file, but only if it is still the one we bound (a new
 * shim may already have replaced it), and exits. */
static void finish(int status) {
    struct stat st;
    if (listen_fd >= 0) close(listen_fd);
    if (socket_path != NULL && lstat(socket_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
        st.st_dev == socket_dev && st.st_ino == socket_ino) {
        unlink(socket_path);
    }
    exit(status);
}

static void listen_on(const char *path) {
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path) {
        logf_("socket path %s is too long (at most %zu bytes)", path, sizeof address.sun_path - 1);
        exit(1);
    }
    memcpy(address.sun_path, path, strlen(path) + 1);

    /* A stale socket from an earlier run goes; anything else is not ours. */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            logf_("refusing to replace %s: it exists and is not a socket", path);
            exit(1);
        }
        if (unlink(path) != 0) {
            logf_("cannot remove stale socket %s: %s", path, strerror(errno));
            exit(1);
        }
    } else if (errno != ENOENT) {
        logf_("cannot check %s: %s", path, strerror(errno));
        exit(1);
    }

    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0) { logf_("socket: %s", strerror(errno)); exit(1); }
    mode_t old_umask = umask(0177); /* never world-connectable, not even briefly */
    int bound = bind(listen_fd, (struct sockaddr *)&address, sizeof address);
    umask(old_umask);
    if (bound != 0) { logf_("cannot bind %s: %s", path, strerror(errno)); exit(1); }
    if (lstat(path, &st) == 0) {
        socket_dev = st.st_dev;
        socket_ino = st.st_ino;
    }
    socket_path = path; /* from here on, finish() removes it */
    if (chmod(path, 0600) != 0) { logf_("cannot chmod %s: %s", path, strerror(errno)); finish(1); }
    if (listen(listen_fd, 64) != 0) { logf_("cannot listen on %s: %s", path, strerror(errno)); finish(1); }
}

/* Accepts one peer if it runs as our uid or as root (SO_PEERCRED). */
static void accept_peer(void) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
            logf_("accept: %s", strerror(errno));
        }
        return;
    }
    struct ucred peer;
    socklen_t size = sizeof peer;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) {
        logf_("refused a peer: SO_PEERCRED failed: %s", strerror(errno));
        close(fd);
        return;
    }
    if (peer.uid != geteuid() && peer.uid != 0) {
        logf_("refused peer uid %u pid %d: only uid %u (this shim's) or root may connect",
              (unsigned)peer.uid, (int)peer.pid, (unsigned)geteuid());
        close(fd);
        return;
    }
    Conn *grown = realloc(conns, (n_conns + 1) * sizeof *conns);
    if (grown == NULL) { logf_("out of memory"); exit(1); }
    conns = grown;
    conns[n_conns++] = (Conn){.fd = fd};
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(void) {
    const char *path = getenv("INSTANCEPOLLER_SOCKET");
    if (path == NULL || path[0] == '\0') {
        fputs("c-shim: INSTANCEPOLLER_SOCKET is not set; the controller names the socket path there\n", stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    /* SIGTERM stays blocked except inside ppoll(), so it cannot slip in
     * between checking `terminated` and going to sleep. */
    sigset_t blocked, during_poll;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigprocmask(SIG_BLOCK, &blocked, &during_poll);
    sigdelset(&during_poll, SIGTERM);
    sigdelset(&during_poll, SIGINT);
    struct sigaction action = {.sa_handler = on_sigterm};
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);

    listen_on(path);

    /* Second guard besides stdin: die with the parent. If it is already
     * gone (we were reparented to init), there is nobody to serve. Linux
     * sends this signal when the *thread* that forked us exits, not the
     * whole parent process, so parents must spawn shims from a thread that
     * lives as long as they need the shim. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) {
        logf_("parent already gone; exiting");
        finish(0);
    }

    if (printf("instancepoller-shim|1|unix|%s|ttrpc\n", path) < 0 || fflush(stdout) != 0) {
        logf_("cannot write the handshake line on stdout");
        finish(1);
    }
    logf_("listening on %s", path);

    int stdin_open = 1;
    int64_t shutdown_deadline = 0;
    struct pollfd *fds = NULL;
    for (;;) {
        if (terminated) { logf_("SIGTERM: exiting"); finish(0); }

        /* After a Shutdown call: accept nothing new, finish writing answers
         * and let the clients hang up first (bounded by 1 s), then go.
         * Closing right after the answer races containerd's Go ttrpc 1.1.1
         * client, which can report "ttrpc: closed" for an answered call. */
        if (shutdown_requested) {
            if (shutdown_deadline == 0) {
                logf_("Shutdown called: exiting");
                shutdown_deadline = now_ms() + 1000;
            }
            if (n_conns == 0 || now_ms() >= shutdown_deadline) finish(0);
        }

        /* Slots: 0 listener, 1 stdin, then one per connection. */
        struct pollfd *grown = realloc(fds, (n_conns + 2) * sizeof *fds);
        if (grown == NULL) { logf_("out of memory"); exit(1); }
        fds = grown;
        fds[0] = (struct pollfd){.fd = shutdown_requested ? -1 : listen_fd, .events = POLLIN};
        fds[1] = (struct pollfd){.fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN};
        for (size_t i = 0; i < n_conns; i++) {
            short events = 0;
            if (!conns[i].read_closed && conns[i].out_len < OUTPUT_HIGH_WATER) events |= POLLIN;
            if (conns[i].out_len > 0) events |= POLLOUT;
            fds[i + 2] = (struct pollfd){.fd = conns[i].fd, .events = events};
        }
        struct timespec tick = {0, 100 * 1000 * 1000};
        int ready = ppoll(fds, n_conns + 2, shutdown_requested ? &tick : NULL, &during_poll);
        if (ready < 0) {
            if (errno == EINTR) continue;
            logf_("poll: %s", strerror(errno));
            finish(1);
        }

        /* stdin: EOF (or an error) means the controller is gone. */
        if (fds[1].revents & POLLNVAL) {
            logf_("stdin is not open; relying on the parent-death signal");
            stdin_open = 0;
        } else if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            char sink[512];
            ssize_t n = read(STDIN_FILENO, sink, sizeof sink);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                logf_("stdin closed: exiting");
                finish(0);
            }
        }

        /* Connections, walked backwards so close_conn's swap is safe. The
         * pollfd slots still match: new peers are accepted after this. */
        for (size_t i = n_conns; i-- > 0;) {
            short revents = fds[i + 2].revents;
            Conn *conn = &conns[i];
            int broken = 0;
            if (revents & (POLLIN | POLLHUP | POLLERR)) broken = read_input(conn) != 0;
            if (!broken && conn->out_len > 0) broken = flush_output(conn) != 0;
            if (broken || (conn->read_closed && conn->out_len == 0)) close_conn(i);
        }

        if (fds[0].revents & POLLIN) accept_peer();
    }
}
