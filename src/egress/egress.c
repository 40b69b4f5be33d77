/* Per-sandbox egress: pool, TAP, nftables, DNS resolver, audit events
 * (egress.h). Runs on the daemon's loop; the nftables and ioctl calls are
 * short local steps. */
#include "egress/egress.h"
#include "egress/dns.h"
#include "egress/evlog.h"
#include "egress/netif.h"
#include "egress/nflog.h"
#include "egress/nft.h"
#include "policy/policy.h"
#include "util/log.h"
#include "util/clock.h"
#include "util/paths.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>

#define MAX_SLOTS 16384
#define MAX_PENDING 64
#define PENDING_TIMEOUT_MS 4000
#define MAX_RESOLVED 1024
#define MAX_EVENTS 4096
#define MAX_PORTS_PER_NAME 64

typedef struct pending {
  bool used;
  uint16_t up_id;
  struct sockaddr_in client;
  dns_question q;
  uint8_t query[300];
  uint64_t t0_ms;
} pending;

typedef struct resolved {
  char name[DNS_MAX_NAME + 1];
  uint8_t addr[4];
  uint16_t port;
  uint64_t expires_ms;
} resolved;

struct egress_sbx {
  egress *e;
  char id[32];
  char tap[16];
  int slot;
  bool announced; /* an attach event went out (a pool's reserved network
                   * has none until a sandbox takes it) */
  uint8_t host[4], guest[4];
  char guest_cidr[24], host_text[16];
  policy *pol;
  char *pol_text;       /* pol's source (policy_parse takes it: a copy for other threads) */
  char *rules;          /* the nftables commands last applied (install_rules) */
  json_t *allow, *deny; /* compiled rules (borrowed from the policy json, increfed) */
  uint16_t ports[MAX_PORTS_PER_NAME];
  size_t n_ports;
  uv_udp_t listen, up;
  uv_timer_t timer;
  int handles;
  bool listening;
  pending pend[MAX_PENDING];
  resolved *res;
  size_t n_res;
  /* DNS audit events: a token bucket (DNS_EV_RATE per second, DNS_EV_BURST)
   * so that a guest flooding queries cannot flood the log and the disk; the
   * events it held back are counted into one "suppressed" event */
  double ev_tokens;
  uint64_t ev_last_ms;
  uint64_t ev_suppressed;
};

typedef struct event {
  uint64_t seq;
  json_t *j;
} event;

struct egress {
  uv_loop_t *loop;
  char table[33];
  uint32_t pool;   /* host order */
  unsigned pool_prefix;
  struct sockaddr_in upstream;
  bool have_upstream;
  unsigned min_ttl;
  bool base_ready;
  unsigned nflog_group;
  uint16_t gateway_port;
  int nflog_fd;
  uv_poll_t nflog_poll;
  bool nflog_on;
  egress_sbx **sbx;
  size_t n_sbx;
  event ev[MAX_EVENTS];
  size_t ev_head, ev_n;
  uint64_t ev_seq;
  egress_evlog *log; /* <data>/egress/events.jsonl */
  char *log_dir;
  bool log_failed;
  bool capable; /* egress_host_capable() was true once */
};

/* ---- events */

static void event_add(egress *e, json_t *j);
void egress_event_add(egress *e, json_t *j) { event_add(e, j); }
static void ring_push(egress *e, uint64_t seq, json_t *j) {
  size_t idx = (e->ev_head + e->ev_n) % MAX_EVENTS;
  if (e->ev_n == MAX_EVENTS) {
    json_decref(e->ev[e->ev_head].j);
    e->ev_head = (e->ev_head + 1) % MAX_EVENTS;
    idx = (e->ev_head + e->ev_n - 1) % MAX_EVENTS;
  } else {
    e->ev_n++;
  }
  e->ev[idx] = (event){seq, j};
}

static void event_add(egress *e, json_t *j) {
  if (!j) return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  char tbuf[40];
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
  char full[64];
  snprintf(full, sizeof(full), "%s.%03ldZ", tbuf, ts.tv_nsec / 1000000);
  json_object_set_new(j, "time", json_string(full));
  json_object_set_new(j, "seq", json_integer((json_int_t)++e->ev_seq));
  ring_push(e, e->ev_seq, j);
  int r = egress_evlog_append(e->log, j);
  if (r < 0 && !e->log_failed) /* once until it works again */
    log_warn("egress: writing the event log in %s: %s (events stay in memory)", e->log_dir,
             strerror(-r));
  e->log_failed = r < 0;
  char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  log_info("egress event %s", s ? s : "");
  free(s);
}

static void event_loaded(json_t *j, void *ud) {
  egress *e = ud;
  uint64_t seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
  ring_push(e, seq, json_incref(j));
  if (seq > e->ev_seq) e->ev_seq = seq;
}

static bool event_matches(const event *ev, const char *id, const char *action) {
  if (id) {
    const char *sid = json_string_value(json_object_get(ev->j, "sandbox"));
    if (!sid || strcmp(sid, id)) return false;
  }
  if (action) {
    const char *a = json_string_value(json_object_get(ev->j, "action"));
    if (!a || strcmp(a, action)) return false;
  }
  return true;
}

json_t *egress_events(egress *e, const char *id, const char *action, uint64_t since, size_t max) {
  json_t *a = json_array();
  if (!e) return a;
  /* newest max matching events, oldest first */
  size_t take = 0;
  size_t start = e->ev_n;
  for (size_t k = e->ev_n; k > 0 && take < max; k--) {
    event *ev = &e->ev[(e->ev_head + k - 1) % MAX_EVENTS];
    if (ev->seq <= since) break;
    if (!event_matches(ev, id, action)) continue;
    take++;
    start = k - 1;
  }
  for (size_t k = start; k < e->ev_n && take > 0; k++) {
    event *ev = &e->ev[(e->ev_head + k) % MAX_EVENTS];
    if (ev->seq <= since || !event_matches(ev, id, action)) continue;
    json_array_append(a, ev->j);
    take--;
  }
  return a;
}

uint64_t egress_events_last(egress *e) { return e ? e->ev_seq : 0; }

/* ---- configuration */

static int parse_ip4(const char *s, uint8_t out[4]) {
  struct in_addr a;
  if (inet_pton(AF_INET, s, &a) != 1) return -EINVAL;
  memcpy(out, &a, 4);
  return 0;
}

