/* cleanroom snapshot create|ls|inspect|rm|restore: user snapshots of
 * sandboxes (memory, processes, scratch disk). See docs/cli.md. */
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const struct option base_opts[] = {
    {"json", no_argument, NULL, 'j'},
    {"host", required_argument, NULL, 'H'},
    {0},
};

static void help_create(FILE *f) {
  fprintf(f, "Usage: cleanroom snapshot create SANDBOX [--name NAME] [--json] [--host HOST]\n\n"
             "Snapshot a running sandbox: its memory and running processes (the VM is\n"
             "paused for the copy) and its scratch disk (reflink, else a sparse copy).\n"
             "Prints the snapshot id. The snapshot outlives the sandbox.\n\n"
             "Options:\n"
             "  --name NAME  a unique name (1-64 of A-Z a-z 0-9 . _ -)\n"
             "  --json       print the snapshot object\n"
             "  --host HOST  daemon socket (unix:/path)\n"
             "  -h, --help   show this help\n");
}

static void print_snapshot(json_t *res, bool json) {
  if (json)
    cli_print_json(res);
  else
    printf("%s\n", cli_json_str(res, "id", ""));
}

int cmd_snapshot_create(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_create(stdout);
    return 0;
  }
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'},
      {"host", required_argument, NULL, 'H'},
      {"name", required_argument, NULL, 'N'},
      {0},
  };
  cli_opts o;
  int r = cli_getopt(argc, argv, "", opts, help_create, &o);
  if (r) return r;
  if (optind + 1 != argc) return cli_usage_error(help_create, "give exactly one sandbox ID");
  const char *name = o.name;
  json_t *params = json_pack("{s:s}", "sandbox_id", argv[optind]);
  if (name) json_object_set_new(params, "name", json_string(name));
  _cleanup_json_ json_t *res = NULL;
  r = cli_connect_call(o.host, "snapshot.create", params, NULL, &res);
  if (r) return r;
  print_snapshot(res, o.json);
  return 0;
}

static void help_ls(FILE *f) {
  fprintf(f, "Usage: cleanroom snapshot ls [--json] [--host HOST]\n\n"
             "List snapshots, newest first: ID, NAME, SANDBOX, MEMORY, CREATED.\n\n"
             "Options:\n"
             "  --json       print {\"snapshots\": [...]} as returned by the daemon\n"
             "  --host HOST  daemon socket (unix:/path)\n"
             "  -h, --help   show this help\n");
}

int cmd_snapshot_ls(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_ls(stdout);
    return 0;
  }
  cli_opts o;
  int r = cli_getopt(argc, argv, "+", base_opts, help_ls, &o);
  if (r) return r;
  if (optind < argc) return cli_usage_error(NULL, "unexpected argument '%s'", argv[optind]);
  _cleanup_json_ json_t *res = NULL;
  r = cli_connect_call(o.host, "snapshot.list", NULL, NULL, &res);
  if (r) return r;
  if (o.json) {
    cli_print_json(res);
    return 0;
  }
  printf("%-28s %-20s %-28s %8s %s\n", "ID", "NAME", "SANDBOX", "MEMORY", "CREATED");
  size_t i;
  json_t *sn;
  json_array_foreach(json_object_get(res, "snapshots"), i, sn) {
    char age[32], mem[32];
    snprintf(mem, sizeof(mem), "%lldM",
             (long long)(json_integer_value(json_object_get(sn, "memory_bytes")) >> 20));
    printf("%-28s %-20s %-28s %8s %s\n", cli_json_str(sn, "id", "-"),
           cli_json_str(sn, "name", "-"), cli_json_str(sn, "sandbox_id", "-"), mem,
           cli_format_age(cli_json_str(sn, "created_at", NULL), age, sizeof(age)));
  }
  return 0;
}

static void help_inspect(FILE *f) {
  fprintf(f, "Usage: cleanroom snapshot inspect SNAPSHOT [--host HOST]\n\n"
             "Show a snapshot (by id, unique id prefix or name) as JSON, with\n"
             "\"usable\" and \"problem\" from a quick check of its files.\n");
}

int cmd_snapshot_inspect(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_inspect(stdout);
    return 0;
  }
  cli_opts o;
  int r = cli_getopt(argc, argv, "", base_opts, help_inspect, &o);
  if (r) return r;
  if (optind + 1 != argc) return cli_usage_error(help_inspect, "give exactly one snapshot");
  _cleanup_json_ json_t *res = NULL;
  r = cli_connect_call(o.host, "snapshot.get", json_pack("{s:s}", "snapshot", argv[optind]),
                       NULL, &res);
  if (r) return r;
  cli_print_json(res);
  return 0;
}

static void help_rm(FILE *f) {
  fprintf(f, "Usage: cleanroom snapshot rm SNAPSHOT... [--host HOST]\n\n"
             "Remove snapshots (by id, unique id prefix or name); prints each removed\n"
             "id. Sandboxes forked from them keep running.\n");
}

int cmd_snapshot_rm(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_rm(stdout);
    return 0;
  }
  cli_opts o;
  int r = cli_getopt(argc, argv, "", base_opts, help_rm, &o);
  if (r) return r;
  if (optind >= argc) return cli_usage_error(help_rm, "give snapshots to remove");
  _cleanup_api_client_ api_client *c = NULL;
  r = cli_connect(o.host, &c);
  if (r) return r;
  int rc = 0;
  for (int i = optind; i < argc; i++) {
    _cleanup_json_ json_t *res = NULL;
    if (cli_call(c, "snapshot.remove", json_pack("{s:s}", "snapshot", argv[i]), &res)) {
      rc = CLI_EXIT_FAILURE;
      continue;
    }
    printf("%s\n", cli_json_str(res, "id", argv[i]));
  }
  return rc;
}

static void help_restore(FILE *f) {
  fprintf(f, "Usage: cleanroom snapshot restore SNAPSHOT --in SANDBOX [--json] [--host HOST]\n\n"
             "Roll a sandbox back to a snapshot: memory, running processes and files.\n"
             "Executions running in the sandbox end. A damaged snapshot fails with\n"
             "snapshot_invalid and leaves the sandbox as it was.\n\n"
             "Options:\n"
             "  --in SANDBOX  the sandbox to roll back\n"
             "  --json        print the sandbox object\n"
             "  --host HOST   daemon socket (unix:/path)\n"
             "  -h, --help    show this help\n");
}

int cmd_snapshot_restore(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_restore(stdout);
    return 0;
  }
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'},
      {"host", required_argument, NULL, 'H'},
      {"in", required_argument, NULL, 'i'},
      {0},
  };
  cli_opts o;
  int r = cli_getopt(argc, argv, "", opts, help_restore, &o);
  if (r) return r;
  if (!o.in || optind + 1 != argc)
    return cli_usage_error(help_restore, "give one snapshot and --in SANDBOX");
  _cleanup_json_ json_t *res = NULL;
  r = cli_connect_call(o.host, "snapshot.restore",
                       json_pack("{s:s, s:s}", "snapshot", argv[optind], "sandbox_id", o.in), NULL,
                       &res);
  if (r) return r;
  if (o.json)
    cli_print_json(res);
  else
    printf("%s\n", cli_json_str(res, "id", ""));
  return 0;
}
