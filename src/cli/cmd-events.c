/* cleanroom events: egress audit events (DNS decisions, dropped connections). */
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void help(FILE *f) {
  fprintf(f, "Usage: cleanroom events [--sandbox ID] [--json] [--follow] [--host HOST]\n\n"
             "Show egress audit events, oldest first: every DNS decision of a sandbox's\n"
             "resolver and every connection its firewall rejected, with a stable reason\n"
             "(host_not_allowed, port_not_allowed, ip_literal_not_allowed, host_denied,\n"
             "host_service_denied, spoofed_source, ...).\n\n"
             "Options:\n"
             "  --sandbox ID  only events of this sandbox (also after it was removed)\n"
             "  --json        one JSON object per event and line\n"
             "  --follow      keep printing new events until interrupted\n"
             "  --host HOST   daemon socket (unix:/path)\n"
             "  -h, --help    show this help\n");
}

static void print_event(json_t *e, bool json) {
  if (json) {
    char *s = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
    if (s) printf("%s\n", s);
    free(s);
    return;
  }
  char dest[300];
  const char *name = cli_json_str(e, "name", NULL), *addr = cli_json_str(e, "address", NULL);
  json_t *port = json_object_get(e, "port");
  if (name)
    snprintf(dest, sizeof(dest), "%s %s", name, cli_json_str(e, "qtype", ""));
  else if (addr && json_is_integer(port))
    snprintf(dest, sizeof(dest), "%s:%lld/%s", addr, (long long)json_integer_value(port),
             cli_json_str(e, "protocol", "tcp"));
  else
    snprintf(dest, sizeof(dest), "%s", addr ? addr : "-");
  printf("%-24s %-26s %-10s %-6s %-22s %s\n", cli_json_str(e, "time", "-"),
         cli_json_str(e, "sandbox", "-"), cli_json_str(e, "kind", "-"),
         cli_json_str(e, "action", "-"), cli_json_str(e, "reason", "-"), dest);
}

int cmd_events(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'},
      {"sandbox", required_argument, NULL, 's'},
      {"follow", no_argument, NULL, 'F'},
      {"host", required_argument, NULL, 'H'},
      {0},
  };
  bool json = false, follow = false;
  const char *host = NULL, *id = NULL;
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    switch (c) {
    case 'j': json = true; break;
    case 's': id = optarg; break;
    case 'F': follow = true; break;
    case 'H': host = optarg; break;
    default:
      return cli_usage_error(help, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_usage_error(help, "unexpected argument '%s'", argv[optind]);
  json_int_t since = 0;
  bool header = false;
  for (;;) {
    json_t *params = json_pack("{s:I, s:i}", "since", since, "limit", 1000);
    if (id) json_object_set_new(params, "sandbox", json_string(id));
    _cleanup_json_ json_t *res = NULL;
    int r = cli_connect_call(host, "events.list", params, NULL, &res);
    if (r) return r;
    if (!json && !header) {
      printf("%-24s %-26s %-10s %-6s %-22s %s\n", "TIME", "SANDBOX", "KIND", "ACTION", "REASON",
             "DESTINATION");
      header = true;
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(res, "events"), i, e) {
      print_event(e, json);
      json_int_t seq = json_integer_value(json_object_get(e, "seq"));
      if (seq > since) since = seq;
    }
    fflush(stdout);
    if (!follow) return 0;
    struct timespec ts = {0, 300 * 1000 * 1000}; /* poll: the API has no event stream yet */
    nanosleep(&ts, NULL);
  }
}