static int parse_hostport(const char *s, struct sockaddr_in *ret) {
  char buf[64];
  snprintf(buf, sizeof(buf), "%s", s);
  unsigned port = 53;
  char *colon = strchr(buf, ':');
  if (colon) {
    *colon = '\0';
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || p == 0 || p > 65535) return -EINVAL;
    port = (unsigned)p;
  }
  memset(ret, 0, sizeof(*ret));
  ret->sin_family = AF_INET;
  ret->sin_port = htons((uint16_t)port);
  return inet_pton(AF_INET, buf, &ret->sin_addr) == 1 ? 0 : -EINVAL;
}

static bool resolv_conf_upstream(struct sockaddr_in *ret) {
  FILE *f = fopen("/etc/resolv.conf", "re");
  if (!f) return false;
  char line[256];
  bool ok = false;
  while (!ok && fgets(line, sizeof(line), f)) {
    char ns[64];
    if (sscanf(line, " nameserver %63s", ns) == 1 && parse_hostport(ns, ret) == 0) ok = true;
  }
  fclose(f);
  return ok;
}

int egress_new(uv_loop_t *loop, egress **ret, cr_error **err) {
  egress *e = calloc(1, sizeof(*e));
  if (!e) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "egress");
  e->loop = loop;
  const char *t = getenv("CLEANROOM_EGRESS_TABLE");
  if (!t || !*t) t = "cleanroom";
  if (!egress_nft_name_valid(t)) {
    free(e);
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "CLEANROOM_EGRESS_TABLE=%s: letters, digits and '_' only", t);
  }
  snprintf(e->table, sizeof(e->table), "%s", t);
  const char *pool = getenv("CLEANROOM_EGRESS_POOL");
  if (!pool || !*pool) pool = "10.213.0.0/16";
  char pbuf[40];
  snprintf(pbuf, sizeof(pbuf), "%s", pool);
  char *slash = strchr(pbuf, '/');
  uint8_t pa[4];
  unsigned long plen = 0;
  if (slash) {
    *slash = '\0';
    plen = strtoul(slash + 1, NULL, 10);
  }
  if (!slash || parse_ip4(pbuf, pa) < 0 || plen < 8 || plen > 30) {
    free(e);
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "CLEANROOM_EGRESS_POOL=%s: want an IPv4 CIDR between /8 and /30", pool);
  }
  e->pool_prefix = (unsigned)plen;
  e->pool = ((uint32_t)pa[0] << 24 | (uint32_t)pa[1] << 16 | (uint32_t)pa[2] << 8 | pa[3]) &
            (~0u << (32 - plen));
  const char *up = getenv("CLEANROOM_DNS_UPSTREAM");
  if (up && *up) {
    if (parse_hostport(up, &e->upstream) < 0) {
      free(e);
      return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                          "CLEANROOM_DNS_UPSTREAM=%s: want an IPv4 address[:port]", up);
    }
    e->have_upstream = true;
  } else {
    e->have_upstream = resolv_conf_upstream(&e->upstream);
  }
  e->nflog_fd = -1;
  e->nflog_group = 2213;
  const char *ng = getenv("CLEANROOM_EGRESS_NFLOG_GROUP");
  if (ng && *ng) {
    unsigned long v = strtoul(ng, NULL, 10);
    if (v >= 1 && v <= 65535) e->nflog_group = (unsigned)v;
  }
  e->min_ttl = 60;
  const char *mt = getenv("CLEANROOM_DNS_MIN_TTL");
  if (mt && *mt) {
    unsigned long v = strtoul(mt, NULL, 10);
    if (v >= 1 && v <= 86400) e->min_ttl = (unsigned)v;
  }
  /* the audit log on disk: the newest events come back after a restart */
  size_t log_max = EGRESS_EVLOG_DEFAULT_MAX;
  const char *lm = getenv("CLEANROOM_EGRESS_EVENTS_MAX_BYTES");
  if (lm && *lm) {
    unsigned long long v = strtoull(lm, NULL, 10);
    if (v >= 4096 && v <= (1ull << 30)) log_max = (size_t)v;
  }
  e->log_dir = cr_data_path("egress");
  e->log = e->log_dir ? egress_evlog_new(e->log_dir, log_max) : NULL;
  if (!e->log) {
    free(e->log_dir);
    free(e);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "egress");
  }
  egress_evlog_load(e->log, MAX_EVENTS, event_loaded, e);
  *ret = e;
  return 0;
}

static void nflog_closed(uv_handle_t *h) {
  egress *e = h->data;
  free(e->sbx);
  free(e);
}

void egress_free(egress *e) {
  if (!e) return;
  for (size_t i = 0; i < e->ev_n; i++) json_decref(e->ev[(e->ev_head + i) % MAX_EVENTS].j);
  e->ev_n = 0;
  egress_evlog_free(TAKE_PTR(e->log));
  free(TAKE_PTR(e->log_dir));
  if (e->nflog_on) {
    e->nflog_on = false;
    close(e->nflog_fd);
    uv_close((uv_handle_t *)&e->nflog_poll, nflog_closed);
    return;
  }
  free(e->sbx);
  free(e);
}

bool egress_host_capable(const char **why) {
  const char *off = getenv("CLEANROOM_EGRESS");
  if (off && !strcmp(off, "off")) {
    if (why) *why = "egress is turned off on this host (CLEANROOM_EGRESS=off)";
    return false;
  }
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2] = {0};
  if (syscall(SYS_capget, &h, d) < 0 || !(d[0].effective & (1u << CAP_NET_ADMIN))) {
    if (why) *why = "needs root or CAP_NET_ADMIN (TAP devices, nftables)";
    return false;
  }
  if (access("/dev/net/tun", R_OK | W_OK) < 0) {
    if (why) *why = "/dev/net/tun is missing (modprobe tun)";
    return false;
  }
  /* an nft run costs ~1 ms: once nftables worked it is taken to stay usable
   * (a create with network rules asks every time) */
  static bool nft_ok;
  cr_error *err = NULL;
  if (!nft_ok && egress_nft_run("list tables\n", &err) < 0) {
    cr_error_free(err);
    if (why) *why = "nftables is not usable (kernel nf_tables, libnftables)";
    return false;
  }
  nft_ok = true;
  return true;
}

bool egress_policy_wants_network(json_t *pol) {
  json_t *net = json_object_get(json_object_get(pol, "sandbox"), "network");
  if (!net) return false;
  if (json_array_size(json_object_get(net, "allow")) > 0) return true;
  const char *d = json_string_value(json_object_get(net, "default"));
  return d && !strcmp(d, "allow");
}

