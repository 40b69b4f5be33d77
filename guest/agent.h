/* cleanroom-agent: the guest's /init. Shared declarations.
 *
 * Static binary built with musl-gcc: no linux/ headers, the few kernel
 * constants it needs are defined here. See guest/README.md. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/agent_proto.h"

#define AGENT_VERSION "0.1.0"
#define AGENT_ROOT "/run/cleanroom/root"
#define AGENT_IMAGE_MNT "/run/cleanroom/image"
#define AGENT_SCRATCH_MNT "/run/cleanroom/scratch"
#define AGENT_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#define AGENT_MAX_ARGS 4096
#define AGENT_MAX_CHANNELS 1024
#define AGENT_MAX_LIST 100000
/* Output queued for the host above this: stop producing (backpressure). */
#define AGENT_OUT_HIGH (1u << 20)
/* Stdin (or tar-in / file-write data) per channel is flow-controlled: the
 * host has at most AP_WINDOW_INITIAL bytes unacknowledged per channel, the
 * agent acknowledges with AP_WINDOW as it consumes them. So the port is never
 * left unread because of one channel; a host beyond the window gets an ERROR
 * on that channel (and its process group is killed). */

/* Kernel ABI bits musl does not carry. */
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_finit_module
#define SYS_finit_module 313
#endif
struct agent_open_how {
  uint64_t flags;
  uint64_t mode;
  uint64_t resolve;
};
#define AGENT_RESOLVE_NO_MAGICLINKS 0x02
#define AGENT_RESOLVE_NO_SYMLINKS 0x04
#define AGENT_RESOLVE_BENEATH 0x08
#define AGENT_RESOLVE_IN_ROOT 0x10
#define AGENT_RNDADDENTROPY 0x40085203 /* _IOW('R', 0x03, int[2]) */
#define AGENT_RNDRESEEDCRNG 0x5207     /* _IO('R', 0x07) */
#define AGENT_BLKFLSBUF 0x1261         /* _IO(0x12, 97) */

#define MINZ(a, b) ((a) < (b) ? (a) : (b))

/* log to /dev/console */
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* openat2(dirfd, path, flags, mode, resolve); -1 with errno on failure. */
int agent_openat2(int dirfd, const char *path, int flags, mode_t mode,
                  uint64_t resolve);
/* fd of the root that file operations and execs see (the merged root once
 * activated, else "/"). Not owned by the caller. */
int agent_root_fd(void);
/* 1 once the overlay root is mounted. */
int agent_root_ready(void);

