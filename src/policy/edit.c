/* In-place edit of sandbox.image.ref: splice the scalar's bytes, keep the
 * rest of the file (comments, order, spacing) untouched. */
#include "policy/policy-internal.h"

#include <string.h>
#include <yaml.h>

/* Byte offset of a 1-based line/column (columns count characters, as
 * libyaml does). Returns false when the position is outside the buffer. */
static bool offset_of(const char *buf, size_t len, unsigned line, unsigned column,
                      size_t *ret) {
  size_t i = 0;
  if (len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3)) i = 3; /* BOM is not counted */
  for (unsigned l = 1; l < line; l++) {
    while (i < len && buf[i] != '\n' && buf[i] != '\r') i++;
    if (i >= len) return false;
    if (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n') i++;
    i++;
  }
  for (unsigned col = 1; col < column; col++) {
    if (i >= len) return false;
    i++;
    while (i < len && ((unsigned char)buf[i] & 0xc0) == 0x80) i++; /* continuation */
  }
  *ret = i;
  return i <= len;
}

static const policy_node *get(const policy_node *map, const char *key) {
  if (!map || map->type != POLICY_NODE_MAP) return NULL;
  for (size_t i = 0; i + 1 < map->n; i += 2)
    if (map->items[i]->type == POLICY_NODE_SCALAR && !strcmp(map->items[i]->value, key))
      return map->items[i + 1];
  return NULL;
}

int policy_edit_image_ref(const char *buf, size_t len, const char *filename,
                          const char *new_ref, char **ret_buf, size_t *ret_len,
                          cr_error **err) {
  if (!filename) filename = POLICY_FILE_NAME;
  const char *problem = NULL;
  bool pinned;
  if (!policy_image_ref_valid(new_ref, &pinned, &problem))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "%s: '%s'", problem, new_ref);
  if (len > POLICY_MAX_FILE_SIZE)
    return cr_error_set(err, CR_E_POLICY_INVALID, 0, "%s: file larger than %d bytes", filename,
                        POLICY_MAX_FILE_SIZE);

  policy_node *root = NULL;
  unsigned line = 0, column = 0;
  _cleanup_free_ char *yaml_problem = NULL;
  int r = policy_yaml_load(buf, len, &root, &line, &column, &yaml_problem);
  if (r == -ENOMEM) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "parsing %s", filename);
  if (r < 0)
    return cr_error_set(err, CR_E_POLICY_INVALID, 0, "%s:%u:%u: YAML: %s", filename, line,
                        column, yaml_problem ? yaml_problem : "syntax error");

  const policy_node *ref = get(get(get(root, "sandbox"), "image"), "ref");
  if (!ref || ref->type != POLICY_NODE_SCALAR) {
    policy_node_free(root);
    return cr_error_set(err, CR_E_POLICY_INVALID, 0,
                        "%s: no sandbox.image.ref to update; add one first "
                        "(sandbox: {image: {ref: %s}})",
                        filename, new_ref);
  }
  size_t start, end;
  bool ok = offset_of(buf, len, ref->line, ref->column, &start) &&
            offset_of(buf, len, ref->end_line, ref->end_column, &end) && end >= start;
  char quote = 0;
  if (ok) {
    switch (ref->style) {
    case YAML_PLAIN_SCALAR_STYLE:
      ok = end - start == ref->len && !memcmp(buf + start, ref->value, ref->len);
      break;
    case YAML_SINGLE_QUOTED_SCALAR_STYLE:
    case YAML_DOUBLE_QUOTED_SCALAR_STYLE:
      quote = ref->style == YAML_SINGLE_QUOTED_SCALAR_STYLE ? '\'' : '"';
      ok = end - start >= 2 && buf[start] == quote && buf[end - 1] == quote;
      break;
    default:
      ok = false;
    }
  }
  unsigned at_line = ref->line, at_col = ref->column;
  policy_node_free(root);
  if (!ok)
    return cr_error_set(err, CR_E_POLICY_INVALID, 0,
                        "%s:%u:%u: sandbox.image.ref: cannot rewrite this value in place; write "
                        "it on one line, plain or quoted",
                        filename, at_line, at_col);

  size_t rl = strlen(new_ref), extra = quote ? 2 : 0;
  size_t out_len = len - (end - start) + rl + extra;
  char *out = malloc(out_len + 1);
  if (!out) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "editing %s", filename);
  char *w = out;
  memcpy(w, buf, start);
  w += start;
  if (quote) *w++ = quote;
  memcpy(w, new_ref, rl);
  w += rl;
  if (quote) *w++ = quote;
  memcpy(w, buf + end, len - end);
  out[out_len] = '\0';
  *ret_buf = out;
  *ret_len = out_len;
  return 0;
}
