/* cleanroom sandbox rm: terminate sandboxes and remove their files. */
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>

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
  cli_opts opt;
  int r = cli_getopt(argc, argv, "f", opts, help, &opt);
  if (r) return r;
  if (!opt.all && optind >= argc) return cli_usage_error(help, "give sandbox IDs or --all");
  if (opt.all && optind < argc) return cli_usage_error(NULL, "--all takes no sandbox IDs");
  _cleanup_api_client_ api_client *c = NULL;
  r = cli_connect(opt.host, &c);
  if (r) return r;
  int rc = 0;
  if (opt.all) {
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
