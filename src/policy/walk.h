/* The schema walk of cleanroom.yaml, shared by its files: the walk's state,
 * the tree getters and diagnostics (tree.c), network rules (network.c), the
 * sandbox and repository sections (sections.c); the walk itself and the
 * accessors are in policy.c, discovery in find.c. */
#pragma once
#include "policy/policy-internal.h"
#include "util/fs.h"

#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

typedef struct ctx {
  const char *filename;
  policy_diags *diags;
  policy *p;
  bool oom;
} ctx;

#define PATH_MAX_LEN 256

/* tree.c: diagnostics and the tree getters */
_printf_(4, 5) void policy_err_at(ctx *c, const policy_node *n, const char *path,
                                  const char *fmt, ...);
_printf_(4, 5) void policy_warn_at(ctx *c, const policy_node *n, const char *path,
                                   const char *fmt, ...);
const char *policy_type_name(const policy_node *n);
bool policy_is_null(const policy_node *n);
void policy_join_path(char *buf, const char *base, const char *key);
void policy_index_path(char *buf, const char *base, size_t i);
const policy_node *policy_map_get(const policy_node *map, const char *key);
void policy_check_keys(ctx *c, const policy_node *map, const char *path,
                       const char *const *known);
bool policy_expect_type(ctx *c, const policy_node *n, const char *path, policy_node_type t);
char *policy_get_string(ctx *c, const policy_node *n, const char *path, bool allow_empty);
bool policy_get_bool(ctx *c, const policy_node *n, const char *path, bool *ret);
bool policy_get_uint(ctx *c, const policy_node *n, const char *path, uint64_t min, uint64_t max,
                     uint64_t *ret);
void policy_get_string_list(ctx *c, const policy_node *n, const char *path, bool repo_relative,
                            char ***ret, size_t *ret_n);

/* network.c */
void policy_parse_rules(ctx *c, const policy_node *n, const char *path, bool allow,
                        policy_rule **ret, size_t *ret_n);
void policy_parse_network(ctx *c, const policy_node *n, const char *path);

/* sections.c */
void policy_parse_sandbox(ctx *c, const policy_node *n);
void policy_parse_repository(ctx *c, const policy_node *n);
