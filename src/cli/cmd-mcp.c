/* cleanroom mcp: the stdio MCP server for agents. A thin bridge: it
 * connects to the daemon (starting it when absent), announces the session's
 * repository/image/policy with a cleanroom/configure notification, then
 * relays stdin to the socket and the socket to stdout unchanged. The MCP
 * server itself lives in the daemon (src/mcp/). stdout carries only MCP
 * messages; diagnostics go to stderr; stdin EOF ends the session. */
#include "client/client.h"
#include "cli/cli.h"
#include "policy/policy.h"
#include "util/fs.h"
#include "util/paths.h"
#include "workspace/local.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void help(FILE *f) {
  fprintf(f,
          "Usage: cleanroom mcp [--repo DIR] [--sandbox ID|NAME | --name NAME]\n"
          "                     [--idle-timeout DURATION] [options]\n\n"
          "Serve the Model Context Protocol on stdin/stdout for an agent (Claude Code,\n"
          "VS Code, Cursor, Codex, ...). Tools run commands and edit files in a sandbox\n"
          "(a microVM); see docs/mcp.md. The daemon is started when it is not running.\n\n"
          "Options:\n"
          "  --repo DIR       the repository the agent works on (default: the current\n"
          "                   directory); its cleanroom.yaml is the default policy.\n"
          "                   Given explicitly, the session's default sandbox gets\n"
          "                   DIR's HEAD plus its local changes in /workspace\n"
          "  --image REF      image for the session's sandbox (default: the policy's\n"
          "                   image, else the daemon's default)\n"
          "  --policy FILE    policy file (default: cleanroom.yaml of the repository)\n"
          "  --sandbox ID|NAME  use this existing sandbox as the session's default\n"
          "                   (never creates one; a name is one given with --name)\n"
          "  --name NAME      find-or-create: the session's default sandbox is the one\n"
          "                   created under NAME before, if it still exists, else a new\n"
          "                   one remembered under NAME (reconnecting agents get their\n"
          "                   sandbox back)\n"
          "  --idle-timeout DURATION  remove the sandbox this session created (or found\n"
          "                   by --name) once no session has used it for DURATION\n"
          "                   (e.g. 90s, 30m, 2h; 0 = never; default: the daemon's\n"
          "                   CLEANROOM_MCP_IDLE_TIMEOUT seconds, else 30m). Never while\n"
          "                   a session is attached; --sandbox sandboxes are never removed\n"
          "  --host HOST      daemon socket (unix:/path); default $CLEANROOM_HOST or the\n"
          "                   local daemon, started on demand\n"
          "  -h, --help       show this help\n\n"
          "stdout carries only MCP messages, diagnostics go to stderr, and the server\n"
          "exits when stdin closes.\n\n"
          "'cleanroom mcp token' prints the bearer token for 'serve --mcp-http'.\n");
}

/* Writes all of buf; false when the peer is gone. */
static bool write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    buf += n;
    len -= (size_t)n;
  }
  return true;
}

static int build_config(const char *repo_arg, const char *image, const char *policy_path,
                        json_t **ret, cr_error **err) {
  _cleanup_json_ json_t *cfg = json_object();
  char resolved[PATH_MAX];
  const char *repo = repo_arg ? repo_arg : ".";
  if (!realpath(repo, resolved))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, errno, "--repo %s: %s", repo, strerror(errno));
  json_object_set_new(cfg, "repo", json_string(resolved));

  _cleanup_free_ char *found = NULL;
  if (!policy_path) {
    _cleanup_error_ cr_error *e = NULL;
    if (policy_find(resolved, &found, NULL, &e) >= 0) policy_path = found;
  }
  _cleanup_policy_ policy *p = NULL;
  if (policy_path) {
    if (policy_load_file(policy_path, &p, NULL, err) < 0)
      return cr_error_wrap(err, "loading policy %s", policy_path);
    json_t *compiled = policy_compile_json(p);
    if (compiled) json_object_set_new(cfg, "policy", compiled);
    char abs[PATH_MAX];
    json_object_set_new(cfg, "policy_path",
                        json_string(realpath(policy_path, abs) ? abs : policy_path));
    if (!image) image = policy_image_ref(p);
  }
  if (image) json_object_set_new(cfg, "image", json_string(image));
  /* --repo DIR: the default sandbox gets DIR's HEAD plus its local changes
   * (docs/workspace.md); the daemon fetches from DIR itself */
  if (repo_arg && (!p || policy_repository_enabled(p))) {
    ws_local *l = NULL;
    char head[41];
    if (ws_local_open(resolved, &l, NULL) == 0 && ws_local_head(l, head) == 0)
      json_object_set_new(cfg, "workspace",
                          json_pack("{s:s, s:s, s:s, s:s, s:b}", "repo_url", ws_local_root(l),
                                    "ref", head, "path",
                                    p ? policy_repository_path(p) : CR_WS_DEFAULT_PATH,
                                    "copy_in_from", ws_local_root(l), "submodules",
                                    p && policy_repository_submodules(p)));
    ws_local_free(l);
  }
  *ret = TAKE_PTR(cfg);
  return 0;
}

/* "90", "90s", "30m", "2h" -> ms; -1 when malformed. */
static long long parse_duration_ms(const char *s) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || v < 0) return -1;
  long long mul = 1000;
  if (!strcmp(end, "ms")) mul = 1;
  else if (!*end || !strcmp(end, "s")) mul = 1000;
  else if (!strcmp(end, "m")) mul = 60000;
  else if (!strcmp(end, "h")) mul = 3600000;
  else return -1;
  if (v > 30LL * 24 * 3600 * 1000 / mul) return -1;
  return v * mul;
}

