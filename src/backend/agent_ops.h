/* The host-side agent API: the operations the host asks of the guest agent
 * (docs/agent-protocol.md), with plain C values in and typed events out.
 *
 * This header is all that sandbox/ and workspace/ see of the agent: frames,
 * fields and protocol constants stay in backend/ (agent_ops.c encodes the
 * requests and decodes the replies; agent_client.c carries the frames). It
 * includes nothing of src/proto.
 *
 * Everything decoded comes from the guest and is untrusted: strings are
 * copies without NULs, an ERROR's reason is a stable code (at most
 * AGENT_MAX_REASON bytes of [a-z0-9_], else agent_protocol_error) and its
 * message at most AGENT_MAX_MESSAGE bytes; a field of the wrong size counts
 * as absent; the first field of a tag decides. Events are valid for the
 * duration of the callback only. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct agent_conn agent_conn;

/* ---- the connection (agent_client.c)
 *
 * One agent_conn per VM: a connection to the guest agent's byte stream,
 * multiplexing many operations (channels). A frame over the cap or a
 * protocol violation closes it. */

/* Connection state: status 0 = handshake done (hello has the guest's
 * HELLO_REPLY payload; agent_conn_hello() has it decoded), < 0 = failed or
 * closed (-errno), message says why. */
typedef void (*agent_state_cb)(agent_conn *c, void *ud, int status,
                               const char *message, const uint8_t *hello,
                               size_t hello_len);

agent_conn *agent_conn_new(uv_loop_t *loop, agent_state_cb cb, void *ud);
/* Connects to path and sends HELLO. The state callback reports the outcome. */
int agent_conn_connect(agent_conn *c, const char *path);
/* Takes a connected stream socket (backend_ops.connect_agent) and sends
 * HELLO; fd is owned by the conn from here on (closed on failure too). */
int agent_conn_open(agent_conn *c, int fd);
/* Closes the connection; pending operations get their ERROR (reason
 * agent_unavailable); the memory is freed once libuv is done with the
 * handle. Safe with NULL. No callbacks run after this returns... except
 * those errors, which run synchronously inside this call. */
void agent_conn_close(agent_conn *c);
bool agent_conn_ready(const agent_conn *c);

/* HELLO_REPLY, decoded. */
typedef struct agent_hello {
  uint32_t version;      /* protocol version */
  uint32_t max_payload;  /* 0 when not sent */
  uint64_t window;       /* per-channel STDIN/DATA window; 0: no flow control */
  uint64_t uptime_ns;
  char agent_version[64]; /* "" when not sent; truncated */
  char kernel[128];       /* uname release, "" when not sent; truncated */
} agent_hello;
/* The guest's HELLO_REPLY once the handshake is done, else NULL. */
const agent_hello *agent_conn_hello(const agent_conn *c);

/* Queued input of a channel (STDIN/DATA beyond the guest's credit) is
 * bounded: a write that would pass it fails with -E2BIG and changes
 * nothing. */
#define AGENT_PENDING_MAX_STDIN (64u << 20)
/* at least the largest DATA stream sent in one piece (a workspace copy-in
 * tar, CR_WS_MAX_COPY_IN, 256 MiB) */
#define AGENT_PENDING_MAX_DATA (320u << 20)
/* Bytes queued for writing: the socket's write queue plus every channel's
 * data waiting for credit. */
size_t agent_write_queue(const agent_conn *c);
/* Bytes of the channel's STDIN/DATA waiting for credit from the guest; with
 * an agent without flow control, the whole connection's write queue. */
size_t agent_channel_queued(const agent_conn *c, uint32_t channel);
/* Stops delivering events for the operation (its callback will not run
 * again); the guest is not told. */
void agent_channel_forget(agent_conn *c, uint32_t channel);

/* ---- typed events */

#define AGENT_MAX_REASON 64
#define AGENT_MAX_MESSAGE 4096

typedef enum agent_event_type {
  AGENT_EV_STARTED = 1, /* exec: the process runs (pid) */
  AGENT_EV_STDOUT,      /* exec: output (data, len) */
  AGENT_EV_STDERR,
  AGENT_EV_EXIT,        /* exec: its end (exit) */
  AGENT_EV_DATA,        /* file read, tar out: bytes (data, len) */
  AGENT_EV_ENTRY,       /* list: one entry (stat) */
  AGENT_EV_STAT,        /* stat: its end (stat) */
  AGENT_EV_OK,          /* the end of every other operation (size) */
  AGENT_EV_ERROR,       /* the end of any operation (error) */
} agent_event_type;

/* AGENT_ST_* bits: the fields of an agent_stat the guest sent */
enum {
  AGENT_ST_FTYPE = 1u << 0,
  AGENT_ST_MODE = 1u << 1,
  AGENT_ST_SIZE = 1u << 2,
  AGENT_ST_MTIME = 1u << 3,
  AGENT_ST_UID = 1u << 4,
  AGENT_ST_GID = 1u << 5,
};
/* ftype values */
enum { AGENT_FT_OTHER = 0, AGENT_FT_FILE = 1, AGENT_FT_DIR = 2, AGENT_FT_SYMLINK = 3 };

typedef struct agent_stat {
  unsigned have; /* AGENT_ST_* */
  uint32_t ftype, mode, uid, gid;
  uint64_t size, mtime_ns;
  const char *name;   /* ENTRY: relative path; NULL when absent */
  const char *target; /* symlinks; NULL when absent */
} agent_stat;