/* ---- policy from its compiled form */

/* The compiled network section back into a policy document (JSON is YAML)
 * so that policy_match() decides exactly as the policy compiler defined. */
/* Compiled rules ({host, kind, ports, reason}) back into policy entries
 * ({host, ports}). */
static json_t *rules_source(json_t *rules) {
  json_t *out = json_array();
  size_t i;
  json_t *r;
  json_array_foreach(rules, i, r) {
    json_t *o = json_pack("{s:O}", "host", json_object_get(r, "host"));
    json_t *ports = json_object_get(r, "ports");
    if (o && ports) json_object_set(o, "ports", ports);
    json_array_append_new(out, o);
  }
  return out;
}

static int policy_from_compiled(json_t *pol, policy **ret, char **ret_text, cr_error **err) {
  json_t *net = json_object_get(json_object_get(pol, "sandbox"), "network");
  json_t *src = json_pack("{s:i, s:{s:{s:s}}}", "version", 1, "sandbox", "network", "default",
                          json_string_value(json_object_get(net, "default")) ?: "deny");
  if (!src) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "policy");
  json_t *snet = json_object_get(json_object_get(src, "sandbox"), "network");
  static const char *lists[] = {"allow", "deny", "git_push"}; /* git_push: the gateway's */
  for (size_t l = 0; l < 3; l++) {
    json_t *out = rules_source(json_object_get(net, lists[l]));
    if (json_array_size(out)) json_object_set_new(snet, lists[l], out);
    else json_decref(out);
  }
  /* sandbox.secrets too: the gateway decides with this policy where the
   * host's credentials may go */
  json_t *secrets = json_object_get(json_object_get(pol, "sandbox"), "secrets");
  if (json_array_size(secrets)) {
    json_t *out = json_array();
    size_t i;
    json_t *sec;
    json_array_foreach(secrets, i, sec)
      json_array_append_new(out, json_pack("{s:O, s:o}", "name", json_object_get(sec, "name"),
                                           "hosts", rules_source(json_object_get(sec, "hosts"))));
    json_object_set_new(json_object_get(src, "sandbox"), "secrets", out);
  }
  char *txt = json_dumps(src, JSON_COMPACT);
  json_decref(src);
  if (!txt) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "policy");
  int r = policy_parse(txt, strlen(txt), "compiled policy", ret, NULL, err);
  if (r == 0 && ret_text) *ret_text = TAKE_PTR(txt);
  free(txt);
  return r < 0 ? cr_error_wrap(err, "egress: reading the compiled network policy") : 0;
}

/* IPv4 IP/CIDR rules of one list. IPv6 rules are not applied: IPv6 is
 * denied as a whole. */
static int cidrs_from(json_t *rules, egress_cidr **ret, size_t *ret_n) {
  size_t i, n = 0;
  json_t *r;
  egress_cidr *v = calloc(json_array_size(rules) + 1, sizeof(*v));
  if (!v) return -ENOMEM;
  json_array_foreach(rules, i, r) {
    const char *kind = json_string_value(json_object_get(r, "kind"));
    const char *host = json_string_value(json_object_get(r, "host"));
    if (!kind || !host || (strcmp(kind, "ip") && strcmp(kind, "cidr"))) continue;
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", host);
    unsigned prefix = 32;
    char *slash = strchr(buf, '/');
    if (slash) {
      *slash = '\0';
      prefix = (unsigned)strtoul(slash + 1, NULL, 10);
    }
    if (prefix > 32 || parse_ip4(buf, v[n].addr) < 0) continue;
    v[n].prefix = prefix;
    json_t *ports = json_object_get(r, "ports");
    size_t np = json_array_size(ports);
    if (np) {
      v[n].ports = calloc(np, sizeof(uint16_t));
      if (!v[n].ports) continue;
      for (size_t k = 0; k < np; k++)
        v[n].ports[k] = (uint16_t)json_integer_value(json_array_get(ports, k));
      v[n].n_ports = np;
    }
    n++;
  }
  *ret = v;
  *ret_n = n;
  return 0;
}

static void cidrs_free(egress_cidr *v, size_t n) {
  for (size_t i = 0; v && i < n; i++) free(v[i].ports);
  free(v);
}

/* The ports that any allow rule names (80 and 443 for rules without). */
static void collect_ports(egress_sbx *s, json_t *allow) {
  size_t i;
  json_t *r;
  s->n_ports = 0;
  json_array_foreach(allow, i, r) {
    json_t *ports = json_object_get(r, "ports");
    uint16_t def[2] = {80, 443};
    size_t np = ports ? json_array_size(ports) : 2;
    for (size_t k = 0; k < np; k++) {
      uint16_t p = ports ? (uint16_t)json_integer_value(json_array_get(ports, k)) : def[k];
      bool have = false;
      for (size_t j = 0; j < s->n_ports; j++) have |= s->ports[j] == p;
      if (!have && p && s->n_ports < MAX_PORTS_PER_NAME) s->ports[s->n_ports++] = p;
    }
  }
}

/* ---- resolver */

/* The same bound as the nftables log rules put on connection events. */
#define DNS_EV_RATE 20.0
#define DNS_EV_BURST 40.0

/* May one more DNS event of s be written now? When it may after some were
 * held back, their count goes out first as a "suppressed" event. */
static bool dns_ev_admit(egress_sbx *s) {
  uint64_t now = cr_mono_ms();
  if (s->ev_last_ms == 0) s->ev_tokens = DNS_EV_BURST;
  else s->ev_tokens += (double)(now - s->ev_last_ms) * DNS_EV_RATE / 1000.0;
  if (s->ev_tokens > DNS_EV_BURST) s->ev_tokens = DNS_EV_BURST;
  s->ev_last_ms = now;
  if (s->ev_tokens < 1.0) {
    s->ev_suppressed++;
    return false;
  }
  s->ev_tokens -= 1.0;
  if (s->ev_suppressed) {
    event_add(s->e, json_pack("{s:s, s:s, s:s, s:s, s:I}", "sandbox", s->id, "kind", "dns",
                              "action", "suppressed", "reason", "event_rate_limited", "count",
                              (json_int_t)s->ev_suppressed));
    s->ev_suppressed = 0;
  }
  return true;
}

