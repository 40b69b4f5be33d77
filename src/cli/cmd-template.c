/* cleanroom template ls|rm and image warm: boot templates (a VM booted once
 * per image and machine shape, cloned by `sandbox create`). */
#include "cli/cmd-sandbox-common.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void help_ls(FILE *f) {
  fprintf(f, "Usage: cleanroom template ls [--json] [--host HOST]\n\n"
             "List boot templates: KEY, IMAGE, VCPUS, MEMORY, RAM (allocated), VALID.\n"
             "A template is keyed by image digest, kernel, initramfs (agent build),\n"
             "QEMU binary, accelerator, vcpus, memory and device set; one whose parts\n"
             "changed or whose image was removed is never used (and is removed).\n\n"
             "Options:\n"
             "  --json       print {\"templates\": [...]}\n"
             "  --host HOST  daemon socket (unix:/path)\n"
             "  -h, --help   show this help\n");
}

int cmd_template_ls(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_ls(stdout);
    return 0;
  }
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'},
      {"host", required_argument, NULL, 'H'},
      {0},
  };
  cli_opts o;
  int r = cli_getopt(argc, argv, "+", opts, help_ls, &o);
  if (r) return r;
  if (optind < argc) return cli_usage_error(NULL, "unexpected argument '%s'", argv[optind]);
  _cleanup_json_ json_t *res = NULL;
  r = cli_connect_call(o.host, "template.list", NULL, NULL, &res);
  if (r) return r;
  if (o.json) {
    cli_print_json(res);
    return 0;
  }
  printf("%-26s %-20s %5s %7s %8s %s\n", "KEY", "IMAGE", "VCPUS", "MEMORY", "RAM", "VALID");
  size_t i;
  json_t *t;
  json_array_foreach(json_object_get(res, "templates"), i, t) {
    const char *digest = cli_json_str(t, "image_digest", "-");
    if (!strncmp(digest, "sha256:", 7)) digest += 7;
    char img[20], mem[16], ram[16];
    snprintf(img, sizeof(img), "%.12s", digest);
    snprintf(mem, sizeof(mem), "%lldM", (long long)json_integer_value(json_object_get(t, "memory_mib")));
    snprintf(ram, sizeof(ram), "%lldM",
             (long long)(json_integer_value(json_object_get(t, "ram_bytes")) >> 20));
    bool valid = json_is_true(json_object_get(t, "valid"));
    printf("%-26s %-20s %5lld %7s %8s %s\n", cli_json_str(t, "key", "-"), img,
           (long long)json_integer_value(json_object_get(t, "vcpus")), mem, ram,
           valid ? "yes" : cli_json_str(t, "invalid_reason", "no"));
  }
  return 0;
}

static void help_rm(FILE *f) {
  fprintf(f, "Usage: cleanroom template rm KEY... | --all [--host HOST]\n\n"
             "Remove boot templates (by key or a prefix of at least 4 characters).\n"
             "Running clones are not affected; the next create builds a new one.\n");
}

int cmd_template_rm(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_rm(stdout);
    return 0;
  }
  static const struct option opts[] = {
      {"all", no_argument, NULL, 'a'},
      {"host", required_argument, NULL, 'H'},
      {0},
  };
  cli_opts o;
  int r = cli_getopt(argc, argv, "", opts, help_rm, &o);
  if (r) return r;
  if (o.all == (optind < argc)) return cli_usage_error(help_rm, "give template keys or --all");
  _cleanup_api_client_ api_client *c = NULL;
  r = cli_connect(o.host, &c);
  if (r) return r;
  int rc = 0;
  for (int i = o.all ? argc - 1 : optind; i < argc; i++) {
    const char *key = o.all ? "all" : argv[i];
    _cleanup_json_ json_t *res = NULL;
    if (cli_call(c, "template.remove", json_pack("{s:s}", "key", key), &res)) {
      rc = CLI_EXIT_FAILURE;
      continue;
    }
    printf("removed %lld\n", (long long)json_integer_value(json_object_get(res, "removed")));
  }
  return rc;
}

static void help_warm(FILE *f) {
  fprintf(f, "Usage: cleanroom image warm [REF] [--vcpus N] [--memory SIZE] [--json] [--host HOST]\n\n"
             "Build the boot template for an image ahead of time, so the next\n"
             "'sandbox create' with the same image, vcpus and memory is a clone.\n"
             "Prints the template key.\n\n"
             "Options:\n"
             "  --vcpus N      virtual CPUs (default 1)\n"
             "  --memory SIZE  guest memory (default 512MiB)\n"
             "  --json         print the template object\n"
             "  --host HOST    daemon socket (unix:/path)\n"
             "  -h, --help     show this help\n");
}

int cmd_image_warm(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_warm(stdout);
    return 0;
  }
  enum { O_VCPUS = 1000, O_MEMORY };
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'},
      {"host", required_argument, NULL, 'H'},
      {"vcpus", required_argument, NULL, O_VCPUS},
      {"memory", required_argument, NULL, O_MEMORY},
      {0},
  };
  /* cli_getopt knows only the shared options: take ours first */
  int64_t vcpus = 0, mem = 0;
  bool json = false;
  const char *host = NULL, *ref = NULL;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'j': json = true; break;
    case 'H': host = optarg; break;
    case O_VCPUS:
      if (cli_opt_vcpus(optarg, &vcpus)) return CLI_EXIT_USAGE;
      break;
    case O_MEMORY:
      if (cli_opt_memory(optarg, &mem)) return CLI_EXIT_USAGE;
      break;
    default: return cli_usage_error(help_warm, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) ref = argv[optind++];
  if (optind < argc) return cli_usage_error(NULL, "unexpected argument '%s'", argv[optind]);
  json_t *params = json_object();
  json_object_set_new(params, "image", json_string(cli_default_image(ref)));
  if (vcpus) json_object_set_new(params, "vcpus", json_integer(vcpus));
  if (mem) json_object_set_new(params, "memory_mib", json_integer(mem));
  _cleanup_json_ json_t *res = NULL;
  int r = cli_connect_call(host, "image.warm", params, NULL, &res);
  if (r) return r;
  if (json)
    cli_print_json(res);
  else
    printf("%s\n", cli_json_str(res, "key", ""));
  return 0;
}