typedef struct agent_exit {
  bool has_code;
  uint32_t code;       /* EXIT_CODE as sent */
  uint32_t signal;     /* 0 = not signalled */
  bool exec_failed;    /* the exec itself failed (no process ran) */
  uint32_t exec_errno;
  /* the agent's own clock (0 when the agent sent none): EXEC read -> EXIT
   * queued, and just before the fork -> the child reaped */
  uint64_t agent_ns, spawn_ns;
} agent_exit;

typedef struct agent_error {
  const char *reason;  /* a stable code; NULL when the guest sent none */
  const char *message; /* NULL when none */
  uint32_t err_no;     /* 0 when none */
} agent_error;

typedef struct agent_event {
  agent_event_type type;
  const uint8_t *data; /* STDOUT, STDERR, DATA */
  size_t len;          /* the payload's size: those bytes, or the fields' (ENTRY...) */
  uint32_t pid;        /* STARTED (0 when absent) */
  agent_exit exit;     /* EXIT */
  agent_stat stat;     /* ENTRY, STAT */
  bool has_size;       /* OK{SIZE} (file read: the file's size; write: bytes written) */
  uint64_t size;
  agent_error error;   /* ERROR */
} agent_event;

/* Every operation reports through one of these, on the loop, never inside
 * the call that started it; EXIT, STAT, OK and ERROR end it (nothing comes
 * after them). */
typedef void (*agent_event_cb)(void *ud, const agent_event *ev);

/* ---- operations. Those on a channel return it (> 0), -EMSGSIZE when the
 * request does not fit in a frame, or another -errno when it could not be
 * sent (-ENOTCONN: no handshaken connection). */

typedef struct agent_exec_req {
  const char *const *argv; /* argc strings, at least one */
  size_t argc;
  const char *const *env;  /* envc "KEY=VALUE" strings */
  size_t envc;
  const char *cwd;         /* NULL: the guest's default (/) */
  bool stdin_open;         /* the host streams stdin (else /dev/null) */
  bool tty;                /* one pseudo-terminal for stdin/stdout/stderr */
  bool no_chroot;          /* run in the agent's root (diagnostics) */
  uint16_t rows, cols;     /* tty: the terminal size (0: the guest's 24x80) */
} agent_exec_req;
/* STARTED?, STDOUT/STDERR..., then EXIT or ERROR. */
long agent_exec_start(agent_conn *c, const agent_exec_req *req, agent_event_cb cb, void *ud);
/* Input for an exec started with stdin_open; queued beyond the guest's
 * credit (bounded: -E2BIG). Dropped once the exec ended. */
int agent_exec_stdin(agent_conn *c, uint32_t channel, const void *data, size_t n);
/* Closes its stdin (a tty exec: sends the terminal's EOF character). */
int agent_exec_stdin_close(agent_conn *c, uint32_t channel);
/* Signals the exec's process group. */
int agent_exec_signal(agent_conn *c, uint32_t channel, int signo);
/* A tty exec's terminal size. */
int agent_exec_resize(agent_conn *c, uint32_t channel, uint16_t rows, uint16_t cols);

/* DATA... then OK{SIZE = the file's size}, or ERROR. length 0 = to the end. */
long agent_file_read(agent_conn *c, const char *path, uint64_t offset, uint64_t length,
                     agent_event_cb cb, void *ud);
/* Sends the n bytes and their end at once; OK{SIZE} or ERROR. */
long agent_file_write(agent_conn *c, const char *path, uint32_t mode, bool parents, bool append,
                      const void *data, size_t n, agent_event_cb cb, void *ud);
/* STAT or ERROR. */
long agent_file_stat(agent_conn *c, const char *path, agent_event_cb cb, void *ud);
/* ENTRY... then OK, or ERROR. depth 1 = the directory's entries only. */
long agent_file_list(agent_conn *c, const char *path, uint32_t depth, agent_event_cb cb,
                     void *ud);
/* DATA... (a ustar stream of the directory) then OK, or ERROR. */
long agent_tar_out(agent_conn *c, const char *path, agent_event_cb cb, void *ud);
/* Sends the tar (n bytes) and its end at once; OK or ERROR. parents:
 * create path. */
long agent_tar_in(agent_conn *c, const char *path, bool parents, const void *tar, size_t n,
                  agent_event_cb cb, void *ud);
/* Mounts the disk dev ("serial:NAME") at path in the guest's root; OK or
 * ERROR. */
long agent_mount(agent_conn *c, const char *dev, const char *path, agent_event_cb cb, void *ud);
/* Aborts a file operation: no more events for it, and the guest is told to
 * stop (CANCEL). */
void agent_cancel(agent_conn *c, uint32_t channel);

/* ---- the control channel (one request at a time: -EBUSY) */

typedef struct agent_activate_req {
  bool set_time;
  uint64_t time_ns;        /* CLOCK_REALTIME */
  const uint8_t *seed;     /* entropy for the guest (seed_len bytes), or NULL */
  size_t seed_len;
  const char *hostname;    /* NULL: unchanged */
  const char *image_dev, *scratch_dev; /* the root's disks (first ACTIVATE) */
  const char *net_addr, *net_gateway, *net_dns; /* the NIC's address, route, resolver */
  bool net_up;             /* templates with a NIC: up, IPv6 off, no address */
} agent_activate_req;
/* OK or ERROR (any other answer is reported as an ERROR with reason
 * agent_protocol_error). Returns 0 or -errno. */
int agent_activate(agent_conn *c, const agent_activate_req *req, agent_event_cb cb, void *ud);
/* Sync and power off: OK or ERROR. */
int agent_shutdown(agent_conn *c, agent_event_cb cb, void *ud);