static void ev_dns(egress_sbx *s, const dns_question *q, const char *action, const char *reason,
                   json_t *addrs) {
  if (!dns_ev_admit(s)) {
    json_decref(addrs);
    return;
  }
  char tb[16];
  json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "sandbox", s->id, "kind", "dns",
                        "action", action, "name", q->name, "qtype",
                        dns_type_name(q->qtype, tb, sizeof(tb)), "reason", reason);
  if (j && addrs) json_object_set_new(j, "addresses", addrs);
  else json_decref(addrs);
  event_add(s->e, j);
}

typedef struct send_req {
  uv_udp_send_t req;
  uint8_t buf[DNS_MAX_MSG];
} send_req;

static void on_sent(uv_udp_send_t *req, int status) { free(container_of(req, send_req, req)); }

static void send_to(uv_udp_t *h, const struct sockaddr_in *to, const uint8_t *msg, size_t len) {
  if (len > DNS_MAX_MSG) return;
  send_req *r = malloc(sizeof(*r));
  if (!r) return;
  memcpy(r->buf, msg, len);
  uv_buf_t b = uv_buf_init((char *)r->buf, (unsigned)len);
  if (uv_udp_send(&r->req, h, &b, 1, (const struct sockaddr *)to, on_sent) < 0) free(r);
}

static void reply_rcode(egress_sbx *s, const struct sockaddr_in *to, const uint8_t *query,
                        const dns_question *q, uint8_t rcode) {
  uint8_t out[DNS_MAX_MSG];
  int n = dns_build_reply(query, q, rcode, out, sizeof(out));
  if (n > 0) send_to(&s->listen, to, out, (size_t)n);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[65536];
  *buf = uv_buf_init(slab, sizeof(slab));
}

static resolved *find_resolved(egress_sbx *s, const uint8_t a[4], uint16_t port) {
  for (size_t i = 0; i < s->n_res; i++)
    if (!memcmp(s->res[i].addr, a, 4) && s->res[i].port == port) return &s->res[i];
  return NULL;
}

static void prune_resolved(egress_sbx *s) {
  uint64_t now = cr_mono_ms();
  size_t k = 0;
  for (size_t i = 0; i < s->n_res; i++)
    if (s->res[i].expires_ms > now) s->res[k++] = s->res[i];
  s->n_res = k;
}

/* Puts addr:port into the set for ttl seconds (refreshing a live element). */
static int allow_addr(egress_sbx *s, const char *name, const uint8_t a[4], uint16_t port,
                      unsigned ttl) {
  uint64_t now = cr_mono_ms(), exp = now + (uint64_t)ttl * 1000u;
  resolved *r = find_resolved(s, a, port);
  if (r && r->expires_ms > exp) return 0; /* already there for longer */
  cr_error *err = NULL;
  int rc = -1;
  if (r && r->expires_ms > now + 1000) {
    /* live element: replace it to move its timeout (one transaction) */
    _cleanup_free_ char *d = egress_nft_element_cmd("delete", s->e->table, s->id, a, port, 0);
    _cleanup_free_ char *ad = egress_nft_element_cmd("add", s->e->table, s->id, a, port, ttl);
    _cleanup_free_ char *both = NULL;
    if (d && ad && asprintf(&both, "%s%s", d, ad) >= 0) rc = egress_nft_run(both, &err);
    cr_error_free(err);
    err = NULL;
  }
  if (rc < 0) {
    _cleanup_free_ char *ad = egress_nft_element_cmd("add", s->e->table, s->id, a, port, ttl);
    rc = ad ? egress_nft_run(ad, &err) : -1;
  }
  if (rc < 0) {
    log_warn("egress %s: %s", s->id, err ? err->message : "adding a set element");
    cr_error_free(err);
    return -1;
  }
  if (!r) {
    prune_resolved(s);
    if (s->n_res >= MAX_RESOLVED) return 0; /* the set has it; we just do not remember */
    resolved *nr = realloc(s->res, (s->n_res + 1) * sizeof(*s->res));
    if (!nr) return 0;
    s->res = nr;
    r = &s->res[s->n_res++];
    memcpy(r->addr, a, 4);
    r->port = port;
  }
  snprintf(r->name, sizeof(r->name), "%s", name);
  r->expires_ms = exp;
  return 0;
}

static void on_query(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                     unsigned flags) {
  egress_sbx *s = h->data;
  if (nread <= 0 || !addr || addr->sa_family != AF_INET) return;
  const struct sockaddr_in *from = (const struct sockaddr_in *)addr;
  const uint8_t *msg = (const uint8_t *)buf->base;
  size_t len = (size_t)nread;
  if (len > DNS_MAX_MSG) return;
  dns_question q;
  if (dns_parse_query(msg, len, &q) < 0) {
    /* answer FORMERR when at least a header is there; never forward */
    if (len >= 12) {
      uint8_t out[12];
      memcpy(out, msg, 12);
      out[2] = 0x80 | (msg[2] & 0x79);
      out[3] = 0x80 | DNS_RCODE_FORMERR;
      memset(out + 4, 0, 8);
      send_to(&s->listen, from, out, 12);
    }
    event_add(s->e, json_pack("{s:s, s:s, s:s, s:s}", "sandbox", s->id, "kind", "dns", "action",
                              "deny", "reason", "dns_malformed"));
    return;
  }
  if (!policy_host_may_resolve(s->pol, q.name)) {
    reply_rcode(s, from, msg, &q, DNS_RCODE_REFUSED);
    const char *reason = POLICY_REASON_HOST_NOT_ALLOWED;
    policy_match(s->pol, q.name, 443, &reason);
    if (!strcmp(reason, POLICY_REASON_ALLOWED) || !strcmp(reason, POLICY_REASON_PORT_NOT_ALLOWED))
      reason = POLICY_REASON_HOST_NOT_ALLOWED;
    ev_dns(s, &q, "deny", reason, NULL);
    return;
  }
  if (q.qclass != DNS_CLASS_IN || q.qtype != DNS_TYPE_A) {
    /* allowed name, but only A is answered: AAAA and others get NODATA
     * (IPv6 is denied; nothing else is needed to connect) */
    reply_rcode(s, from, msg, &q, DNS_RCODE_NOERROR);
    ev_dns(s, &q, "deny", "qtype_not_supported", NULL);
    return;
  }
  if (!s->e->have_upstream) {
    reply_rcode(s, from, msg, &q, DNS_RCODE_SERVFAIL);
    ev_dns(s, &q, "deny", "no_upstream_resolver", NULL);
    return;
  }
  pending *p = NULL;
  uint64_t now = cr_mono_ms();
  for (size_t i = 0; i < MAX_PENDING && !p; i++)
    if (!s->pend[i].used || now - s->pend[i].t0_ms > PENDING_TIMEOUT_MS) p = &s->pend[i];
  if (!p || q.end > sizeof(p->query)) {
    reply_rcode(s, from, msg, &q, DNS_RCODE_SERVFAIL);
    ev_dns(s, &q, "deny", "resolver_busy", NULL);
    return;
  }
  p->used = true;
  p->client = *from;
  p->q = q;
  memcpy(p->query, msg, q.end);
  p->t0_ms = now;
  uint16_t id;
  if (getrandom(&id, sizeof(id), 0) != sizeof(id)) id = (uint16_t)(now ^ (uintptr_t)p);
  p->up_id = id;
  /* forward the question only (no additional records from the guest) */
  uint8_t out[300];
  memcpy(out, msg, q.end);
  out[0] = (uint8_t)(id >> 8);
  out[1] = (uint8_t)id;
  memset(out + 6, 0, 6);
  send_to(&s->up, &s->e->upstream, out, q.end);
}