/* ---- output queue (agent_main.c) ---- */
ap_buf *agent_out(void);
/* bytes queued for the host and not yet written */
size_t agent_out_pending(void);
void agent_send_error(uint32_t ch, const char *reason, int errnum,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void agent_send_ok(uint32_t ch);
void agent_send_raw(uint16_t type, uint32_t ch, const void *data, size_t n);

/* ---- channels ---- */
enum agent_kind {
  AGENT_CH_EXEC = 1,
  AGENT_CH_FILE_READ,
  AGENT_CH_FILE_WRITE,
  AGENT_CH_TAR_OUT,
  AGENT_CH_TAR_IN,
};

typedef struct agent_chan {
  uint32_t id;
  int kind;
  /* child process (exec, tar) */
  pid_t pid;
  int reaped;
  uint64_t reaped_ms; /* monotonic ms when the leader was reaped */
  /* after the reap: which output pipes were read empty (1 out, 2 err), and
   * when all open ones first were; the exit grace counts from then, so a
   * starved agent never drops output that was already written */
  int drained_mask;
  uint64_t drained_ms;
  int exit_sent;      /* EXIT sent while background processes still held the
                       * output pipes: their output is read and dropped */
  int status;
  int exec_errno;
  /* exec timing (CLOCK_MONOTONIC ns; sent in EXIT): the EXEC read from the
   * port, just before the fork, the child reaped */
  uint64_t t_req_ns, t_fork_ns, t_reap_ns;
  int fd_in;   /* to the child's stdin, -1 when closed */
  int fd_out;  /* child's stdout, -1 at EOF */
  int fd_err;  /* child's stderr, -1 at EOF (always -1 for a TTY exec) */
  int tty;     /* AP_F_TTY exec: fd_out is the pty master, fd_in a dup of it */
  uint8_t *inbuf; /* pending bytes for fd_in */
  size_t inlen;
  int in_eof;     /* close fd_in once inbuf drained */
  int data_end;   /* DATA_END received */
  uint64_t in_unacked;  /* STDIN/DATA bytes received and not yet acknowledged */
  uint64_t ack_pending; /* consumed (written or dropped), WINDOW not yet sent */
  char errtext[1024]; /* tar child's stderr (reason\nmessage) */
  size_t errtext_len;
  /* file read/write */
  int fd;
  uint64_t remaining; /* FILE_READ: bytes left (UINT64_MAX = to EOF) */
  uint64_t size;
  int dirfd;          /* FILE_WRITE: parent dir */
  char *tmpname;      /* FILE_WRITE: temp name in dirfd (NULL: append) */
  char *basename;
  uint64_t written;
} agent_chan;

agent_chan *agent_chan_new(uint32_t id, int kind);
agent_chan *agent_chan_find(uint32_t id);
agent_chan *agent_chan_by_pid(pid_t pid);
/* Frees the channel (closes fds, kills nothing). */
void agent_chan_free(agent_chan *c);

/* Field helpers: 1 found, 0 absent, <0 malformed. */
int agent_get_str(const uint8_t *p, size_t n, uint16_t tag, char **ret);
int agent_get_u32(const uint8_t *p, size_t n, uint16_t tag, uint32_t *ret);
int agent_get_u64(const uint8_t *p, size_t n, uint16_t tag, uint64_t *ret);

/* ---- exec and children (agent_exec.c) ---- */
void agent_exec_start(uint32_t ch, const uint8_t *p, size_t n);
/* Forks a child running fn(arg) with stdin/stdout/stderr pipes attached to
 * channel c. Returns 0 or -errno. */
int agent_spawn_fn(agent_chan *c, int (*fn)(void *), void *arg, int want_stdin);
/* Makes the pipes of the next exec ahead (called when the loop is idle). */
void agent_exec_prepare(void);
/* In a forked child that does not exec: closes those pipes (else a later
 * exec's output would not reach EOF while this child lives). */
void agent_exec_drop_spares(void);
/* Child pipe I/O: called from the poll loop. */
void agent_chan_read_fd(agent_chan *c, int which);
void agent_chan_write_in(agent_chan *c);
/* Queues bytes for the child's stdin. */
void agent_chan_queue_in(agent_chan *c, const uint8_t *d, size_t n);
/* Flow control: n bytes of the channel's input were consumed (written to the
 * child/file, or dropped); acknowledged with AP_WINDOW soon. */
void agent_chan_consumed(agent_chan *c, size_t n);
/* Accounts n received input bytes; 0 within the window, else -1 after the
 * channel was failed (ERROR sent, process group killed, channel freed). */
int agent_chan_recv_in(agent_chan *c, size_t n);
/* Handles a reaped pid. */
void agent_child_reaped(pid_t pid, int status);
/* Sends EXIT/OK/ERROR and frees the channel once it is finished. An exec
 * whose leader exited while background processes keep its output pipes open
 * gets its EXIT after AGENT_EXIT_GRACE_MS; their later output is dropped. */
void agent_chan_maybe_finish(agent_chan *c);
/* 1 when c's command exited but its output pipes are still held open. */
int agent_chan_in_grace(const agent_chan *c);
#define AGENT_EXIT_GRACE_MS 200
uint64_t agent_now_ms(void);
uint64_t agent_now_ns(void);
/* CLOCK_MONOTONIC ns when the port read that holds the request being
 * dispatched returned (agent_dispatch.c) */
extern uint64_t agent_req_ns;
void agent_chan_kill(agent_chan *c, int sig);
/* AP_RESIZE: the TTY of a TTY exec gets rows << 16 | cols (else ignored). */
void agent_chan_resize(agent_chan *c, uint32_t winsize);

/* ---- file operations (agent_files.c) ---- */
void agent_file_read_start(uint32_t ch, const uint8_t *p, size_t n);
void agent_file_read_pump(agent_chan *c);
void agent_file_write_start(uint32_t ch, const uint8_t *p, size_t n);
void agent_file_write_data(agent_chan *c, const uint8_t *d, size_t n);
void agent_file_write_end(agent_chan *c);
void agent_stat(uint32_t ch, const uint8_t *p, size_t n);
void agent_list(uint32_t ch, const uint8_t *p, size_t n);
void agent_tar_out_start(uint32_t ch, const uint8_t *p, size_t n);
void agent_tar_in_start(uint32_t ch, const uint8_t *p, size_t n);
uint32_t agent_ftype(mode_t m);
/* mkdir -p of `path` inside root (no symlinks followed). 0 or -errno. */
int agent_mkdir_p_in(int rootfd, const char *path, mode_t mode);

/* ---- activate (agent_activate.c) ---- */
void agent_activate(const uint8_t *p, size_t n);
/* MOUNT: the host-built workspace disk at PATH inside the root. */
void agent_mount(uint32_t ch, const uint8_t *p, size_t n);
/* ---- network at activate (agent_net.c) ---- */
/* Everything that does not depend on the address (template builds,
 * AP_T_NET_UP; once): lo and the first NIC up, IPv6 off, a netlink socket,
 * /etc/resolv.conf in the root bound to the agent's own tmpfs copy. The
 * clones inherit it with the agent's memory. 0 or -errno with msg set. */
int agent_net_prepare(char *msg, size_t msglen);
/* Address cidr ("10.213.0.2/30") on that NIC (replacing the one a fork came
 * with), default route via gateway (one netlink batch), the nameserver dns
 * in resolv.conf; prepares first if that was not done. 0 or -errno with msg
 * set. */
int agent_net_configure(const char *cidr, const char *gateway, const char *dns, char *msg,
                        size_t msglen);
/* The NIC's name once prepared, else "-". */
const char *agent_net_nic(void);

/* ---- tar (tar.c); run in a child process ---- */
/* Writes a ustar stream of directory `dirfd` (entries relative to it) to
 * outfd. 0 or -errno with a message in err. */
int agent_tar_write(int dirfd, int outfd, char *err, size_t errlen);
/* Extracts a tar stream from infd into directory `dirfd`; refuses absolute
 * names, `..` and writing through symlinks. 0 or -errno with message. */
int agent_tar_extract(int dirfd, int infd, char *err, size_t errlen);
