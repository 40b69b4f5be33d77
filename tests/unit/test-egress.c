/* Unit tests for src/egress: the DNS message parser and builder, the
 * nftables commands compiled for a sandbox, and (as root, on a table of
 * its own that it deletes) that libnftables accepts those commands and
 * that removal and listing work. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "egress/dns.h"
#include "egress/egress.h"
#include "egress/evlog.h"
#include "util/fs.h"
#include "egress/nft.h"

static size_t put_name(uint8_t *p, const char *name) {
  size_t off = 0;
  const char *s = name;
  while (*s) {
    const char *dot = strchr(s, '.');
    size_t l = dot ? (size_t)(dot - s) : strlen(s);
    p[off++] = (uint8_t)l;
    memcpy(p + off, s, l);
    off += l;
    s += l;
    if (*s == '.') s++;
  }
  p[off++] = 0;
  return off;
}

static size_t make_query(uint8_t *p, uint16_t id, const char *name, uint16_t type) {
  uint8_t h[12] = {(uint8_t)(id >> 8), (uint8_t)id, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  memcpy(p, h, 12);
  size_t off = 12 + put_name(p + 12, name);
  p[off++] = (uint8_t)(type >> 8);
  p[off++] = (uint8_t)type;
  p[off++] = 0;
  p[off++] = 1;
  return off;
}

static void test_dns_query(void **state) {
  (void)state;
  uint8_t m[512];
  size_t n = make_query(m, 0xbeef, "WWW.Allowed.Test", DNS_TYPE_A);
  dns_question q;
  assert_int_equal(dns_parse_query(m, n, &q), 0);
  assert_int_equal(q.id, 0xbeef);
  assert_string_equal(q.name, "www.allowed.test");
  assert_int_equal(q.qtype, DNS_TYPE_A);
  assert_int_equal(q.end, n);
  /* truncated anywhere: rejected */
  for (size_t k = 0; k < n; k++) assert_int_equal(dns_parse_query(m, k, &q), -EINVAL);
  /* a '.' inside a label could fool the name match: rejected */
  n = make_query(m, 1, "a.test", DNS_TYPE_A);
  m[13] = '.';
  assert_int_equal(dns_parse_query(m, n, &q), -EINVAL);
  /* a NUL inside a label */
  n = make_query(m, 1, "ab.test", DNS_TYPE_A);
  m[14] = 0;
  assert_int_equal(dns_parse_query(m, n, &q), -EINVAL);
  /* compression pointers in a query */
  n = make_query(m, 1, "a.test", DNS_TYPE_A);
  m[12] = 0xc0;
  m[13] = 0x0c;
  assert_int_equal(dns_parse_query(m, n, &q), -EINVAL);
  /* two questions */
  n = make_query(m, 1, "a.test", DNS_TYPE_A);
  m[5] = 2;
  assert_int_equal(dns_parse_query(m, n, &q), -EINVAL);
  /* a reply is not a query */
  n = make_query(m, 1, "a.test", DNS_TYPE_A);
  m[2] |= 0x80;
  assert_int_equal(dns_parse_query(m, n, &q), -EINVAL);
  /* a name longer than 253 */
  char longname[300] = "";
  for (int i = 0; i < 5; i++) strcat(longname, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.");
  strcat(longname, "test");
  n = make_query(m, 1, longname, DNS_TYPE_A);
  assert_int_equal(dns_parse_query(m, n, &q), -EINVAL);
}