static void on_upstream(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  egress_sbx *s = h->data;
  if (nread <= 0 || !addr || addr->sa_family != AF_INET) return;
  const struct sockaddr_in *from = (const struct sockaddr_in *)addr;
  if (from->sin_addr.s_addr != s->e->upstream.sin_addr.s_addr ||
      from->sin_port != s->e->upstream.sin_port)
    return; /* only the upstream answers */
  uint8_t *msg = (uint8_t *)buf->base;
  size_t len = (size_t)nread;
  if (len > DNS_MAX_MSG || len < 12) return;
  uint16_t id = (uint16_t)(msg[0] << 8 | msg[1]);
  pending *p = NULL;
  for (size_t i = 0; i < MAX_PENDING && !p; i++)
    if (s->pend[i].used && s->pend[i].up_id == id) p = &s->pend[i];
  if (!p) return;
  dns_question q;
  uint8_t rcode = 0;
  dns_a answers[DNS_MAX_ANSWERS];
  int n = dns_parse_reply(msg, len, &q, &rcode, answers, DNS_MAX_ANSWERS);
  if (n < 0 || strcmp(q.name, p->q.name) || q.qtype != p->q.qtype) {
    if (n < 0) {
      p->used = false;
      reply_rcode(s, &p->client, p->query, &p->q, DNS_RCODE_SERVFAIL);
      ev_dns(s, &p->q, "deny", "upstream_malformed", NULL);
    }
    return; /* a mismatched question is not ours: keep waiting */
  }
  p->used = false;
  json_t *addrs = json_array();
  bool failed = false;
  for (int i = 0; i < n; i++) {
    char at[16];
    snprintf(at, sizeof(at), "%u.%u.%u.%u", answers[i].addr[0], answers[i].addr[1],
             answers[i].addr[2], answers[i].addr[3]);
    json_array_append_new(addrs, json_string(at));
    unsigned ttl = MAX(answers[i].ttl, s->e->min_ttl);
    if (ttl > 86400) ttl = 86400;
    for (size_t k = 0; k < s->n_ports; k++) {
      if (policy_match(s->pol, p->q.name, s->ports[k], NULL) != POLICY_ALLOW) continue;
      if (allow_addr(s, p->q.name, answers[i].addr, s->ports[k], ttl) < 0) failed = true;
    }
  }
  if (failed) {
    /* the firewall would not let the answer through: do not hand it out */
    reply_rcode(s, &p->client, p->query, &p->q, DNS_RCODE_SERVFAIL);
    ev_dns(s, &p->q, "deny", "firewall_update_failed", addrs);
    return;
  }
  /* the reply as the upstream sent it, with the guest's id */
  msg[0] = p->query[0];
  msg[1] = p->query[1];
  send_to(&s->listen, &p->client, msg, len);
  ev_dns(s, &p->q, "allow", rcode == 0 ? POLICY_REASON_ALLOWED : "upstream_error", addrs);
}

static void on_timer(uv_timer_t *t) {
  egress_sbx *s = t->data;
  uint64_t now = cr_mono_ms();
  for (size_t i = 0; i < MAX_PENDING; i++) {
    pending *p = &s->pend[i];
    if (p->used && now - p->t0_ms > PENDING_TIMEOUT_MS) {
      p->used = false;
      reply_rcode(s, &p->client, p->query, &p->q, DNS_RCODE_SERVFAIL);
      ev_dns(s, &p->q, "deny", "upstream_timeout", NULL);
    }
  }
  prune_resolved(s);
}

/* ---- attach / detach */

static void slot_addrs(egress *e, int slot, uint8_t host[4], uint8_t guest[4]) {
  uint32_t net = e->pool + (uint32_t)slot * 4u;
  uint32_t h = net + 1, g = net + 2;
  for (int i = 0; i < 4; i++) {
    host[i] = (uint8_t)(h >> (24 - 8 * i));
    guest[i] = (uint8_t)(g >> (24 - 8 * i));
  }
}

static int n_slots(egress *e) {
  uint64_t n = (1ull << (32 - e->pool_prefix)) / 4;
  return (int)MIN(n, (uint64_t)MAX_SLOTS);
}

static void tap_name(const char *id, char out[16]) {
  size_t n = strlen(id);
  const char *tail = n > 12 ? id + n - 12 : id;
  snprintf(out, 16, EGRESS_TAP_PREFIX "%s", tail);
  for (char *c = out; *c; c++) *c = (char)tolower((unsigned char)*c);
}

static egress_sbx *find_sbx(egress *e, const char *id) {
  for (size_t i = 0; i < e->n_sbx; i++)
    if (!strcmp(e->sbx[i]->id, id)) return e->sbx[i];
  return NULL;
}

/* A logged (then rejected or dropped) packet: one audit event. The chain
 * says where it was stopped; what the sandbox resolved says why. */
