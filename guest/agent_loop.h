/* The agent's main loop, shared by its files: the state (agent_main.c),
 * logging, output and fields (agent_io.c), the channel table (agent_chan.c),
 * reading and dispatching the host's frames (agent_dispatch.c) and the PID-1
 * set-up (agent_boot.c). */
#pragma once
#include "agent.h"

#include <stddef.h>
#include <stdint.h>

/* agent_main.c */
extern agent_chan *agent_chans[AGENT_MAX_CHANNELS];
extern int agent_console_fd;
extern int agent_draining;
extern int agent_host_present;
extern uint8_t *agent_in_buf;
extern const size_t agent_in_cap;
extern size_t agent_in_len;
extern size_t agent_n_chans;
extern ap_buf agent_out_buf;
extern size_t agent_out_off;
extern int agent_port_fd;
extern char agent_port_path[128];
extern int agent_shutdown_requested;
extern int agent_sig_fd;

/* agent_io.c */
void agent_out_flush(void);

/* agent_chan.c */
int agent_chan_alive(const agent_chan *c);
void agent_send_windows(void);
void agent_session_reset(const char *why);

/* agent_dispatch.c */
void agent_port_read(void);

/* agent_boot.c */
void agent_drain_signals(void);
int agent_find_port(void);
void agent_load_modules(void);
void agent_loopback_up(void);
void agent_mount_basics(void);
void agent_power_off(void);
void agent_reap_children(void);
