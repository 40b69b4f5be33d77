/* The host <-> guest agent protocol: framing and field encoding.
 *
 * Compiled into both the host library and the static guest agent, so it
 * depends on libc only. See docs/agent-protocol.md for the message flows.
 *
 * A frame is a 12-byte little-endian header followed by `len` payload bytes:
 *     u32 len | u16 type | u16 flags | u32 channel
 * len <= AP_MAX_PAYLOAD; flags must be 0 in version 1; channel 0 is the
 * control channel (HELLO, ACTIVATE, SHUTDOWN); the host allocates every
 * other channel id for one operation (an exec, a file transfer, ...).
 * A payload is a sequence of fields: u16 tag | u32 len | len bytes. */
#pragma once
#include "util/buf.h"
#include <stddef.h>
#include <stdint.h>

#define AP_VERSION 1
#define AP_HEADER_SIZE 12
#define AP_MAX_PAYLOAD (1u << 20) /* hard cap: a bigger frame drops the peer */
#define AP_CHUNK (64u * 1024)     /* data chunk size senders use */
#define AP_PORT_NAME "cleanroom.agent"
/* Flow control: the host may have at most this many STDIN/DATA payload bytes
 * per channel sent and not yet acknowledged by an AP_WINDOW frame. The guest
 * advertises it in HELLO_REPLY (AP_T_WINDOW); a host that sees no AP_T_WINDOW
 * there talks to an older agent without flow control. */
#define AP_WINDOW_INITIAL (1u << 20)

enum ap_type {
  /* host -> guest requests (open a channel unless noted) */
  AP_HELLO = 0x01,      /* ch 0: version, max payload */
  AP_ACTIVATE = 0x02,   /* ch 0: time, seed, hostname, devices to mount */
  AP_EXEC = 0x03,       /* argv, env, cwd, flags */
  AP_STDIN = 0x04,      /* data for the exec's stdin */
  AP_STDIN_EOF = 0x05,  /* close the exec's stdin */
  AP_SIGNAL = 0x06,     /* deliver signal to the exec's process group */
  AP_FILE_READ = 0x07,  /* path, offset, length -> DATA..., OK{size} */
  AP_FILE_WRITE = 0x08, /* path, mode, flags; then DATA..., DATA_END -> OK */
  AP_STAT = 0x09,       /* path -> STAT_RESULT */
  AP_LIST = 0x0a,       /* path, depth -> ENTRY..., OK */
  AP_TAR_OUT = 0x0b,    /* path -> DATA... (ustar), OK */
  AP_TAR_IN = 0x0c,     /* path; then DATA..., DATA_END -> OK */
  AP_SHUTDOWN = 0x0d,   /* ch 0: sync and power off */
  AP_CANCEL = 0x0e,     /* abort the channel's operation */
  AP_RESIZE = 0x0f,     /* WINSIZE: a TTY exec's terminal size changed */
  AP_MOUNT = 0x10,      /* IMAGE_DEV, PATH: mount the workspace disk there -> OK */
  /* both directions */
  AP_DATA = 0x20,
  AP_DATA_END = 0x21,
  /* guest -> host replies and events */
  AP_HELLO_REPLY = 0x81, /* version, agent version, kernel release */
  AP_OK = 0x82,          /* operation finished; optional fields */
  AP_ERROR = 0x83,       /* reason, errno, message; ends the channel */
  AP_STARTED = 0x84,     /* pid */
  AP_STDOUT = 0x85,
  AP_STDERR = 0x86,
  AP_EXIT = 0x87,        /* exit_code or signal (+ exec_errno); ends the channel */
  AP_STAT_RESULT = 0x88,
  AP_ENTRY = 0x89,
  AP_LOG = 0x8a,         /* ch 0: a line from the agent's own log */
  AP_WINDOW = 0x8b,      /* LENGTH: the guest consumed that many more bytes of
                          * the channel's STDIN/DATA (credit for the host) */
};

enum ap_tag {
  AP_T_ARGV = 1,      /* str, repeated */
  AP_T_ENV = 2,       /* str "K=V", repeated */
  AP_T_CWD = 3,       /* str */
  AP_T_PATH = 4,      /* str */
  AP_T_OFFSET = 5,    /* u64 */
  AP_T_LENGTH = 6,    /* u64 */
  AP_T_MODE = 7,      /* u32 */
  AP_T_FLAGS = 8,     /* u32, AP_F_* */
  AP_T_PID = 9,       /* u32 */
  AP_T_EXIT_CODE = 10,/* u32 (0..255) */
  AP_T_SIGNAL = 11,   /* u32 */
  AP_T_ERRNO = 12,    /* u32 */
  AP_T_REASON = 13,   /* str, stable code e.g. "file_not_found" */
  AP_T_MESSAGE = 14,  /* str */
  AP_T_VERSION = 15,  /* u32 */
  AP_T_TIME_NS = 16,  /* u64, CLOCK_REALTIME in ns */
  AP_T_SEED = 17,     /* bytes */
  AP_T_HOSTNAME = 18, /* str */
  AP_T_SIZE = 19,     /* u64 */
  AP_T_FTYPE = 20,    /* u32, AP_FT_* */
  AP_T_MTIME_NS = 21, /* u64 */
  AP_T_UID = 22,      /* u32 */
  AP_T_GID = 23,      /* u32 */
  AP_T_NAME = 24,     /* str (relative path in LIST entries) */
  AP_T_TARGET = 25,   /* str (symlink target) */
  AP_T_AGENT_VERSION = 26, /* str */
  AP_T_KERNEL = 27,   /* str (uname release) */
  AP_T_IMAGE_DEV = 28,   /* str, e.g. "/dev/vda": image ext4, read-only lower */
  AP_T_SCRATCH_DEV = 29, /* str, e.g. "/dev/vdb": scratch ext4, upper */
  AP_T_DEPTH = 30,    /* u32 */
  AP_T_MAX_PAYLOAD = 31, /* u32 */
  AP_T_EXEC_ERRNO = 32,  /* u32: exec itself failed (e.g. ENOENT -> 127) */
  AP_T_UPTIME_NS = 33,   /* u64 */
  AP_T_WINDOW = 34,      /* u64, HELLO_REPLY: per-channel STDIN/DATA window */
  AP_T_WINSIZE = 35,     /* u32, EXEC with AP_F_TTY and RESIZE: rows << 16 | cols */
  /* EXIT, the agent's CLOCK_MONOTONIC (diagnostics; absent from older agents): */
  AP_T_AGENT_NS = 36,    /* u64: EXEC read from the port -> this EXIT queued */
  AP_T_SPAWN_NS = 37,    /* u64: just before the fork -> the child reaped */
  /* ACTIVATE, sandboxes with a network (src/egress): */
  AP_T_NET_ADDR = 40,    /* str "10.213.0.2/30": the guest's address on its NIC */
  AP_T_NET_GATEWAY = 41, /* str "10.213.0.1": default route */
  AP_T_NET_DNS = 42,     /* str "10.213.0.1": the only resolver (resolv.conf) */
  AP_T_NET_UP = 43,      /* u32 1: the NIC up, IPv6 off, no address (templates) */
};