static void on_nflog_pkt(void *ud, const egress_nflog_pkt *p) {
  egress *e = ud;
  char id[32], why[40];
  if (sscanf(p->prefix, "cr %31s %39s", id, why) != 2) return;
  egress_sbx *s = find_sbx(e, id);
  const char *reason = why;
  const char *proto = p->proto == IPPROTO_TCP ? "tcp" : p->proto == IPPROTO_UDP ? "udp"
                      : p->proto == IPPROTO_ICMP ? "icmp" : "other";
  if (!strcmp(why, "not_allowed")) {
    if (p->proto != IPPROTO_TCP) {
      reason = "protocol_not_allowed"; /* only TCP leaves a sandbox */
    } else {
      bool resolved_addr = false;
      uint64_t now = cr_mono_ms();
      for (size_t i = 0; s && i < s->n_res && !resolved_addr; i++)
        resolved_addr = !memcmp(s->res[i].addr, p->daddr, 4) && s->res[i].expires_ms > now;
      /* an address the sandbox resolved through us, on a port not allowed;
       * else an address it never resolved (an IP literal or another
       * resolver's answer), or whose answer expired */
      reason = resolved_addr ? POLICY_REASON_PORT_NOT_ALLOWED : "ip_literal_not_allowed";
    }
  }
  char src[16], dst[16];
  snprintf(src, sizeof(src), "%u.%u.%u.%u", p->saddr[0], p->saddr[1], p->saddr[2], p->saddr[3]);
  snprintf(dst, sizeof(dst), "%u.%u.%u.%u", p->daddr[0], p->daddr[1], p->daddr[2], p->daddr[3]);
  json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "sandbox", id, "kind",
                        "connection", "action", "deny", "reason", reason, "address", dst,
                        "source", src, "protocol", proto);
  if (j && p->dport) json_object_set_new(j, "port", json_integer(p->dport));
  event_add(e, j);
}

static void on_nflog(uv_poll_t *h, int status, int events) {
  egress *e = h->data;
  static uint8_t buf[65536];
  for (int i = 0; i < 64; i++) {
    ssize_t n = recv(e->nflog_fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) break;
    egress_nflog_parse(buf, (size_t)n, on_nflog_pkt, e);
  }
}

static void start_nflog(egress *e) {
  if (e->nflog_on) return;
  int fd = egress_nflog_open(e->nflog_group);
  if (fd < 0) {
    log_warn("egress: NFLOG group %u: %s (rejected connections are not audited; set "
             "CLEANROOM_EGRESS_NFLOG_GROUP)",
             e->nflog_group, strerror(-fd));
    return;
  }
  e->nflog_fd = fd;
  if (uv_poll_init(e->loop, &e->nflog_poll, fd) < 0) {
    close(fd);
    return;
  }
  e->nflog_poll.data = e;
  e->nflog_on = true;
  uv_poll_start(&e->nflog_poll, UV_READABLE, on_nflog);
  uv_unref((uv_handle_t *)&e->nflog_poll);
}

static int ensure_base(egress *e, cr_error **err) {
  if (e->base_ready) return 0;
  _cleanup_free_ char *cmds = egress_nft_base_cmds(e->table);
  if (!cmds) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "nftables");
  if (egress_nft_run(cmds, err) < 0) return -1;
  e->base_ready = true;
  start_nflog(e);
  return 0;
}

int egress_sbx_slot(const egress_sbx *s) { return s->slot; }
void egress_set_gateway_port(egress *e, uint16_t port) { e->gateway_port = port; }
void egress_pool(const egress *e, uint32_t *net, uint32_t *mask) {
  *net = e->pool;
  *mask = ~0u << (32 - e->pool_prefix);
}
egress *egress_sbx_owner(const egress_sbx *s) { return s->e; }
const char *egress_sbx_id(const egress_sbx *s) { return s->id; }
void egress_sbx_guest_ip(const egress_sbx *s, uint8_t out[4]) { memcpy(out, s->guest, 4); }
int egress_sbx_match(const egress_sbx *s, const char *host, uint16_t port, const char **reason) {
  return policy_match(s->pol, host, port, reason);
}
bool egress_sbx_git_push_allows(const egress_sbx *s, const char *host, uint16_t port) {
  return policy_git_push_allows(s->pol, host, port);
}
const char *egress_sbx_policy_text(const egress_sbx *s) { return s->pol_text; }
const char *egress_sbx_tap(const egress_sbx *s) { return s->tap; }
const char *egress_sbx_guest_cidr(const egress_sbx *s) { return s->guest_cidr; }
const char *egress_sbx_host_addr(const egress_sbx *s) { return s->host_text; }

static void sbx_handle_closed(uv_handle_t *h) {
  egress_sbx *s = h->data;
  if (--s->handles == 0) {
    policy_free(s->pol);
    free(s->pol_text);
    free(s->rules);
    json_decref(s->allow);
    json_decref(s->deny);
    free(s->res);
    free(s);
  }
}

static void unregister(egress *e, egress_sbx *s) {
  for (size_t i = 0; i < e->n_sbx; i++)
    if (e->sbx[i] == s) {
      e->sbx[i] = e->sbx[--e->n_sbx];
      return;
    }
}

static void teardown(egress_sbx *s) {
  _cleanup_free_ char *d = egress_nft_sbx_delete_cmds(s->e->table, s->id, s->tap, s->guest);
  if (d) egress_nft_run_each(d);
  egress_tap_delete(s->tap);
}

static void close_sbx(egress_sbx *s) {
  s->handles = 1; /* the struct itself */
  if (s->listening) {
    s->handles += 3;
    uv_close((uv_handle_t *)&s->listen, sbx_handle_closed);
    uv_close((uv_handle_t *)&s->up, sbx_handle_closed);
    uv_close((uv_handle_t *)&s->timer, sbx_handle_closed);
  }
  uv_handle_t fake = {.data = s};
  sbx_handle_closed(&fake);
}

static int forwarding_on(cr_error **err) {
  int lk = egress_forwarding_lock();
  if (lk < 0) return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, -lk, "locking %s",
                                  "/run/cleanroom-egress.lock");
  int r = egress_forwarding_on();
  close(lk);
  if (r < 0) return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, -r, "enabling IPv4 forwarding");
  return 0;
}

/* No sandbox network of ours is left: our table goes, and IPv4 forwarding
 * is turned off again when a daemon turned it on and no daemon of this
 * network namespace has a sandbox network any more (netif.h). */
