/* cleanroom cache ls|prune|stats: the gateway's content cache
 * (docs/gateway.md). Works on the cache directory itself (its lock is shared
 * with the daemon), so it needs no running daemon. */
#include "cache/cache.h"
#include "cli/cli.h"
#include "util/macro.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int open_cache(cache **c) {
  const char *d = getenv("CLEANROOM_CACHE_DIR");
  cr_error *err = NULL;
  if (cache_open_local(d && *d ? d : NULL, 0, c, &err) < 0) {
    int r = cli_fail(err);
    cr_error_free(err);
    return r;
  }
  return 0;
}

/* --json and -h only. Returns 0, or an exit code. */
static int simple_opts(int argc, char **argv, void (*help)(FILE *), bool *json) {
  static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {0}};
  optind = 1;
  int ch;
  while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    if (ch == 'j') *json = true;
    else return cli_usage_error(help, "unknown option");
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
  fprintf(f, "Usage: cleanroom cache ls [--json]\n\n"
             "List the content cache's entries, most recently used first: KEY (the\n"
             "request identity), KIND, SIZE, LAST USED, SOURCE (the upstream URL).\n"
             "The cache is CLEANROOM_CACHE_DIR, else <data>/content-cache.\n\n"
             "Options:\n"
             "  --json      print {\"entries\": [{key, digest, size, kind, source, created, last_used}]}\n"
             "  -h, --help  show this help\n");
}

int cmd_cache_ls(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_ls(stdout);
    return 0;
  }
  bool json = false;
  int r = simple_opts(argc, argv, help_ls, &json);
  if (r) return r;
  cache *c = NULL;
  if ((r = open_cache(&c))) return r;
  json_t *l = cache_list(c);
  cache_close(c);
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
  fprintf(f, "Usage: cleanroom cache prune [--all | --keep BYTES] [--json]\n\n"
             "Remove the least recently used entries until at most BYTES remain\n"
             "(default: the cache's size limit, CLEANROOM_CACHE_MAX_BYTES, 10 GiB);\n"
             "--all empties the cache. Counters (hits, misses) are kept.\n\n"
             "Options:\n"
             "  --all         remove every entry\n"
             "  --keep BYTES  keep at most BYTES (suffixes K, M, G)\n"
             "  --json        print {\"removed\": N, \"stats\": {...}}\n"
             "  -h, --help    show this help\n");
}

int cmd_cache_prune(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_prune(stdout);
    return 0;
  }
  static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                       {"all", no_argument, NULL, 'a'},
                                       {"keep", required_argument, NULL, 'k'},
                                       {0}};
  bool json = false, all = false;
  long long keep = -1;
  optind = 1;
  int ch;
  while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    if (ch == 'j') json = true;
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
  cache *c = NULL;
  int r;
  if ((r = open_cache(&c))) return r;
  if (keep < 0 && !all) {
    json_t *st = cache_stats(c);
    keep = json_integer_value(json_object_get(st, "max_bytes"));
    json_decref(st);
  }
  size_t removed = 0;
  cr_error *err = NULL;
  if (cache_prune(c, all ? 0 : (uint64_t)keep, &removed, &err) < 0) {
    cache_close(c);
    r = cli_fail(err);
    cr_error_free(err);
    return r;
  }
  json_t *st = cache_stats(c);
  cache_close(c);
  if (json) {
    json_t *o = json_pack("{s:I, s:o}", "removed", (json_int_t)removed, "stats", st);
    print_json(o);
    json_decref(o);
  } else {
    printf("removed %zu entries; %lld entries, %lld bytes left\n", removed,
           (long long)json_integer_value(json_object_get(st, "entries")),
           (long long)json_integer_value(json_object_get(st, "bytes")));
    json_decref(st);
  }
  return 0;
}

static void help_stats(FILE *f) {
  fprintf(f, "Usage: cleanroom cache stats [--json]\n\n"
             "Show the content cache: directory, entries, bytes, size limit and the\n"
             "counters (hits, misses, stores, evictions) since it was created.\n\n"
             "Options:\n"
             "  --json      print {backend, dir, entries, bytes, max_bytes, hits, misses, stores, evictions}\n"
             "  -h, --help  show this help\n");
}

int cmd_cache_stats(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_stats(stdout);
    return 0;
  }
  bool json = false;
  int r = simple_opts(argc, argv, help_stats, &json);
  if (r) return r;
  cache *c = NULL;
  if ((r = open_cache(&c))) return r;
  json_t *st = cache_stats(c);
  cache_close(c);
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
