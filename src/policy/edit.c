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

/* Offset of the start of the line holding node n, checking that only
 * spaces precede it there (a block mapping key). */
static bool key_line_start(const char *buf, size_t len, const policy_node *n, size_t *ret) {
  size_t at, line;
  if (!offset_of(buf, len, n->line, n->column, &at) || !offset_of(buf, len, n->line, 1, &line))
    return false;
  for (size_t i = line; i < at; i++)
    if (buf[i] != ' ') return false;
  *ret = line;
  return true;
}

/* Finds what to replace: [*ret_start, *ret_end) becomes *ret_text. */
static int plan_edit(const char *buf, size_t len, const char *filename, const policy_node *root,
                     const char *new_ref, size_t *ret_start, size_t *ret_end, char **ret_text,
                     cr_error **err) {
  if (!root || root->type != POLICY_NODE_MAP || root->flow)
    return cr_error_set(err, CR_E_POLICY_INVALID, 0,
                        "%s: expected a block mapping at the top of the policy", filename);
  /* a value that reads back as itself in plain style, else double quotes */
  bool plain_ok = (new_ref[0] >= 'a' && new_ref[0] <= 'z') ||
                  (new_ref[0] >= 'A' && new_ref[0] <= 'Z') || (new_ref[0] >= '0' && new_ref[0] <= '9');
  const char *q = plain_ok ? "" : "\"";
  const policy_node *sandbox = get(root, "sandbox");
  char *text = NULL;
  if (!sandbox) {
    bool nl = len > 0 && buf[len - 1] != '\n';
    if (asprintf(&text, "%ssandbox:\n  image:\n    ref: %s%s%s\n", nl ? "\n" : "", q, new_ref, q) < 0)
      return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "editing %s", filename);
    *ret_start = *ret_end = len;
    *ret_text = text;
    return 0;
  }
  const policy_node *image = get(sandbox, "image");
  const policy_node *parent = image ? image : sandbox;
  if (!image || (image->type == POLICY_NODE_MAP && !get(image, "ref"))) {
    size_t at;
    if (parent->type != POLICY_NODE_MAP || parent->flow || parent->n == 0 ||
        !key_line_start(buf, len, parent->items[0], &at))
      return cr_error_set(err, CR_E_POLICY_INVALID, 0,
                          "%s:%u:%u: %s: cannot add sandbox.image.ref here; add "
                          "'image: {ref: %s}' by hand",
                          filename, parent->line, parent->column, image ? "sandbox.image" : "sandbox",
                          new_ref);
    int ind = (int)parent->items[0]->column - 1;
    int r = image ? asprintf(&text, "%*sref: %s%s%s\n", ind, "", q, new_ref, q)
                  : asprintf(&text, "%*simage:\n%*sref: %s%s%s\n", ind, "", ind + 2, "", q,
                             new_ref, q);
    if (r < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "editing %s", filename);
    *ret_start = *ret_end = at;
    *ret_text = text;
    return 0;
  }
  const policy_node *ref = get(image, "ref");
  if (!ref || ref->type != POLICY_NODE_SCALAR)
    return cr_error_set(err, CR_E_POLICY_INVALID, 0,
                        "%s:%u:%u: sandbox.image: expected a mapping with 'ref'", filename,
                        image->line, image->column);
  size_t start, end;
  bool ok = offset_of(buf, len, ref->line, ref->column, &start) &&
            offset_of(buf, len, ref->end_line, ref->end_column, &end) && end >= start;
  char quote = 0;
  if (ok) {
    switch (ref->style) {
    case YAML_PLAIN_SCALAR_STYLE:
      ok = end - start == ref->len && !memcmp(buf + start, ref->value, ref->len);
      if (!plain_ok) quote = '"';
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
  if (!ok)
    return cr_error_set(err, CR_E_POLICY_INVALID, 0,
                        "%s:%u:%u: sandbox.image.ref: cannot rewrite this value in place; write "
                        "it on one line, plain or quoted",
                        filename, ref->line, ref->column);
  if (asprintf(&text, "%s%s%s", quote == '\'' ? "'" : quote ? "\"" : "", new_ref,
               quote == '\'' ? "'" : quote ? "\"" : "") < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "editing %s", filename);
  *ret_start = start;
  *ret_end = end;
  *ret_text = text;
  return 0;
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
  _cleanup_free_ char *yaml_problem = NULL, *text = NULL;
  int r = policy_yaml_load(buf, len, &root, &line, &column, &yaml_problem);
  if (r == -ENOMEM) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "parsing %s", filename);
  if (r < 0)
    return cr_error_set(err, CR_E_POLICY_INVALID, 0, "%s:%u:%u: YAML: %s", filename, line,
                        column, yaml_problem ? yaml_problem : "syntax error");
  size_t start = 0, end = 0;
  r = plan_edit(buf, len, filename, root, new_ref, &start, &end, &text, err);
  policy_node_free(root);
  root = NULL;
  if (r < 0) return r;

  size_t tl = strlen(text);
  size_t out_len = len - (end - start) + tl;
  _cleanup_free_ char *out = malloc(out_len + 1);
  if (!out) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "editing %s", filename);
  memcpy(out, buf, start);
  memcpy(out + start, text, tl);
  memcpy(out + start + tl, buf + end, len - end);
  out[out_len] = '\0';

  /* read it back: the edit must yield exactly the new ref */
  _cleanup_free_ char *problem2 = NULL;
  r = policy_yaml_load(out, out_len, &root, &line, &column, &problem2);
  const policy_node *ref = r == 0 ? get(get(get(root, "sandbox"), "image"), "ref") : NULL;
  bool same = ref && ref->type == POLICY_NODE_SCALAR && !strcmp(ref->value, new_ref);
  policy_node_free(root);
  if (r == -ENOMEM) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "editing %s", filename);
  if (!same)
    return cr_error_set(err, CR_E_POLICY_INVALID, 0,
                        "%s: could not update sandbox.image.ref without changing the rest of "
                        "the file; edit it by hand",
                        filename);
  *ret_buf = TAKE_PTR(out);
  *ret_len = out_len;
  return 0;
}