/* AP_T_FLAGS bits */
enum {
  AP_F_STDIN = 1u << 0,   /* EXEC: host will stream stdin (else /dev/null) */
  AP_F_PARENTS = 1u << 1, /* FILE_WRITE/TAR_IN: create missing parent dirs */
  AP_F_APPEND = 1u << 2,  /* FILE_WRITE: append instead of truncate */
  AP_F_NO_CHROOT = 1u << 3, /* EXEC: run in the agent's root (diagnostics) */
  AP_F_TTY = 1u << 4,     /* EXEC: stdin/stdout/stderr are one pseudo-terminal
                           * (its output comes as STDOUT; no STDERR) */
};

/* AP_T_FTYPE values */
enum { AP_FT_OTHER = 0, AP_FT_FILE = 1, AP_FT_DIR = 2, AP_FT_SYMLINK = 3 };

typedef struct ap_header {
  uint32_t len;
  uint16_t type;
  uint16_t flags;
  uint32_t channel;
} ap_header;

/* 1 when `type` is a known frame type. */
int ap_type_known(uint16_t type);
const char *ap_type_name(uint16_t type);

void ap_header_encode(uint8_t out[AP_HEADER_SIZE], const ap_header *h);

/* Parses one frame at the start of buf[0..n).
 * Returns the frame's total size (> 0) with *h and *payload set when a whole
 * frame is there, 0 when more bytes are needed, -EMSGSIZE when len exceeds
 * max_payload, -EBADMSG for an unknown type or non-zero flags. After an error
 * the stream cannot be resynchronized: drop the peer. */
long ap_frame_parse(const uint8_t *buf, size_t n, uint32_t max_payload,
                    ap_header *h, const uint8_t **payload);

/* A growable output buffer for building frames: a cr_buf (util/buf.h; its
 * data/len/err are reachable directly as b.data, b.len, b.err) plus the
 * frame being built. After a failure (err: -ENOMEM, or -E2BIG for a field
 * larger than a frame can carry) further writes are ignored and
 * ap_frame_end reports it. */
typedef struct ap_buf {
  union {
    cr_buf buf;
    struct { /* the same layout as cr_buf */
      uint8_t *data;
      size_t len, cap, max;
      int err;
    };
  };
  size_t frame_start; /* offset of the frame being built */
} ap_buf;

void ap_buf_free(ap_buf *b);
void ap_buf_reset(ap_buf *b);
/* Starts a frame (reserves the header). */
void ap_frame_begin(ap_buf *b, uint16_t type, uint32_t channel);
/* Fills in the header's length. Returns -EMSGSIZE if the payload (or a field
 * put into it) is too big, -ENOMEM on allocation failure, else 0. */
int ap_frame_end(ap_buf *b);
void ap_put_bytes(ap_buf *b, uint16_t tag, const void *v, size_t n);
void ap_put_str(ap_buf *b, uint16_t tag, const char *s);
void ap_put_u32(ap_buf *b, uint16_t tag, uint32_t v);
void ap_put_u64(ap_buf *b, uint16_t tag, uint64_t v);
/* Appends a whole DATA-like frame whose payload is raw bytes (no fields):
 * AP_DATA, AP_STDIN, AP_STDOUT, AP_STDERR carry raw bytes. */
int ap_put_raw_frame(ap_buf *b, uint16_t type, uint32_t channel,
                     const void *data, size_t n);

/* Field iteration over a payload. */
typedef struct ap_field {
  uint16_t tag;
  uint32_t len;
  const uint8_t *val;
} ap_field;

/* Returns 1 and fills *f when a field is there, 0 at the end, -EBADMSG when
 * the payload is truncated. *off starts at 0. */
int ap_field_next(const uint8_t *p, size_t n, size_t *off, ap_field *f);
/* Typed accessors; -EBADMSG on a wrong length. */
int ap_field_u32(const ap_field *f, uint32_t *ret);
int ap_field_u64(const ap_field *f, uint64_t *ret);
/* Newly allocated NUL-terminated copy; -EBADMSG when it contains a NUL,
 * -ENOMEM on allocation failure. */
int ap_field_str(const ap_field *f, char **ret);
/* Finds the first field with `tag`; 1 found, 0 absent, <0 malformed. */
int ap_find(const uint8_t *p, size_t n, uint16_t tag, ap_field *ret);