static void test_dns_reply(void **state) {
  (void)state;
  uint8_t m[512];
  size_t n = make_query(m, 0x1234, "allowed.test", DNS_TYPE_A);
  dns_question q;
  assert_int_equal(dns_parse_query(m, n, &q), 0);
  uint8_t out[DNS_MAX_MSG];
  int rn = dns_build_reply(m, &q, DNS_RCODE_REFUSED, out, sizeof(out));
  assert_int_equal(rn, (int)n);
  assert_int_equal(out[0], 0x12);
  assert_int_equal(out[2] & 0x80, 0x80);      /* QR */
  assert_int_equal(out[3] & 0x0f, DNS_RCODE_REFUSED);
  dns_question q2;
  uint8_t rcode;
  assert_int_equal(dns_parse_reply(out, (size_t)rn, &q2, &rcode, NULL, 0), 0);
  assert_int_equal(rcode, DNS_RCODE_REFUSED);
  assert_string_equal(q2.name, "allowed.test");

  /* a reply with a CNAME then two A records, compressed names */
  memcpy(out, m, n);
  out[2] = 0x81;
  out[3] = 0x80;
  out[7] = 3; /* ANCOUNT */
  size_t off = n;
  uint8_t cname[] = {0xc0, 0x0c, 0, 5, 0, 1, 0, 0, 1, 0x2c, 0, 2, 0xc0, 0x0c};
  memcpy(out + off, cname, sizeof(cname));
  off += sizeof(cname);
  uint8_t a1[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 214, 0, 10};
  memcpy(out + off, a1, sizeof(a1));
  off += sizeof(a1);
  uint8_t a2[] = {0xc0, 0x0c, 0, 1, 0, 1, 0x80, 0, 0, 0, 0, 4, 10, 214, 0, 11};
  memcpy(out + off, a2, sizeof(a2));
  off += sizeof(a2);
  dns_a as[4];
  assert_int_equal(dns_parse_reply(out, off, &q2, &rcode, as, 4), 2);
  assert_int_equal(rcode, 0);
  assert_memory_equal(as[0].addr, ((uint8_t[]){10, 214, 0, 10}), 4);
  assert_int_equal(as[0].ttl, 30);
  assert_int_equal(as[1].ttl, 0); /* top bit set: 0 (RFC 2181) */
  /* truncated anywhere: rejected, never reads past the end */
  for (size_t k = 0; k < off; k++) assert_true(dns_parse_reply(out, k, &q2, &rcode, as, 4) < 0);
  /* a forward pointer (possible loop) is rejected */
  out[n] = 0xc0;
  out[n + 1] = (uint8_t)(off - 2);
  assert_int_equal(dns_parse_reply(out, off, &q2, &rcode, as, 4), -EINVAL);
  /* A with a wrong rdlength */
  memcpy(out + n, cname, sizeof(cname));
  out[n + sizeof(cname) + 11] = 5;
  assert_int_equal(dns_parse_reply(out, off, &q2, &rcode, as, 4), -EINVAL);
}

static void test_nft_cmds(void **state) {
  (void)state;
  uint16_t ports[] = {5432};
  egress_cidr allow[] = {{{10, 0, 0, 0}, 8, ports, 1}};
  egress_cidr deny[] = {{{169, 254, 169, 254}, 32, NULL, 0}};
  egress_nft_sbx s = {.table = "crtest", .id = "01ABC", .tap = "crt01abc",
                      .host = {10, 213, 0, 1}, .guest = {10, 213, 0, 2},
                      .allow = allow, .n_allow = 1, .deny = deny, .n_deny = 1};
  char *c = egress_nft_sbx_cmds(&s);
  assert_non_null(c);
  assert_non_null(strstr(c, "add set inet crtest a_01ABC { type ipv4_addr . inet_service; flags timeout; }"));
  assert_non_null(strstr(c, "add rule inet crtest f_01ABC ip saddr != 10.213.0.2 limit rate 20/second burst 40 packets log prefix \"cr 01ABC spoofed_source \" group 2213\n"));
  assert_non_null(strstr(c, "add rule inet crtest f_01ABC ip saddr != 10.213.0.2 drop\n"));
  assert_non_null(strstr(c, "add rule inet crtest f_01ABC ip daddr . tcp dport @a_01ABC accept"));
  assert_non_null(strstr(c, "add rule inet crtest f_01ABC ip daddr 10.0.0.0/8 tcp dport { 5432 } accept"));
  assert_non_null(strstr(c, "add rule inet crtest f_01ABC ip daddr 169.254.169.254/32 log prefix \"cr 01ABC host_denied \" group 2213 reject with icmpx admin-prohibited"));
  assert_non_null(strstr(c, "add rule inet crtest f_01ABC meta l4proto tcp reject with tcp reset"));
  assert_non_null(strstr(c, "add rule inet crtest i_01ABC ip daddr 10.213.0.1 udp dport 53 accept"));
  assert_non_null(strstr(c, "add element inet crtest fwd_in { \"crt01abc\" : jump f_01ABC }"));
  /* the deny rule comes before the allow set, the spoof check before all */
  assert_true(strstr(c, "host_denied") < strstr(c, "@a_01ABC accept"));
  assert_true(strstr(c, "spoofed_source") < strstr(c, "established"));
  free(c);
  c = egress_nft_element_cmd("add", "crtest", "01ABC", (uint8_t[]){10, 214, 0, 10}, 443, 60);
  assert_string_equal(c, "add element inet crtest a_01ABC { 10.214.0.10 . 443 timeout 60s }\n");
  free(c);
  assert_true(egress_nft_name_valid("cleanroom"));
  assert_false(egress_nft_name_valid("a b"));
  assert_false(egress_nft_name_valid("x;flush ruleset"));
  assert_false(egress_nft_name_valid(""));
}

