/* cleanroom cache ls|prune|stats: the gateway's content cache
 * (docs/gateway.md), through the daemon (cache.list, cache.prune,
 * cache.stats: it owns the store). */
#include "cli/cli.h"
#include "cli/cmd-sandbox-common.h"
#include "util/macro.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --json, --host and -h only. Returns 0, or an exit code. */
static int simple_opts(int argc, char **argv, void (*help)(FILE *), bool *json,
                       const char **host) {
  static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                       {"host", required_argument, NULL, 'H'},
                                       {0}};
  optind = 1;
  int ch;
  while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    if (ch == 'j') *json = true;
    else if (ch == 'H') *host = optarg;
    else return cli_usage_error(help, "unknown or incomplete option '%s'", argv[optind - 1]);
  }
  if (optind < argc) return cli_usage_error(help, "unexpected argument '%s'", argv[optind]);
  return 0;
}

static void print_json(json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
  if (s) puts(s);
  free(s);
}

static void help_ls(FILE *f) {
  fprintf(f, "Usage: cleanroom cache ls [--json] [--host SOCKET]\n\n"
             "List the content cache's entries, most recently used first: KEY (the\n"
             "request identity), KIND, SIZE, LAST USED, SOURCE (the upstream URL).\n"
             "The cache is the daemon's CLEANROOM_CACHE_DIR, else <data>/content-cache;\n"
             "the daemon reads it (started if none runs).\n\n"
             "Options:\n"
             "  --json         print {\"entries\": [{key, digest, size, kind, source, created, last_used}]}\n"
             "  --host SOCKET  the daemon's socket\n"
             "  -h, --help     show this help\n");
}

int cmd_cache_ls(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_ls(stdout);
    return 0;
  }
  bool json = false;
  const char *host = NULL;
  int r = simple_opts(argc, argv, help_ls, &json, &host);
  if (r) return r;
  json_t *l = NULL;
  if ((r = cli_connect_call(host, "cache.list", json_object(), NULL, &l))) return r;
  if (json) {
    print_json(l);
  } else {
    printf("%-16s %-10s %10s %-20s %s\n", "KEY", "KIND", "SIZE", "LAST USED", "SOURCE");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(l, "entries"), i, e) {
      time_t t = (time_t)json_number_value(json_object_get(e, "last_used"));
      struct tm tm;
      char tb[32];
      gmtime_r(&t, &tm);
      strftime(tb, sizeof(tb), "%Y-%m-%dT%H:%M:%SZ", &tm);
      printf("%-16.16s %-10s %10lld %-20s %s\n", json_string_value(json_object_get(e, "key")),
             json_string_value(json_object_get(e, "kind")) ?: "-",
             (long long)json_integer_value(json_object_get(e, "size")), tb,
             json_string_value(json_object_get(e, "source")) ?: "-");
    }
  }
  json_decref(l);
  return 0;
}

static void help_prune(FILE *f) {
  fprintf(f, "Usage: cleanroom cache prune [--all | --keep BYTES] [--json] [--host SOCKET]\n\n"
             "Remove the least recently used entries until at most BYTES remain\n"
             "(default: the cache's size limit, CLEANROOM_CACHE_MAX_BYTES, 10 GiB);\n"
             "--all empties the cache. Counters (hits, misses) are kept.\n\n"
             "Options:\n"
             "  --all         remove every entry\n"
             "  --keep BYTES  keep at most BYTES (suffixes K, M, G)\n"
             "  --json         print {\"removed\": N, \"stats\": {...}}\n"
             "  --host SOCKET  the daemon's socket\n"
             "  -h, --help     show this help\n");
}

int cmd_cache_prune(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_prune(stdout);
    return 0;
  }
  static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                       {"all", no_argument, NULL, 'a'},
                                       {"keep", required_argument, NULL, 'k'},
                                       {"host", required_argument, NULL, 'H'},
                                       {0}};
  const char *host = NULL;
  bool json = false, all = false;
  long long keep = -1;
  optind = 1;
  int ch;
  while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    if (ch == 'j') json = true;
    else if (ch == 'H') host = optarg;
    else if (ch == 'a') all = true;
    else if (ch == 'k') {
      char *end;
      keep = strtoll(optarg, &end, 10);
      if (*end == 'K' || *end == 'k') keep <<= 10, end++;
      else if (*end == 'M' || *end == 'm') keep <<= 20, end++;
      else if (*end == 'G' || *end == 'g') keep <<= 30, end++;
      if (*end || keep < 0) return cli_usage_error(help_prune, "--keep wants a size in bytes");
    } else {
      return cli_usage_error(help_prune, "unknown option");
    }
  }
  if (optind < argc) return cli_usage_error(help_prune, "unexpected argument '%s'", argv[optind]);
  if (all && keep >= 0) return cli_usage_error(help_prune, "give --all or --keep, not both");
  json_t *params = json_pack("{s:b}", "all", all);
  if (keep >= 0) json_object_set_new(params, "keep_bytes", json_integer(keep));
  json_t *res = NULL;
  int r = cli_connect_call(host, "cache.prune", params, NULL, &res);
  if (r) return r;
  json_t *st = json_object_get(res, "stats");
  if (json) {
    print_json(res);
  } else {
    printf("removed %lld entries; %lld entries, %lld bytes left\n",
           (long long)json_integer_value(json_object_get(res, "removed")),
           (long long)json_integer_value(json_object_get(st, "entries")),
           (long long)json_integer_value(json_object_get(st, "bytes")));
  }
  json_decref(res);
  return 0;
}

static void help_stats(FILE *f) {
  fprintf(f, "Usage: cleanroom cache stats [--json] [--host SOCKET]\n\n"
             "Show the content cache: directory, entries, bytes, size limit and the\n"
             "counters (hits, misses, stores, evictions) since it was created.\n\n"
             "Options:\n"
             "  --json         print {backend, dir, entries, bytes, max_bytes, hits, misses, stores, evictions}\n"
             "  --host SOCKET  the daemon's socket\n"
             "  -h, --help     show this help\n");
}

int cmd_cache_stats(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_stats(stdout);
    return 0;
  }
  bool json = false;
  const char *host = NULL;
  int r = simple_opts(argc, argv, help_stats, &json, &host);
  if (r) return r;
  json_t *st = NULL;
  if ((r = cli_connect_call(host, "cache.stats", json_object(), NULL, &st))) return r;
  if (json) {
    print_json(st);
  } else {
    static const char *keys[] = {"backend", "dir", "entries", "bytes", "max_bytes",
                                 "hits", "misses", "stores", "evictions"};
    for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
      json_t *v = json_object_get(st, keys[i]);
      if (json_is_string(v)) printf("%-10s %s\n", keys[i], json_string_value(v));
      else printf("%-10s %lld\n", keys[i], (long long)json_integer_value(v));
    }
  }
  json_decref(st);
  return 0;
}