static void last_network_gone(egress *e) {
  cr_error *err = NULL;
  char **ids = NULL;
  size_t n = 0;
  /* chains of sandboxes not attached (never expected): keep the table */
  if (egress_nft_list_ids(e->table, &ids, &n, &err) == 0 && n == 0) {
    egress_nft_delete_table(e->table, &err); /* may not exist */
    e->base_ready = false;
  }
  for (size_t i = 0; i < n; i++) free(ids[i]);
  free(ids);
  cr_error_free(err);
  err = NULL;
  int lk = egress_forwarding_lock();
  if (lk < 0) return;
  ids = NULL;
  n = 0;
  if (egress_nft_list_ids(NULL, &ids, &n, &err) == 0 && n == 0) {
    int r = egress_forwarding_restore();
    if (r > 0) log_info("egress: no sandbox network left: IPv4 forwarding is off again");
    else if (r < 0) log_warn("egress: turning IPv4 forwarding off again: %s", strerror(-r));
  }
  for (size_t i = 0; i < n; i++) free(ids[i]);
  free(ids);
  cr_error_free(err);
  close(lk);
}

void egress_detach(egress_sbx *s) {
  if (!s) return;
  egress *e = s->e;
  unregister(e, s);
  teardown(s);
  if (s->announced) /* a detach only where the stream had an attach */
    event_add(e, json_pack("{s:s, s:s, s:s, s:s}", "sandbox", s->id, "kind", "network",
                           "action", "detach", "reason", "sandbox_removed"));
  close_sbx(s);
  if (e->n_sbx == 0) last_network_gone(e);
}

void egress_release(egress_sbx *s) {
  if (!s) return;
  unregister(s->e, s);
  close_sbx(s);
}

static int start_resolver(egress_sbx *s, cr_error **err) {
  uv_loop_t *loop = s->e->loop;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, errno, "DNS socket");
  int one = 1;
  setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, s->tap, (socklen_t)strlen(s->tap));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
  memcpy(&a.sin_addr, s->host, 4);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    int r = errno;
    close(fd);
    return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, r, "binding the DNS resolver to %s:53",
                        s->host_text);
  }
  uv_udp_init(loop, &s->listen);
  uv_udp_init(loop, &s->up);
  uv_timer_init(loop, &s->timer);
  s->listen.data = s->up.data = s->timer.data = s;
  s->listening = true;
  int r;
  if ((r = uv_udp_open(&s->listen, fd)) < 0) {
    close(fd);
    return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, -r, "DNS socket");
  }
  struct sockaddr_in any = {.sin_family = AF_INET};
  if ((r = uv_udp_bind(&s->up, (struct sockaddr *)&any, 0)) < 0 ||
      (r = uv_udp_recv_start(&s->listen, on_alloc, on_query)) < 0 ||
      (r = uv_udp_recv_start(&s->up, on_alloc, on_upstream)) < 0)
    return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, -r, "starting the DNS resolver");
  uv_timer_start(&s->timer, on_timer, 1000, 1000);
  uv_unref((uv_handle_t *)&s->timer);
  return 0;
}

/* The sandbox's chains and set for these compiled rules, in one nft
 * transaction: adding is idempotent and the chains are flushed first, so
 * this also replaces the rules of a sandbox that has them. */
static int install_rules(egress_sbx *s, json_t *allow_rules, json_t *deny_rules, cr_error **err) {
  egress_cidr *allow = NULL, *deny = NULL;
  size_t n_allow = 0, n_deny = 0;
  int r = -1;
  if (cidrs_from(allow_rules, &allow, &n_allow) < 0 || cidrs_from(deny_rules, &deny, &n_deny) < 0) {
    cr_error_set(err, CR_E_INTERNAL, ENOMEM, "egress");
    goto out;
  }
  egress_nft_sbx ns = {.table = s->e->table, .id = s->id, .tap = s->tap,
                       .nflog_group = s->e->nflog_group, .gateway_port = s->e->gateway_port,
                       .allow = allow, .n_allow = n_allow, .deny = deny, .n_deny = n_deny};
  memcpy(ns.host, s->host, 4);
  memcpy(ns.guest, s->guest, 4);
  char *cmds = egress_nft_sbx_cmds(&ns);
  if (!cmds) {
    cr_error_set(err, CR_E_INTERNAL, ENOMEM, "nftables");
    goto out;
  }
  /* the same commands as applied: nothing to change (a reserved network
   * given a policy of names only: its rules depend only on the IP/CIDR
   * rules, and the resolver fills the set) */
  if (s->rules && !strcmp(s->rules, cmds)) {
    free(cmds);
    r = 0;
    goto out;
  }
  r = egress_nft_run(cmds, err);
  if (r == 0) {
    free(s->rules);
    s->rules = cmds;
  } else {
    free(cmds);
  }
out:
  cidrs_free(allow, n_allow);
  cidrs_free(deny, n_deny);
  return r;
}

static void attach_event(egress_sbx *s, const char *reason) {
  s->announced = true;
  event_add(s->e, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "sandbox", s->id, "kind", "network",
                            "action", "attach", "reason", reason, "address", s->guest_cidr,
                            "tap", s->tap));
}

int egress_rebind(egress_sbx *s, json_t *pol, cr_error **err) {
  uint64_t t0 = cr_mono_ns();
  policy *np = NULL;
  char *ntext = NULL;
  if (policy_from_compiled(pol, &np, &ntext, err) < 0)
    return cr_error_wrap(err, "sandbox %s network", s->id);
  json_t *net = json_object_get(json_object_get(pol, "sandbox"), "network");
  json_t *al = json_object_get(net, "allow"), *de = json_object_get(net, "deny");
  json_t *allow = json_is_array(al) ? json_incref(al) : json_array();
  json_t *deny = json_is_array(de) ? json_incref(de) : json_array();
  if (install_rules(s, allow, deny, err) < 0) {
    policy_free(np);
    free(ntext);
    json_decref(allow);
    json_decref(deny);
    return cr_error_wrap(err, "sandbox %s network", s->id);
  }
  policy_free(s->pol);
  free(s->pol_text);
  json_decref(s->allow);
  json_decref(s->deny);
  s->pol = np;
  s->pol_text = ntext;
  s->allow = allow;
  s->deny = deny;
  collect_ports(s, s->allow);
  s->n_res = 0; /* nothing was resolved under the old rules (none allowed) */
  attach_event(s, "policy_network");
  log_debug("egress %s: rules replaced in %.2f ms", s->id, (double)(cr_mono_ns() - t0) / 1e6);
  return 0;
}