static void test_policy_wants_network(void **state) {
  (void)state;
  json_t *p = json_loads("{\"sandbox\":{\"network\":{\"default\":\"deny\",\"allow\":[]}}}", 0, NULL);
  assert_false(egress_policy_wants_network(p));
  json_decref(p);
  p = json_loads("{\"sandbox\":{\"network\":{\"default\":\"deny\",\"allow\":[{\"host\":\"a.test\",\"kind\":\"host\",\"ports\":[443]}]}}}", 0, NULL);
  assert_true(egress_policy_wants_network(p));
  json_decref(p);
  assert_false(egress_policy_wants_network(NULL));
}

/* Real nftables, on a table named after this process, deleted at the end. */
static void test_nft_apply(void **state) {
  (void)state;
  if (geteuid() != 0 || access("/dev/net/tun", F_OK) < 0) {
    skip();
    return;
  }
  char table[40];
  snprintf(table, sizeof(table), "crunit_%d", (int)getpid());
  cr_error *err = NULL;
  char *base = egress_nft_base_cmds(table);
  int r = egress_nft_run(base, &err);
  if (r < 0) fprintf(stderr, "%s\n", err->message);
  assert_int_equal(r, 0);
  /* twice: idempotent */
  assert_int_equal(egress_nft_run(base, &err), 0);
  free(base);
  uint16_t ports[] = {5432, 6379};
  egress_cidr allow[] = {{{10, 0, 0, 0}, 8, ports, 2}};
  egress_cidr deny[] = {{{169, 254, 169, 254}, 32, NULL, 0}};
  egress_nft_sbx s = {.table = table, .id = "01UNITTEST", .tap = "crtunit",
                      .host = {10, 213, 255, 1}, .guest = {10, 213, 255, 2},
                      .allow = allow, .n_allow = 1, .deny = deny, .n_deny = 1};
  char *c = egress_nft_sbx_cmds(&s);
  r = egress_nft_run(c, &err);
  if (r < 0) fprintf(stderr, "%s\n", err->message);
  free(c);
  char *el = egress_nft_element_cmd("add", table, "01UNITTEST", (uint8_t[]){10, 214, 0, 10}, 443, 60);
  int r2 = r == 0 ? egress_nft_run(el, &err) : -1;
  free(el);
  char **ids = NULL;
  size_t n = 0;
  int r3 = egress_nft_list_ids(table, &ids, &n, &err);
  size_t n_listed = n;
  bool found = n == 1 && !strcmp(ids[0], "01UNITTEST");
  for (size_t i = 0; i < n; i++) free(ids[i]);
  free(ids);
  char *d = egress_nft_sbx_delete_cmds(table, "01UNITTEST", "crtunit", s.guest);
  int failed = egress_nft_run_each(d);
  free(d);
  egress_nft_list_ids(table, &ids, &n, &err);
  size_t n_after = n;
  free(ids);
  cr_error *e2 = NULL;
  int rdel = egress_nft_delete_table(table, &e2);
  cr_error_free(e2);
  assert_int_equal(r, 0);
  assert_int_equal(r2, 0);
  assert_int_equal(r3, 0);
  assert_int_equal(n_listed, 1);
  assert_true(found);
  assert_int_equal(failed, 0);
  assert_int_equal(n_after, 0);
  assert_int_equal(rdel, 0);
  cr_error_free(err);
}


