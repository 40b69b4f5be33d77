/* A small YAML tree with positions, built from libyaml events so that every
 * limit (nodes, depth) is checked as the input is read and aliases (the
 * "billion laughs" vector) are refused before they are expanded. */
#include "policy/policy-internal.h"

#include <stdarg.h>
#include <string.h>
#include <yaml.h>

void policy_node_free(policy_node *n) {
  if (!n) return;
  for (size_t i = 0; i < n->n; i++) policy_node_free(n->items[i]);
  free(n->items);
  free(n->value);
  free(n);
}

static policy_node *node_new(policy_node_type type, const yaml_mark_t *m) {
  policy_node *n = calloc(1, sizeof(*n));
  if (!n) return NULL;
  n->type = type;
  n->line = (unsigned)m->line + 1;
  n->column = (unsigned)m->column + 1;
  return n;
}

static int node_append(policy_node *parent, policy_node *child) {
  /* capacity is the next power of two >= n (at least 2): grow when full */
  if ((parent->n & (parent->n - 1)) == 0) {
    size_t cap = parent->n ? parent->n * 2 : 2;
    policy_node **items = realloc(parent->items, cap * sizeof(*items));
    if (!items) return -ENOMEM;
    parent->items = items;
  }
  parent->items[parent->n++] = child;
  return 0;
}

_printf_(5, 6) static void set_problem(char **ret_problem, unsigned *ret_line,
                                       unsigned *ret_column, const yaml_mark_t *m,
                                       const char *fmt, ...) {
  char *msg = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  free(*ret_problem);
  *ret_problem = msg;
  *ret_line = (unsigned)m->line + 1;
  *ret_column = (unsigned)m->column + 1;
}

int policy_yaml_load(const char *buf, size_t len, policy_node **ret,
                     unsigned *ret_line, unsigned *ret_column, char **ret_problem) {
  yaml_parser_t parser;
  policy_node *root = NULL;
  policy_node *stack[POLICY_MAX_DEPTH + 1];
  size_t depth = 0, nodes = 0, documents = 0;
  int r = 0;
  bool done = false;

  *ret_problem = NULL;
  *ret_line = *ret_column = 0;
  if (!yaml_parser_initialize(&parser)) return -ENOMEM;
  yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
  yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);

  while (!done) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&parser, &ev)) {
      yaml_mark_t m = parser.problem_mark;
      if (parser.error == YAML_MEMORY_ERROR) {
        r = -ENOMEM;
        break;
      }
      if (parser.context)
        set_problem(ret_problem, ret_line, ret_column, &m, "%s %s", parser.problem ? parser.problem : "invalid YAML",
                    parser.context);
      else
        set_problem(ret_problem, ret_line, ret_column, &m, "%s",
                    parser.problem ? parser.problem : "invalid YAML");
      r = -EINVAL;
      break;
    }
    policy_node *n = NULL;
    switch (ev.type) {
    case YAML_STREAM_END_EVENT:
      done = true;
      break;
    case YAML_DOCUMENT_START_EVENT:
      if (++documents > 1) {
        set_problem(ret_problem, ret_line, ret_column, &ev.start_mark,
                    "more than one document; a policy is one YAML document");
        r = -EINVAL;
      }
      break;
    case YAML_ALIAS_EVENT:
      set_problem(ret_problem, ret_line, ret_column, &ev.start_mark,
                  "aliases (*%s) are not supported in a policy",
                  ev.data.alias.anchor ? (const char *)ev.data.alias.anchor : "");
      r = -EINVAL;
      break;
    case YAML_SCALAR_EVENT:
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
      if (++nodes > POLICY_MAX_NODES) {
        set_problem(ret_problem, ret_line, ret_column, &ev.start_mark,
                    "too many YAML nodes (limit %d)", POLICY_MAX_NODES);
        r = -E2BIG;
        break;
      }
      n = node_new(ev.type == YAML_SCALAR_EVENT          ? POLICY_NODE_SCALAR
                   : ev.type == YAML_SEQUENCE_START_EVENT ? POLICY_NODE_SEQ
                                                          : POLICY_NODE_MAP,
                   &ev.start_mark);
      if (!n) {
        r = -ENOMEM;
        break;
      }
      if (ev.type == YAML_MAPPING_START_EVENT)
        n->flow = ev.data.mapping_start.style == YAML_FLOW_MAPPING_STYLE;
      else if (ev.type == YAML_SEQUENCE_START_EVENT)
        n->flow = ev.data.sequence_start.style == YAML_FLOW_SEQUENCE_STYLE;
      if (ev.type == YAML_SCALAR_EVENT) {
        n->len = ev.data.scalar.length;
        n->value = malloc(n->len + 1);
        if (!n->value) {
          policy_node_free(n);
          r = -ENOMEM;
          break;
        }
        memcpy(n->value, ev.data.scalar.value, n->len);
        n->value[n->len] = '\0';
        n->style = (int)ev.data.scalar.style;
        n->plain = ev.data.scalar.plain_implicit && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        n->end_line = (unsigned)ev.end_mark.line + 1;
        n->end_column = (unsigned)ev.end_mark.column + 1;
      }
      if (depth > 0) {
        if (node_append(stack[depth - 1], n) < 0) {
          policy_node_free(n);
          r = -ENOMEM;
          break;
        }
      } else if (!root) {
        root = n;
      } else {
        policy_node_free(n); /* cannot happen: one document, one root */
        r = -EINVAL;
        break;
      }
      if (n->type != POLICY_NODE_SCALAR) {
        if (depth >= POLICY_MAX_DEPTH) {
          set_problem(ret_problem, ret_line, ret_column, &ev.start_mark,
                      "nesting deeper than %d levels", POLICY_MAX_DEPTH);
          r = -E2BIG;
          break;
        }
        stack[depth++] = n;
      }
      break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
      if (depth > 0) {
        policy_node *top = stack[--depth];
        top->end_line = (unsigned)ev.end_mark.line + 1;
        top->end_column = (unsigned)ev.end_mark.column + 1;
      }
      break;
    default:
      break;
    }
    yaml_event_delete(&ev);
    if (r < 0) break;
  }
  yaml_parser_delete(&parser);
  if (r < 0) {
    policy_node_free(root);
    return r;
  }
  *ret = root;
  return 0;
}
