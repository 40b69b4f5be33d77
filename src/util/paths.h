/* Where cleanroom keeps things. Environment overrides (used by tests):
 *   CLEANROOM_DATA_DIR    data dir (default /var/lib/cleanroom as root,
 *                         $XDG_DATA_HOME/cleanroom or ~/.local/share/cleanroom)
 *   CLEANROOM_RUN_DIR     runtime dir holding the socket (default
 *                         /run/cleanroom as root, $XDG_RUNTIME_DIR/cleanroom)
 *   CLEANROOM_KERNEL_DIR  kernel dir (default <data>/kernels/current)
 * Each returns a newly allocated string. */
#pragma once
char *cr_data_dir(void);
char *cr_run_dir(void);
char *cr_socket_path(void);
char *cr_kernel_dir(void);
/* <data>/<sub> */
char *cr_data_path(const char *sub);
/* Directory of the running executable (for finding the guest agent). */
char *cr_self_dir(void);