typedef struct seen {
  json_int_t seq[64];
  size_t n;
} seen;

static void collect(json_t *ev, void *ud) {
  seen *s = ud;
  if (s->n < 64) s->seq[s->n++] = json_integer_value(json_object_get(ev, "seq"));
}

static json_t *mk_event(json_int_t seq) {
  /* ~200 bytes, like a DNS event */
  return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "seq", seq, "sandbox",
                   "01KBXXXXXXXXXXXXXXXXXXXXXX", "kind", "dns", "action", "deny", "name",
                   "exfil-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.other.test",
                   "reason", "host_not_allowed");
}

static off_t file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? st.st_size : -1;
}

/* The on-disk log: appended, rotated at its bound (two files at most),
 * read back newest last across the rotation, a torn last line skipped and
 * ended, seq order enforced. */
static void test_evlog(void **state) {
  (void)state;
  char dir[] = "/tmp/cr-evlog-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char sub[64], cur[96], old[112];
  snprintf(sub, sizeof(sub), "%s/egress", dir);
  snprintf(cur, sizeof(cur), "%s/" EGRESS_EVLOG_FILE, sub);
  snprintf(old, sizeof(old), "%s.1", cur);
  egress_evlog *l = egress_evlog_new(sub, 4096);
  assert_non_null(l);
  seen s = {0};
  assert_int_equal(egress_evlog_load(l, 10, collect, &s), 0); /* no directory yet */
  for (json_int_t i = 1; i <= 60; i++) {
    json_t *ev = mk_event(i);
    assert_int_equal(egress_evlog_append(l, ev), 0);
    json_decref(ev);
    assert_true(file_size(cur) <= 4096);
  }
  assert_true(file_size(old) > 0 && file_size(old) <= 4096); /* rotated, bounded */
  struct stat st;
  assert_int_equal(stat(cur, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  /* the newest 30, oldest first, across both files */
  assert_int_equal(egress_evlog_load(l, 30, collect, &s), 30);
  for (size_t i = 0; i < 30; i++) assert_int_equal(s.seq[i], 31 + (json_int_t)i);
  /* fewer than asked for when the oldest were rotated away */
  s.n = 0;
  size_t got = egress_evlog_load(l, 64, collect, &s);
  assert_true(got > 20 && got < 60);
  assert_int_equal(s.seq[got - 1], 60);
  egress_evlog_free(l);

  /* a crash mid-write: garbage and a partial line at the end */
  FILE *f = fopen(cur, "a");
  assert_non_null(f);
  fputs("not json\n{\"seq\": 3}\n{\"seq\": 61, \"kind\": \"dn", f); /* seq 3: out of order */
  fclose(f);
  l = egress_evlog_new(sub, 4096);
  s.n = 0;
  /* the last 6 lines: 57..60 and the two bad ones (the partial one is no line) */
  assert_int_equal(egress_evlog_load(l, 6, collect, &s), 4);
  assert_int_equal(s.seq[0], 57);
  assert_int_equal(s.seq[3], 60);
  json_t *ev = mk_event(61);
  assert_int_equal(egress_evlog_append(l, ev), 0); /* ends the torn line first */
  json_decref(ev);
  s.n = 0;
  /* 60, the bad lines, the torn one (now ended), 61 */
  assert_int_equal(egress_evlog_load(l, 5, collect, &s), 2);
  assert_int_equal(s.seq[0], 60);
  assert_int_equal(s.seq[1], 61);
  egress_evlog_free(l);
  assert_int_equal(cr_rm_rf(dir), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dns_query),
      cmocka_unit_test(test_dns_reply),
      cmocka_unit_test(test_nft_cmds),
      cmocka_unit_test(test_policy_wants_network),
      cmocka_unit_test(test_nft_apply),
      cmocka_unit_test(test_evlog),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
