/* cleanroom sandbox rm: terminate sandboxes and remove their files. */
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void help(FILE *f) {
  fprintf(f, "Usage: cleanroom sandbox rm ID... | --all [--host HOST]\n\n"
             "Stop sandboxes and remove their files. Prints each removed id.\n"
             "Exit status 125 when any of them could not be removed.\n\n"
             "Options:\n"
             "  --all        remove every sandbox\n"
             "  --host HOST  daemon socket (unix:/path)\n"
             "  -h, --help   show this help\n");
}

static int rm_one(api_client *c, const char *id) {
  _cleanup_error_ cr_error *err = NULL;
  if (api_client_call(c, "sandbox.terminate", json_pack("{s:s}", "id", id), NULL, NULL, NULL,
                      &err) < 0) {
    cr_error_wrap(&err, "removing sandbox %s", id);
    return cli_fail(err);
  }
  printf("%s\n", id);
  fflush(stdout);
  return 0;
}

int cmd_sandbox_rm(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  static const struct option opts[] = {
      {"all", no_argument, NULL, 'a'},
      {"force", no_argument, NULL, 'f'}, /* accepted: rm never asks */
      {"host", required_argument, NULL, 'H'},
      {0},
  };
  bool all = false;
  const char *host = NULL;
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
    switch (o) {
    case 'a': all = true; break;
    case 'f': break;
    case 'H': host = optarg; break;
    default:
      fprintf(stderr, "cleanroom: invalid_argument: unknown or incomplete option '%s'\n",
              argv[optind - 1]);
      help(stderr);
      return CLI_EXIT_USAGE;
    }
  }
  if (!all && optind >= argc) {
    fprintf(stderr, "cleanroom: invalid_argument: give sandbox IDs or --all\n");
    help(stderr);
    return CLI_EXIT_USAGE;
  }
  if (all && optind < argc) {
    fprintf(stderr, "cleanroom: invalid_argument: --all takes no sandbox IDs\n");
    return CLI_EXIT_USAGE;
  }
  _cleanup_api_client_ api_client *c = NULL;
  int r = cli_connect(host, &c);
  if (r) return r;
  int rc = 0;
  if (all) {
    _cleanup_json_ json_t *res = NULL;
    r = cli_call(c, "sandbox.list", NULL, &res);
    if (r) return r;
    size_t i;
    json_t *sb;
    json_array_foreach(json_object_get(res, "sandboxes"), i, sb) {
      const char *id = cli_json_str(sb, "id", NULL);
      if (id && rm_one(c, id)) rc = CLI_EXIT_FAILURE;
    }
    return rc;
  }
  for (int i = optind; i < argc; i++)
    if (rm_one(c, argv[i])) rc = CLI_EXIT_FAILURE;
  return rc;
}
