/* bench/exec-rtt: `exec true` round trips through the client library (the C
 * client the CLI uses), for bench/foundation.py: the control API's host
 * overhead without an interpreter's own cost in the client.
 *
 * Usage: exec-rtt SOCKET SANDBOX_ID N
 * Runs N executions of `true` one at a time (execution.create with attach,
 * waiting for execution.exit) and prints one JSON object: the medians of
 * the round trip and of its parts by the execution's timing_ms.agent
 * (client+daemon, transit, the agent's own work, the agent's spawn). */
#include "client/client.h"
#include "util/macro.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
  if (argc != 4 || atoi(argv[3]) <= 0) {
    fprintf(stderr, "usage: exec-rtt SOCKET SANDBOX_ID N\n");
    return 2;
  }
  int n = atoi(argv[3]);
  cr_error *err = NULL;
  api_client *c = NULL;
  if (api_client_connect(argv[1], false, &c, &err) < 0) {
    fprintf(stderr, "exec-rtt: %s\n", err->message);
    return 1;
  }
  double *rt = calloc((size_t)n, sizeof(double)), *cd = calloc((size_t)n, sizeof(double));
  double *tr = calloc((size_t)n, sizeof(double)), *ag = calloc((size_t)n, sizeof(double));
  double *sp = calloc((size_t)n, sizeof(double));
  if (!rt || !cd || !tr || !ag || !sp) return 1;
  for (int i = 0; i < n; i++) {
    double t0 = now_ms();
    json_t *p = json_pack("{s:s, s:[s]}", "sandbox_id", argv[2], "argv", "true");
    if (api_client_request_async(c, "execution.create", p, NULL, &err) < 0) break;
    json_t *ex = NULL;
    while (!ex) {
      json_t *m = NULL;
      if (api_client_read_message(c, 60000, &m, &err) <= 0) {
        fprintf(stderr, "exec-rtt: %s\n", err ? err->message : "timed out");
        return 1;
      }
      if (json_object_get(m, "error")) {
        fprintf(stderr, "exec-rtt: execution.create failed\n");
        return 1;
      }
      const char *meth = json_string_value(json_object_get(m, "method"));
      if (meth && !strcmp(meth, "execution.exit"))
        ex = json_incref(json_object_get(json_object_get(m, "params"), "execution"));
      json_decref(m);
    }
    double t = now_ms() - t0;
    json_t *a = json_object_get(json_object_get(ex, "timing_ms"), "agent");
    double rtt = json_number_value(json_object_get(a, "round_trip"));
    double tot = json_number_value(json_object_get(a, "total"));
    double spn = json_number_value(json_object_get(a, "spawn"));
    rt[i] = t, cd[i] = t - rtt, tr[i] = rtt - tot, ag[i] = tot - spn, sp[i] = spn;
    json_decref(ex);
  }
  double *all = calloc((size_t)n, sizeof(double));
  if (!all) return 1;
  for (int i = 0; i < n; i++) all[i] = cd[i] + tr[i] + ag[i];
  printf("{\"n\": %d, \"exec_true_ms\": %.3f, \"client_daemon\": %.3f, \"transit\": %.3f, "
         "\"agent_own\": %.3f, \"spawn\": %.3f, \"all_but_spawn\": %.3f}\n",
         n, median(rt, n), median(cd, n), median(tr, n), median(ag, n), median(sp, n),
         median(all, n));
  api_client_free(c);
  free(rt), free(cd), free(tr), free(ag), free(sp), free(all);
  return 0;
}
