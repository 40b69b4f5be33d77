#include "server/daemon.h"
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

int cmd_serve(int argc, char **argv) {
  const char *listen = getenv("CLEANROOM_HOST");
  if (listen && !strncmp(listen, "unix:", 5)) listen += 5;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("Usage: cleanroom serve [--listen PATH] [--mcp-http HOST:PORT]\n\n"
             "Run the cleanroom daemon: the control API and MCP on a unix socket\n"
             "(default /run/cleanroom/cleanroom.sock as root, else\n"
             "$XDG_RUNTIME_DIR/cleanroom/cleanroom.sock). Sandboxes keep running when\n"
             "the daemon stops; a restarted daemon re-attaches to them.\n\n"
             "  --mcp-http HOST:PORT  also serve MCP over Streamable HTTP at\n"
             "                   http://HOST:PORT/mcp (off by default; use 127.0.0.1). Clients\n"
             "                   need the bearer token 'cleanroom mcp token' prints; browser\n"
             "                   origins other than loopback are refused.\n\n"
             "Environment: CLEANROOM_DATA_DIR, CLEANROOM_RUN_DIR, CLEANROOM_KERNEL_DIR,\n"
             "CLEANROOM_AGENT, CLEANROOM_ACCEL=kvm|tcg, CLEANROOM_BOOT_TIMEOUT_MS,\n"
             "CLEANROOM_VMM_USER (default cleanroom-vmm; empty: keep root),\n"
             "CLEANROOM_STOP_GRACE_MS (QMP quit to SIGKILL, default 500),\n"
             "CLEANROOM_TCG_TB_MIB (TCG translation cache, default 32),\n"
             "CLEANROOM_LOG=debug|info.\n"
             "Access and quotas: CLEANROOM_SOCKET_GROUP (members may use the socket,\n"
             "mode 0660; others than root and the daemon's user are refused),\n"
             "CLEANROOM_MAX_CONNECTIONS (256), CLEANROOM_MAX_SANDBOXES (64),\n"
             "CLEANROOM_MEMORY_PERCENT (100: total guest memory against host RAM).\n");
      return 0;
    }
    if (!strcmp(argv[i], "--mcp-http") && i + 1 < argc) {
      daemon_set_mcp_http(argv[++i]);
    } else if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
      listen = argv[++i];
      if (!strncmp(listen, "unix:", 5)) listen += 5;
    } else {
      return cli_failf(CR_E_INVALID_ARGUMENT, "unknown option '%s'; see 'cleanroom serve --help'",
                       argv[i]);
    }
  }
  cr_error *err = NULL;
  if (daemon_run(listen && *listen ? listen : NULL, &err) < 0) {
    int r = cli_fail(err);
    cr_error_free(err);
    return r;
  }
  return 0;
}
