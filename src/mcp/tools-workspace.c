/* MCP tool `diff` (the workspace group): the sandbox workspace's changes
 * against its base commit (workspace.diff, docs/workspace.md). The text block
 * is the git patch (or "STATUS PATH" lines with stat_only); structuredContent
 * has the base commit, the changed files and the read statistics. */
#include "mcp/mcp-internal.h"
#include "util/error.h"

#include <string.h>

const char mcp_diff_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"paths\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"minLength\":1},"
    "\"maxItems\":4096,\"description\":\"Limit to these paths (relative to the workspace; "
    "directories include everything below).\"},"
    "\"stat_only\":{\"type\":\"boolean\",\"description\":\"Only the changed paths with A "
    "(added), M (modified), D (deleted), T (type changed); no patch.\"},"
    "\"sandbox_id\":{\"type\":\"string\",\"description\":\"Sandbox to act on; omit to use "
    "this session's default sandbox.\"}},\"additionalProperties\":false}";

const char mcp_diff_output[] =
    "{\"type\":\"object\",\"properties\":{\"base_commit\":{\"type\":\"string\"},"
    "\"files\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\"},\"status\":{\"type\":\"string\"}}}},"
    "\"patch_bytes\":{\"type\":\"integer\"},\"stats\":{\"type\":\"object\"}},"
    "\"required\":[\"base_commit\",\"files\"]}";

static bool diffed(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (mcp_is_error(msg)) {
    mcp_call_fail_api(c, msg);
    return true;
  }
  json_t *r = mcp_result_of(msg);
  json_t *files = json_array();
  size_t i;
  json_t *f;
  size_t stat_len = 0;
  json_array_foreach(json_object_get(r, "files"), i, f) {
    json_array_append_new(files, json_pack("{s:O, s:O, s:O?, s:O?}", "path",
                                           json_object_get(f, "path"), "status",
                                           json_object_get(f, "status"), "old_mode",
                                           json_object_get(f, "old_mode"), "new_mode",
                                           json_object_get(f, "new_mode")));
    stat_len += json_string_length(json_object_get(f, "path")) + 4;
  }
  const char *patch = json_string_value(json_object_get(r, "patch"));
  char *text = NULL;
  if (patch) {
    text = strdup(*patch ? patch : "(no changes)\n");
  } else {
    text = malloc(stat_len + 16);
    if (text) {
      size_t off = 0;
      json_array_foreach(files, i, f)
        off += (size_t)sprintf(text + off, "%s %s\n", json_string_value(json_object_get(f, "status")),
                               json_string_value(json_object_get(f, "path")));
      if (off == 0) strcpy(text, "(no changes)\n");
    }
  }
  if (!text) {
    json_decref(files);
    mcp_call_fail(c, CR_E_INTERNAL, "out of memory");
    return true;
  }
  json_t *sc = json_pack("{s:O, s:o, s:O}", "base_commit", json_object_get(r, "base_commit"),
                         "files", files, "stats", json_object_get(r, "stats"));
  if (patch) json_object_set_new(sc, "patch_bytes", json_integer((json_int_t)strlen(patch)));
  json_t *res = json_pack("{s:[{s:s, s:s}], s:o}", "content", "type", "text", "text", text,
                          "structuredContent", sc);
  free(text);
  mcp_call_finish(c, res);
  return true;
}

void mcp_diff_run(mcp_call *c) {
  json_t *p = json_pack("{s:s, s:b}", "sandbox_id", c->sandbox_id, "stat_only",
                        json_is_true(json_object_get(c->args, "stat_only")));
  json_t *paths = json_object_get(c->args, "paths");
  if (json_is_array(paths)) json_object_set(p, "paths", paths);
  mcp_api(c->s, c, "workspace.diff", p, diffed);
}