/* cleanroom mcp token: the bearer token of `serve --mcp-http`. */
static int cmd_mcp_token(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom mcp token\n\n"
           "Print the bearer token that MCP clients of 'cleanroom serve --mcp-http' send as\n"
           "'Authorization: Bearer TOKEN'. The daemon makes it on its first start with\n"
           "--mcp-http and keeps it in $CLEANROOM_DATA_DIR/mcp-token (mode 0600).\n");
    return 0;
  }
  if (argc > 1) {
    fprintf(stderr, "cleanroom: invalid_argument: unexpected argument '%s'\n", argv[1]);
    return CLI_EXIT_USAGE;
  }
  _cleanup_free_ char *path = cr_data_path("mcp-token");
  _cleanup_free_ char *buf = NULL;
  size_t n = 0;
  int r = path ? cr_read_file(path, 1024, &buf, &n) : -ENOMEM;
  if (r < 0)
    return cli_failf(r == -ENOENT ? CR_E_FILE_NOT_FOUND : CR_E_IO,
                     "%s: %s; start the daemon with 'cleanroom serve --mcp-http "
                     "127.0.0.1:PORT' first", path ? path : "mcp-token", strerror(-r));
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
  printf("%s\n", buf);
  return 0;
}

int cmd_mcp(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "token")) return cmd_mcp_token(argc - 1, argv + 1);
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  enum { O_REPO = 1000, O_IMAGE, O_POLICY, O_HOST, O_SANDBOX, O_NAME, O_IDLE };
  static const struct option opts[] = {
      {"sandbox", required_argument, NULL, O_SANDBOX},
      {"name", required_argument, NULL, O_NAME},
      {"idle-timeout", required_argument, NULL, O_IDLE},
      {"repo", required_argument, NULL, O_REPO},
      {"image", required_argument, NULL, O_IMAGE},
      {"policy", required_argument, NULL, O_POLICY},
      {"host", required_argument, NULL, O_HOST},
      {0},
  };
  const char *repo = NULL, *image = NULL, *policy_path = NULL, *host = NULL;
  const char *sandbox = NULL, *name = NULL;
  long long idle_ms = -1;
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    switch (o) {
    case O_REPO: repo = optarg; break;
    case O_IMAGE: image = optarg; break;
    case O_POLICY: policy_path = optarg; break;
    case O_HOST: host = optarg; break;
    case O_SANDBOX: sandbox = optarg; break;
    case O_NAME: name = optarg; break;
    case O_IDLE:
      idle_ms = parse_duration_ms(optarg);
      if (idle_ms < 0) {
        fprintf(stderr, "cleanroom: invalid_argument: --idle-timeout %s: want a duration like "
                        "90s, 30m, 2h or 0\n", optarg);
        return CLI_EXIT_USAGE;
      }
      break;
    default:
      fprintf(stderr, "cleanroom: invalid_argument: unknown option '%s'; see "
                      "'cleanroom mcp --help'\n", argv[optind - 1]);
      return CLI_EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "cleanroom: invalid_argument: unexpected argument '%s'\n", argv[optind]);
    return CLI_EXIT_USAGE;
  }
  signal(SIGPIPE, SIG_IGN);

  _cleanup_error_ cr_error *err = NULL;
  _cleanup_json_ json_t *cfg = NULL;
  if (sandbox && name) {
    fprintf(stderr, "cleanroom: invalid_argument: give --sandbox or --name, not both\n");
    return CLI_EXIT_USAGE;
  }
  if ((name && (!*name || strlen(name) > 128)) || (sandbox && !*sandbox)) {
    fprintf(stderr, "cleanroom: invalid_argument: --name/--sandbox must be 1-128 characters\n");
    return CLI_EXIT_USAGE;
  }
  if (build_config(repo, image, policy_path, &cfg, &err) < 0) return cli_fail(err);
  if (sandbox) json_object_set_new(cfg, "sandbox", json_string(sandbox));
  if (name) json_object_set_new(cfg, "name", json_string(name));
  if (idle_ms >= 0) json_object_set_new(cfg, "idle_timeout_ms", json_integer(idle_ms));

  _cleanup_api_client_ api_client *c = NULL;
  if (api_client_connect(host, host == NULL, &c, &err) < 0) return cli_fail(err);
  if (api_client_send_notification(c, "cleanroom/configure", json_incref(cfg), &err) < 0)
    return cli_fail(err);

  int sock = api_client_fd(c);
  static char buf[64 * 1024];
  struct pollfd pfd[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
  for (;;) {
    /* anything the client library already buffered (nothing, normally) */
    while (api_client_pending(c)) {
      _cleanup_json_ json_t *m = NULL;
      if (api_client_read_message(c, 0, &m, &err) <= 0) break;
      _cleanup_free_ char *text = json_dumps(m, JSON_COMPACT);
      if (!text || !write_all(STDOUT_FILENO, text, strlen(text)) ||
          !write_all(STDOUT_FILENO, "\n", 1))
        return 0;
    }
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return cli_failf(CR_E_IO, "poll: %s", strerror(errno));
    }
    if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) return 0; /* stdin EOF: the client is done */
      if (!write_all(sock, buf, (size_t)n))
        return cli_failf(CR_E_DAEMON_UNAVAILABLE, "the daemon closed the connection");
    }
    if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(sock, buf, sizeof(buf));
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0)
        return cli_failf(CR_E_DAEMON_UNAVAILABLE, "the daemon closed the connection%s%s",
                         n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
      if (!write_all(STDOUT_FILENO, buf, (size_t)n)) return 0; /* client gone */
    }
  }
}
