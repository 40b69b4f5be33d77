/* Helpers shared by the daemon-facing CLI commands (see cmd-sandbox-common.h). */
#include "cli/cmd-sandbox-common.h"
#include "cli/cmd-policy-common.h"
#include "policy/policy.h"
#include "util/macro.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *cli_default_image(const char *opt) {
  if (opt && *opt) return opt;
  const char *e = getenv("CLEANROOM_IMAGE");
  if (e && *e) return e;
  return CLI_DEFAULT_IMAGE;
}

int cli_connect(const char *host, api_client **ret) {
  _cleanup_error_ cr_error *err = NULL;
  if (api_client_connect(host, true, ret, &err) < 0) return cli_fail(err);
  return 0;
}

int cli_connect_call(const char *host, const char *method, json_t *params,
                     api_client **ret_client, json_t **ret_result) {
  _cleanup_api_client_ api_client *c = NULL;
  int r = cli_connect(host, &c);
  if (r) {
    json_decref(params);
    return r;
  }
  r = cli_call(c, method, params, ret_result);
  if (r) return r;
  if (ret_client) *ret_client = TAKE_PTR(c);
  return 0;
}

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts,
               void (*help)(FILE *), cli_opts *ret) {
  *ret = (cli_opts){0};
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
    switch (o) {
    case 'j': ret->json = true; break;
    case 'l': ret->last = true; break;
    case 'a': ret->all = true; break;
    case 'i': ret->in = optarg; break;
    case 'N': ret->name = optarg; break;
    case 'H': ret->host = optarg; break;
    case 'f': break;
    default: return cli_usage_error(help, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  return 0;
}

int cli_inspect(int argc, char **argv, void (*help)(FILE *), const char *noun,
                const char *method, const char *id_key) {
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'},
      {"last", no_argument, NULL, 'l'},
      {"host", required_argument, NULL, 'H'},
      {0},
  };
  cli_opts o;
  int r = cli_getopt(argc, argv, "", opts, help, &o);
  if (r) return r;
  if ((o.last && optind != argc) || (!o.last && optind + 1 != argc))
    return cli_usage_error(help, "give exactly one %s ID or --last", noun);
  _cleanup_json_ json_t *res = NULL;
  r = cli_connect_call(o.host, method, json_pack("{s:s}", id_key, o.last ? "last" : argv[optind]),
                       NULL, &res);
  if (r) return r;
  cli_print_json(res);
  return 0;
}

int cli_opt_vcpus(const char *arg, int64_t *ret) {
  if (cli_parse_int(arg, 1, 256, ret) < 0)
    return cli_usage_error(NULL, "--vcpus wants 1..256, got '%s'", arg);
  return 0;
}

int cli_opt_memory(const char *arg, int64_t *ret_mib) {
  if (cli_parse_size_mib(arg, ret_mib) < 0)
    return cli_usage_error(NULL, "--memory wants MiB or a size like 1GiB, got '%s'", arg);
  return 0;
}

const char *cli_sandbox_image(json_t *sb, const char *fallback) {
  json_t *img = json_object_get(sb, "image");
  return json_is_string(img) ? json_string_value(img) : cli_json_str(img, "ref", fallback);
}

int cli_call(api_client *c, const char *method, json_t *params, json_t **ret_result) {
  _cleanup_error_ cr_error *err = NULL;
  if (api_client_call(c, method, params, NULL, NULL, ret_result, &err) < 0)
    return cli_fail(err);
  return 0;
}

void cli_print_json(json_t *j) {
  json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  fputc('\n', stdout);
  fflush(stdout);
}

int cli_parse_int(const char *s, int64_t min, int64_t max, int64_t *ret) {
  if (!s || !*s) return -EINVAL;
  char *end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end || end == s || v < min || v > max) return -EINVAL;
  *ret = v;
  return 0;
}

int cli_parse_size_mib(const char *s, int64_t *ret_mib) {
  if (!s || !isdigit((unsigned char)*s)) return -EINVAL;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) return -EINVAL;
  static const struct {
    const char *suffix;
    int shift; /* log2 of unit / MiB; -10 for KiB, -20 for bytes */
  } units[] = {
      {"", 0},     {"m", 0},   {"mi", 0},  {"mib", 0},  {"mb", 0},
      {"g", 10},   {"gi", 10}, {"gib", 10}, {"gb", 10}, {"t", 20},
      {"ti", 20},  {"tib", 20}, {"tb", 20},
  };
  for (size_t i = 0; i < ELEMENTSOF(units); i++) {
    if (strcasecmp(end, units[i].suffix) != 0) continue;
    if (v > (1ull << 40) >> units[i].shift) return -ERANGE;
    uint64_t mib = (uint64_t)v << units[i].shift;
    if (mib == 0) return -EINVAL;
    *ret_mib = (int64_t)mib;
    return 0;
  }
  return -EINVAL;
}

