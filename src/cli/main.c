/* cleanroom: command table and dispatch. */
#include "cli/cli.h"
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Keep sorted by name; multi-word commands are matched word by word. */
static const cli_command commands[] = {
    {"cache ls", "List the gateway's content cache", cmd_cache_ls},
    {"cache prune", "Remove least recently used cache entries", cmd_cache_prune},
    {"cache stats", "Show the content cache's size and hit/miss counters", cmd_cache_stats},
    {"doctor", "Check the host: KVM, QEMU, kernel, agent, image, disk, daemon", cmd_doctor},
    {"events", "Show egress audit events (DNS decisions, rejected connections)", cmd_events},
    {"console", "Open an interactive terminal (sh) in a sandbox", cmd_console},
    {"exec", "Run a command in a sandbox (a new one unless --in)", cmd_exec},
    {"execution attach", "Stream an execution's output and exit status", cmd_execution_attach},
    {"execution inspect", "Show an execution", cmd_execution_inspect},
    {"execution ls", "List executions", cmd_execution_ls},
    {"image bump-ref", "Pin sandbox.image.ref in the policy to a digest", cmd_image_bump_ref},
    {"image import", "Import a rootfs tar, OCI layout or docker-save tar", cmd_image_import},
    {"image inspect", "Show a stored image", cmd_image_inspect},
    {"image ls", "List stored images", cmd_image_ls},
    {"image pull", "Pull an image from a registry into the store", cmd_image_pull},
    {"image resolve", "Print the digest-pinned form of an image ref", cmd_image_resolve},
    {"image rm", "Remove image refs and unused images", cmd_image_rm},
    {"image warm", "Build an image's boot template ahead of time", cmd_image_warm},
    {"mcp", "Serve MCP on stdio for agents (tools run in a sandbox)", cmd_mcp},
    {"policy show", "Print the compiled policy and its hash", cmd_policy_show},
    {"policy validate", "Validate cleanroom.yaml, reporting every error", cmd_policy_validate},
    {"sandbox create", "Create a persistent sandbox and print its id", cmd_sandbox_create},
    {"sandbox inspect", "Show a sandbox", cmd_sandbox_inspect},
    {"sandbox ls", "List sandboxes", cmd_sandbox_ls},
    {"sandbox rm", "Stop and remove sandboxes", cmd_sandbox_rm},
    {"serve", "Run the daemon (control API and MCP on a unix socket)", cmd_serve},
    {"snapshot create", "Snapshot a sandbox (memory, processes, files)", cmd_snapshot_create},
    {"snapshot inspect", "Show a snapshot", cmd_snapshot_inspect},
    {"snapshot ls", "List snapshots", cmd_snapshot_ls},
    {"snapshot restore", "Roll a sandbox back to a snapshot", cmd_snapshot_restore},
    {"snapshot rm", "Remove snapshots", cmd_snapshot_rm},
    {"status", "Show the last execution and its sandbox", cmd_status},
    {"template ls", "List boot templates", cmd_template_ls},
    {"template rm", "Remove boot templates", cmd_template_rm},
    {"version", "Print the version", cmd_version},
    {"workspace copy-in", "Copy local changes into a sandbox's workspace", cmd_workspace_copy_in},
    {"workspace copy-out", "Write a workspace's changes into the local checkout", cmd_workspace_copy_out},
    {"workspace diff", "Print a workspace's changes as a git patch", cmd_workspace_diff},
    {"workspace preview", "List a workspace's changed paths (A/M/D/T)", cmd_workspace_preview},
};

int cli_fail(const cr_error *err) {
  fprintf(stderr, "cleanroom: %s: %s\n", cr_error_reason(err),
          err && err->message ? err->message : "unknown error");
  return CLI_EXIT_FAILURE;
}

int cli_failf(const char *reason, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "cleanroom: %s: ", reason);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return CLI_EXIT_FAILURE;
}

int cli_usage_error(void (*help)(FILE *), const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("cleanroom: invalid_argument: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (help) help(stderr);
  return CLI_EXIT_USAGE;
}

bool cli_wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--")) return false;
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return true;
  }
  return false;
}

static void usage(FILE *f, const char *prefix) {
  fprintf(f, "Usage: cleanroom <command> [options]\n\n"
             "Run CI jobs and agents' commands in persistent Linux microVMs.\n\n"
             "Commands:\n");
  for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
    if (prefix && strncmp(commands[i].name, prefix, strlen(prefix)) != 0) continue;
    fprintf(f, "  %-22s %s\n", commands[i].name, commands[i].summary);
  }
  fprintf(f, "\nRun 'cleanroom <command> --help' for a command's options.\n");
}

/* Matches "a b" against argv[1], argv[2]; returns words used or 0. */
static int match(const char *name, int argc, char **argv) {
  int words = 0;
  const char *p = name;
  int i = 1;
  while (*p) {
    const char *sp = strchr(p, ' ');
    size_t n = sp ? (size_t)(sp - p) : strlen(p);
    if (i >= argc || strlen(argv[i]) != n || strncmp(argv[i], p, n) != 0) return 0;
    words++;
    i++;
    p = sp ? sp + 1 : p + n;
  }
  return words;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
      !strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout, NULL);
    return argc < 2 ? CLI_EXIT_USAGE : 0;
  }
  if (!strcmp(argv[1], "--version")) return cmd_version(1, argv);
  const cli_command *best = NULL;
  int best_words = 0;
  for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
    int w = match(commands[i].name, argc, argv);
    if (w > best_words) {
      best = &commands[i];
      best_words = w;
    }
  }
  if (!best) {
    /* "cleanroom sandbox" alone: list its subcommands */
    bool group = false;
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
      if (!strncmp(commands[i].name, argv[1], strlen(argv[1])) &&
          commands[i].name[strlen(argv[1])] == ' ')
        group = true;
    if (group) {
      usage(stdout, argv[1]);
      return CLI_EXIT_USAGE;
    }
    fprintf(stderr, "cleanroom: invalid_argument: unknown command '%s'; run 'cleanroom --help'\n",
            argv[1]);
    return CLI_EXIT_USAGE;
  }
  return best->run(argc - best_words, argv + best_words);
}
