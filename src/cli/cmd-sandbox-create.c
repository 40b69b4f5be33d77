/* cleanroom sandbox create: boot a persistent sandbox and print its id. */
#include "cli/cmd-policy-common.h"
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void help(FILE *f) {
  fprintf(f,
          "Usage: cleanroom sandbox create [options]\n\n"
          "Create a persistent sandbox (a microVM) and print its id once it is ready.\n\n"
          "Options:\n"
          "  --image REF      image to boot (default: the policy's sandbox.image.ref,\n"
          "                   else $CLEANROOM_IMAGE or %s)\n"
          "  --policy FILE    policy (default: cleanroom.yaml, then\n"
          "                   .buildkite/cleanroom.yaml, at the repository root); its\n"
          "                   image, resources and network rules apply\n"
          "  --vcpus N        virtual CPUs\n"
          "  --memory SIZE    guest memory: MiB (512) or with a unit (512MiB, 1GiB)\n"
          "  --cold           boot the kernel instead of cloning the image's boot\n"
          "                   template (templates: 'cleanroom template ls')\n"
          "  --from-snapshot SNAPSHOT\n"
          "                   fork: a new sandbox running from a snapshot (its memory,\n"
          "                   processes and files); image, vcpus and memory are the\n"
          "                   snapshot's, and so is its policy unless --policy names one\n"
          "  --progress       show boot progress on stderr (default when stderr is a tty)\n"
          "  --no-progress    never show progress\n"
          "  --json           print the whole sandbox object as JSON\n"
          "  --host HOST      daemon socket (unix:/path); default $CLEANROOM_HOST or the\n"
          "                   local daemon, started on demand\n"
          "  -h, --help       show this help\n",
          CLI_DEFAULT_IMAGE);
}

static void on_progress(const char *method, json_t *params, void *ud) {
  bool *show = ud;
  if (!*show || strcmp(method, "sandbox.progress") != 0) return;
  const char *phase = cli_json_str(params, "phase", "");
  const char *msg = cli_json_str(params, "message", "");
  fprintf(stderr, "cleanroom: %s%s%s\n", phase, *msg ? ": " : "", msg);
}

int cmd_sandbox_create(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  enum { O_IMAGE = 1000, O_VCPUS, O_MEMORY, O_JSON, O_PROGRESS, O_NO_PROGRESS, O_HOST, O_POLICY, O_COLD, O_FROM };
  static const struct option opts[] = {
      {"image", required_argument, NULL, O_IMAGE},
      {"vcpus", required_argument, NULL, O_VCPUS},
      {"memory", required_argument, NULL, O_MEMORY},
      {"json", no_argument, NULL, O_JSON},
      {"progress", no_argument, NULL, O_PROGRESS},
      {"no-progress", no_argument, NULL, O_NO_PROGRESS},
      {"host", required_argument, NULL, O_HOST},
      {"policy", required_argument, NULL, O_POLICY},
      {"cold", no_argument, NULL, O_COLD},
      {"from-snapshot", required_argument, NULL, O_FROM},
      {0},
  };
  const char *image = NULL, *host = NULL, *policy_path = NULL, *from = NULL;
  bool cold = false;
  int64_t vcpus = 0, mem = 0;
  bool json = false, progress = isatty(STDERR_FILENO);
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    switch (o) {
    case O_IMAGE: image = optarg; break;
    case O_POLICY: policy_path = optarg; break;
    case O_VCPUS:
      if (cli_opt_vcpus(optarg, &vcpus)) return CLI_EXIT_USAGE;
      break;
    case O_MEMORY:
      if (cli_opt_memory(optarg, &mem)) return CLI_EXIT_USAGE;
      break;
    case O_JSON: json = true; break;
    case O_PROGRESS: progress = true; break;
    case O_NO_PROGRESS: progress = false; break;
    case O_HOST: host = optarg; break;
    case O_COLD: cold = true; break;
    case O_FROM: from = optarg; break;
    default: return cli_usage_error(help, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_usage_error(NULL, "unexpected argument '%s'", argv[optind]);

  _cleanup_api_client_ api_client *c = NULL;
  int r = cli_connect(host, &c);
  if (r) return r;
  if (from && (image || vcpus || mem || cold))
    return cli_usage_error(NULL, "--from-snapshot takes image, vcpus and memory from the snapshot");
  json_t *params = NULL;
  if (from) {
    params = json_pack("{s:s}", "from_snapshot", from);
    if (policy_path) { /* else the fork keeps the snapshot's policy */
      _cleanup_policy_ policy *p = NULL;
      _cleanup_(policy_diags_freep) policy_diags *diags = NULL;
      _cleanup_error_ cr_error *perr = NULL;
      if (policy_load_file(policy_path, &p, &diags, &perr) < 0) {
        cli_policy_print_diags(diags);
        json_decref(params);
        return cli_fail(perr);
      }
      json_t *compiled = policy_compile_json(p);
      if (!compiled) {
        json_decref(params);
        return cli_failf(CR_E_INTERNAL, "compiling %s failed", policy_path);
      }
      json_object_set_new(params, "policy", compiled);
    }
  } else {
    r = cli_sandbox_create_params(c, policy_path, image, vcpus, mem, &params);
    if (r) return r;
    if (cold) json_object_set_new(params, "cold", json_true());
  }

  _cleanup_error_ cr_error *err = NULL;
  _cleanup_json_ json_t *sb = NULL;
  if (api_client_call(c, "sandbox.create", params, on_progress, &progress, &sb, &err) < 0)
    return cli_fail(err);
  if (json)
    cli_print_json(sb);
  else
    printf("%s\n", cli_json_str(sb, "id", ""));
  return 0;
}
