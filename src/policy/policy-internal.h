/* Internals of src/policy shared between its files. Not a public API. */
#pragma once
#include "policy/policy.h"

#include <netinet/in.h>

/* ---- YAML tree with positions (yaml-tree.c) ---- */
typedef enum policy_node_type {
  POLICY_NODE_SCALAR,
  POLICY_NODE_SEQ,
  POLICY_NODE_MAP,
} policy_node_type;

typedef struct policy_node {
  policy_node_type type;
  unsigned line, column;        /* 1-based start */
  unsigned end_line, end_column; /* 1-based, just past the node */
  char *value;                  /* scalar: NUL-terminated */
  size_t len;                   /* scalar length in bytes */
  bool plain;                   /* scalar was plain (unquoted, no block style) */
  bool flow;                    /* collection written in flow style ({...}, [...]) */
  int style;                    /* yaml_scalar_style_t */
  struct policy_node **items;   /* seq: items; map: key0, value0, key1, ... */
  size_t n;                     /* seq: items; map: 2 * pairs */
} policy_node;

void policy_node_free(policy_node *n);
/* Parses one YAML document. On a syntax or limit error returns < 0 and sets
 * *ret_line and *ret_column (1-based) and *ret_problem (new string). An empty
 * document gives *ret = NULL and 0. */
int policy_yaml_load(const char *buf, size_t len, policy_node **ret,
                     unsigned *ret_line, unsigned *ret_column, char **ret_problem);

/* ---- hosts and addresses (host.c) ---- */
typedef enum policy_rule_kind {
  POLICY_RULE_HOST,     /* exact name */
  POLICY_RULE_WILDCARD, /* "*.example.com": suffix stored with the leading dot */
  POLICY_RULE_IP,       /* a single address (prefix = full length) */
  POLICY_RULE_CIDR,
} policy_rule_kind;

typedef struct policy_addr {
  int family;          /* AF_INET or AF_INET6 */
  uint8_t bytes[16];
  unsigned prefix;     /* 32/128 for a single address */
} policy_addr;

/* Parses "10.0.0.1", "10.0.0.0/8", "2001:db8::1", "2001:db8::/32" (no
 * brackets). 0 on success, -EINVAL not an address, -ERANGE bad prefix.
 * *ret_host_bits is set when bits beyond the prefix were set (then cleared). */
int policy_addr_parse(const char *s, policy_addr *ret, bool *ret_host_bits);
/* Canonical text ("10.0.0.0/8", "2001:db8::1"); buf of at least 64 bytes. */
void policy_addr_format(const policy_addr *a, char *buf, size_t size);
bool policy_addr_contains(const policy_addr *net, const policy_addr *a);

/* ---- the policy ---- */
typedef struct policy_rule {
  policy_rule_kind kind;
  char *host;          /* canonical text: name, "*.suffix", address or CIDR */
  policy_addr addr;    /* IP and CIDR */
  uint16_t *ports;     /* sorted, unique; n_ports == 0: all ports (deny only) */
  size_t n_ports;
  char *reason;        /* may be NULL */
} policy_rule;

/* sandbox.secrets[]: a credential name and the upstreams it may be sent to */
typedef struct policy_secret {
  char *name;
  policy_rule *hosts; /* like network.allow entries (ports default to 80, 443) */
  size_t n_hosts;
} policy_secret;

struct policy {
  char *filename;
  int version;
  char *image_ref;
  bool image_pinned;
  unsigned vcpus;
  uint64_t memory_mib, disk_mib;
  bool network_default_allow;
  policy_rule *allow;
  size_t n_allow;
  policy_rule *deny;
  size_t n_deny;
  bool docker_required;
  policy_step *deps;
  size_t n_deps;
  policy_step *services;
  size_t n_services;
  char *run_before;
  unsigned ttl_minutes;
  bool repo_enabled;
  char *repo_remote;
  char *repo_path;
  bool repo_submodules;
  policy_secret *secrets;
  size_t n_secrets;
  policy_rule *git_push; /* sandbox.network.git_push: where the gateway lets git push */
  size_t n_git_push;
};

void policy_rule_done(policy_rule *r);
void policy_step_done(policy_step *s);

/* ---- helpers (util.c) ---- */
size_t policy_edit_distance(const char *a, const char *b);
/* Parses "8GiB", "512MiB", "16G", "1000MB", a bare integer (MiB). Result in
 * MiB rounded up. 0 ok, -EINVAL syntax, -ERANGE too large. */
int policy_parse_size_mib(const char *s, uint64_t *ret);