int cli_parse_duration_ms(const char *s, int64_t *ret_ms) {
  if (!s || !*s) return -EINVAL;
  int64_t total = 0;
  const char *p = s;
  bool any = false;
  while (*p) {
    if (!isdigit((unsigned char)*p)) return -EINVAL;
    char *end = NULL;
    errno = 0;
    double v = strtod(p, &end);
    if (errno || end == p || v < 0) return -EINVAL;
    p = end;
    int64_t mult;
    if (!strncmp(p, "ms", 2)) {
      mult = 1;
      p += 2;
    } else if (*p == 's') {
      mult = 1000;
      p++;
    } else if (*p == 'm') {
      mult = 60 * 1000;
      p++;
    } else if (*p == 'h') {
      mult = 3600 * 1000;
      p++;
    } else if (*p == '\0' && !any) {
      mult = 1000; /* bare number: seconds */
    } else {
      return -EINVAL;
    }
    double ms = v * (double)mult;
    if (ms > 1e12) return -ERANGE;
    total += (int64_t)ms;
    any = true;
  }
  if (total <= 0) return -EINVAL;
  *ret_ms = total;
  return 0;
}

const char *cli_format_age(const char *ts, char *buf, size_t size) {
  struct tm tm = {0};
  if (!ts || !strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm)) {
    snprintf(buf, size, "%s", ts ? ts : "-");
    return buf;
  }
  time_t then = timegm(&tm);
  long long d = (long long)(time(NULL) - then);
  if (d < 0) d = 0;
  if (d < 60)
    snprintf(buf, size, "%llds ago", d);
  else if (d < 3600)
    snprintf(buf, size, "%lldm ago", d / 60);
  else if (d < 86400)
    snprintf(buf, size, "%lldh ago", d / 3600);
  else
    snprintf(buf, size, "%lldd ago", d / 86400);
  return buf;
}

const char *cli_json_str(json_t *obj, const char *key, const char *fallback) {
  const char *s = json_string_value(json_object_get(obj, key));
  return s ? s : fallback;
}

static int sandbox_params(api_client *c, const char *policy_path, const char *image,
                          json_t *params) {
  _cleanup_free_ char *found = NULL, *warning = NULL;
  _cleanup_error_ cr_error *err = NULL;
  if (policy_locate(policy_path, &found, &warning, &err) < 0) {
    if (policy_path || strcmp(cr_error_reason(err), CR_E_POLICY_NOT_FOUND)) return cli_fail(err);
    found = NULL; /* no policy in this repository: plain sandbox */
  }
  if (warning) fprintf(stderr, "cleanroom: warning: %s\n", warning);
  const char *pimage = NULL;
  _cleanup_policy_ policy *p = NULL;
  if (found) {
    _cleanup_(policy_diags_freep) policy_diags *diags = NULL;
    cr_error_free(TAKE_PTR(err));
    if (policy_load_file(found, &p, &diags, &err) < 0) {
      cli_policy_print_diags(diags);
      return cli_fail(err);
    }
    json_t *compiled = policy_compile_json(p);
    if (!compiled) return cli_failf(CR_E_INTERNAL, "compiling %s failed", found);
    json_object_set_new(params, "policy", compiled);
    pimage = policy_image_ref(p);
  }
  const char *e = getenv("CLEANROOM_IMAGE");
  const char *img = image && *image ? image : pimage ? pimage : e && *e ? e : CLI_DEFAULT_IMAGE;
  json_object_set_new(params, "image", json_string(img));
  /* the daemon pulls a missing image that names a registry: give it this
   * host's credentials for that registry (never passed to the guest) */
  if (cli_image_needs_pull(c, img)) {
    cr_error *e2 = NULL;
    if (cli_registry_auth(img, NULL, params, &e2) < 0) {
      fprintf(stderr, "cleanroom: warning: registry credentials: %s\n", e2->message);
      cr_error_free(e2);
    }
  }
  return 0;
}

int cli_sandbox_create_params(api_client *c, const char *policy_path, const char *image,
                              int64_t vcpus, int64_t mem_mib, json_t **ret_params) {
  _cleanup_json_ json_t *params = json_object();
  int r = sandbox_params(c, policy_path, image, params);
  if (r) return r;
  if (vcpus) json_object_set_new(params, "vcpus", json_integer(vcpus));
  if (mem_mib) json_object_set_new(params, "memory_mib", json_integer(mem_mib));
  *ret_params = TAKE_PTR(params);
  return 0;
}