int egress_attach(egress *e, const char *id, json_t *pol, int slot, egress_sbx **ret,
                  cr_error **err) {
  if (!egress_nft_name_valid(id)) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "sandbox id");
  const char *why = NULL;
  /* checked once per daemon (it runs nft): what made it capable stays */
  if (!e->capable && !(e->capable = egress_host_capable(&why)))
    return cr_error_set(err, CR_E_BACKEND_CAPABILITY_MISMATCH, 0,
                        "the policy allows network egress, but this host cannot enforce it: %s",
                        why);
  bool reattach = slot >= 0;
  if (slot < 0) {
    for (int i = 0; i < n_slots(e) && slot < 0; i++) {
      bool used = false;
      for (size_t k = 0; k < e->n_sbx && !used; k++) used = e->sbx[k]->slot == i;
      if (!used) slot = i;
    }
    if (slot < 0)
      return cr_error_set(err, CR_E_EGRESS_POOL_EXHAUSTED, 0,
                          "no free address in the egress pool (CLEANROOM_EGRESS_POOL)");
  } else if (slot >= n_slots(e)) {
    return cr_error_set(err, CR_E_EGRESS_POOL_EXHAUSTED, 0, "slot %d outside the pool", slot);
  }
  egress_sbx *s = calloc(1, sizeof(*s));
  if (!s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "egress");
  s->e = e;
  s->slot = slot;
  snprintf(s->id, sizeof(s->id), "%s", id);
  tap_name(id, s->tap);
  slot_addrs(e, slot, s->host, s->guest);
  snprintf(s->host_text, sizeof(s->host_text), "%u.%u.%u.%u", s->host[0], s->host[1],
           s->host[2], s->host[3]);
  snprintf(s->guest_cidr, sizeof(s->guest_cidr), "%u.%u.%u.%u/30", s->guest[0], s->guest[1],
           s->guest[2], s->guest[3]);
  json_t *net = json_object_get(json_object_get(pol, "sandbox"), "network");
  json_t *al = json_object_get(net, "allow"), *de = json_object_get(net, "deny");
  s->allow = json_is_array(al) ? json_incref(al) : json_array();
  s->deny = json_is_array(de) ? json_incref(de) : json_array();
  collect_ports(s, s->allow);
  _cleanup_free_ char *del = NULL;
  uint64_t t0 = cr_mono_ms();
  if (policy_from_compiled(pol, &s->pol, &s->pol_text, err) < 0) goto fail;
  if (ensure_base(e, err) < 0) goto fail;
  log_debug("egress %s: +%llu ms: nftables table", id, (unsigned long long)(cr_mono_ms() - t0));
  if (egress_tap_create(s->tap, s->host, 30, err) < 0) goto fail;
  log_debug("egress %s: +%llu ms: TAP", id, (unsigned long long)(cr_mono_ms() - t0));
  /* a re-attach finds the old objects: remove them first (a new sandbox
   * has none: each line is an nft run of its own, which costs) */
  if (reattach && (del = egress_nft_sbx_delete_cmds(e->table, s->id, s->tap, s->guest)))
    egress_nft_run_each(del);
  if (install_rules(s, s->allow, s->deny, err) < 0) goto fail_nft;
  log_debug("egress %s: +%llu ms: chains and set", id, (unsigned long long)(cr_mono_ms() - t0));
  /* after the chains exist: a daemon removing the last other network sees
   * them and leaves forwarding on */
  if (forwarding_on(err) < 0) goto fail_nft;
  if (start_resolver(s, err) < 0) goto fail_nft;
  log_debug("egress %s: +%llu ms: forwarding, resolver", id, (unsigned long long)(cr_mono_ms() - t0));
  egress_sbx **nv = realloc(e->sbx, (e->n_sbx + 1) * sizeof(*e->sbx));
  if (!nv) {
    cr_error_set(err, CR_E_INTERNAL, ENOMEM, "egress");
    goto fail_nft;
  }
  e->sbx = nv;
  e->sbx[e->n_sbx++] = s;
  if (pol) attach_event(s, "policy_network");
  *ret = s;
  return 0;
fail_nft:
  teardown(s);
fail:
  cr_error_wrap(err, "sandbox %s network", id);
  close_sbx(s); /* resolver handles may be open */
  if (e->n_sbx == 0) last_network_gone(e);
  return -1;
}

void egress_sweep(egress *e, char *const *live, size_t n) {
  char **ids = NULL;
  size_t nids = 0;
  cr_error *err = NULL;
  if (egress_nft_list_ids(e->table, &ids, &nids, &err) < 0) {
    cr_error_free(err);
    return;
  }
  for (size_t i = 0; i < nids; i++) {
    bool alive = false;
    for (size_t k = 0; k < n && !alive; k++) alive = !strcmp(live[k], ids[i]);
    for (size_t k = 0; k < e->n_sbx && !alive; k++) alive = !strcmp(e->sbx[k]->id, ids[i]);
    if (!alive) {
      char tap[16];
      tap_name(ids[i], tap);
      log_info("egress: sweeping the network of gone sandbox %s", ids[i]);
      _cleanup_free_ char *d = egress_nft_sbx_delete_cmds(e->table, ids[i], tap, NULL);
      if (d) egress_nft_run_each(d);
      /* the guests set holds addresses; drop those of no live sandbox */
      egress_tap_delete(tap);
    }
    free(ids[i]);
  }
  free(ids);
  /* a daemon that stopped or crashed with the last network gone */
  if (n == 0 && e->n_sbx == 0) last_network_gone(e);
}

json_t *egress_sbx_json(const egress_sbx *s) {
  json_t *res = json_array();
  uint64_t now = cr_mono_ms();
  for (size_t i = 0; i < s->n_res; i++) {
    const resolved *r = &s->res[i];
    if (r->expires_ms <= now) continue;
    char at[16];
    snprintf(at, sizeof(at), "%u.%u.%u.%u", r->addr[0], r->addr[1], r->addr[2], r->addr[3]);
    json_array_append_new(res, json_pack("{s:s, s:s, s:i, s:I}", "name", r->name, "address", at,
                                         "port", r->port, "expires_in_s",
                                         (json_int_t)((r->expires_ms - now) / 1000)));
  }
  return json_pack("{s:s, s:s, s:s, s:s, s:O, s:O, s:o, s:s}", "tap", s->tap, "guest_address",
                   s->guest_cidr, "host_address", s->host_text, "dns", s->host_text, "allow",
                   s->allow, "deny", s->deny,
                   "resolved", res, "ipv6", "denied");
  /* s->allow and s->deny are always arrays (egress_attach) */
}
