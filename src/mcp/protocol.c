/* MCP protocol handlers that need no control API: the handshake of both
 * eras (initialize, server/discover), the supported versions, tools/list
 * with its cursor, logging/setLevel. */
#include "mcp/mcp-internal.h"
#include "util/base64.h"
#include "config.h"

#include <stdio.h>
#include <string.h>

static const char *const versions[] = {
    MCP_MODERN_VERSION, "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05",
};
#define LEGACY_NEWEST "2025-11-25"

static const char *const log_levels[] = {
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency",
};

static const char instructions[] =
    "Cleanroom runs your commands in an isolated Linux microVM (a sandbox) with "
    "deny-by-default network egress, so nothing you run touches the host.\n"
    "- Just call `exec` with `command` (run by /bin/sh -c) or `argv`: the first "
    "call creates this session's default sandbox (it can take a while to boot) and "
    "later calls reuse it. Output is capped (max_output_bytes, head and tail kept; "
    "the result says how many bytes were dropped); timeout_ms defaults to 60000.\n"
    "- For anything long-running (builds, servers, test suites over a minute) use "
    "`exec_start`, then `exec_poll` with the returned cursor until state is "
    "exited; `exec_write` feeds stdin, `exec_kill` stops it.\n"
    "- Files: `read_file` (text by line range, or base64 with offset/length: "
    "page with next_offset until eof is true), `write_file` (at most 4 MiB per "
    "call; append:true for the next pieces), `file_move`, `file_delete`, "
    "`search_files` (grep -E, bounded), `edit_file` (exact old_string -> new_string; read the file "
    "first), `list_files`.\n"
    "- `sandbox_create` makes additional sandboxes (pass their sandbox_id to "
    "other tools), `sandbox_list`/`sandbox_inspect` show state, `sandbox_remove` "
    "deletes one.\n"
    "A tool failure comes back with isError and a reason code (e.g. "
    "sandbox_not_found, file_not_found) plus what to do next.";

/* ---- protocol ---- */

static json_t *capabilities(void) {
  return json_pack("{s:{s:b}, s:{s:b, s:b}, s:{}}", "tools", "listChanged", 0, "resources",
                   "subscribe", 0, "listChanged", 0, "logging");
}

static json_t *server_info(void) {
  return json_pack("{s:s, s:s, s:s}", "name", MCP_SERVER_NAME, "title", "Cleanroom",
                   "version", CR_VERSION);
}

bool mcp_version_known(const char *v) {
  for (size_t i = 0; i < ELEMENTSOF(versions); i++)
    if (!strcmp(versions[i], v)) return true;
  return false;
}

json_t *mcp_versions_json(void) {
  json_t *a = json_array();
  for (size_t i = 0; i < ELEMENTSOF(versions); i++) json_array_append_new(a, json_string(versions[i]));
  return a;
}

void mcp_handle_initialize(mcp_session *s, json_t *id, json_t *params) {
  const char *want = json_string_value(json_object_get(params, "protocolVersion"));
  if (!want) {
    mcp_send_error(s, id, API_INVALID_PARAMS, "initialize needs params.protocolVersion");
    return;
  }
  const char *v = mcp_version_known(want) && strcmp(want, MCP_MODERN_VERSION) ? want : LEGACY_NEWEST;
  free(s->legacy_version);
  s->legacy_version = strdup(v);
  s->initialized = true;
  json_t *r = json_pack("{s:s, s:o, s:o, s:s}", "protocolVersion", v, "capabilities",
                        capabilities(), "serverInfo", server_info(), "instructions",
                        instructions);
  mcp_send_result(s, id, r);
  json_decref(r);
}

void mcp_handle_discover(mcp_session *s, json_t *id) {
  json_t *r = json_pack("{s:o, s:o, s:s, s:{s:o}}", "supportedVersions", mcp_versions_json(),
                        "capabilities", capabilities(), "instructions", instructions, "_meta",
                        MCP_META_SERVER_INFO, server_info());
  mcp_decorate(r, true, 3600000, "public");
  mcp_send_result(s, id, r);
  json_decref(r);
}

static size_t tools_page = MCP_TOOLS_PAGE_DEFAULT;

void mcp_tools_set_page_size(size_t n) { tools_page = n > 0 ? n : MCP_TOOLS_PAGE_DEFAULT; }

size_t mcp_tools_page_size(void) { return tools_page; }

/* Cursor: base64 of "tools:<offset>"; any offset inside the table is valid,
 * so a cursor survives a change of the page size. */
void mcp_handle_tools_list(mcp_session *s, json_t *id, json_t *params, bool modern) {
  size_t start = 0;
  json_t *cur = json_object_get(params, "cursor");
  if (cur && !json_is_null(cur)) {
    const char *c = json_string_value(cur);
    unsigned char *raw = NULL;
    size_t n = 0;
    unsigned long off = 0;
    int used = 0;
    bool ok = c && cr_base64_decode_lenient(c, strlen(c), &raw, &n) >= 0 && n < 32;
    if (ok) {
      char buf[32];
      memcpy(buf, raw, n);
      buf[n] = 0;
      ok = sscanf(buf, "tools:%lu%n", &off, &used) == 1 && (size_t)used == n &&
           off > 0 && off < mcp_n_tools;
    }
    free(raw);
    if (!ok) {
      mcp_send_error(s, id, API_INVALID_PARAMS, "invalid cursor; call tools/list without one");
      return;
    }
    start = off;
  }
  json_t *tools = json_array();
  size_t end = MIN(start + tools_page, mcp_n_tools);
  for (size_t i = start; i < end; i++) json_array_append_new(tools, mcp_tool_describe(&mcp_tools[i]));
  json_t *r = json_pack("{s:o}", "tools", tools);
  if (end < mcp_n_tools) {
    char buf[32];
    snprintf(buf, sizeof(buf), "tools:%zu", end);
    _cleanup_free_ char *c = cr_base64_encode((const uint8_t *)buf, strlen(buf));
    json_object_set_new(r, "nextCursor", json_string(c));
  }
  mcp_decorate(r, modern, 3600000, "public");
  mcp_send_result(s, id, r);
  json_decref(r);
}

void mcp_handle_set_level(mcp_session *s, json_t *id, json_t *params, bool modern) {
  const char *level = json_string_value(json_object_get(params, "level"));
  for (size_t i = 0; level && i < ELEMENTSOF(log_levels); i++)
    if (!strcmp(level, log_levels[i])) {
      s->log_level = (int)i;
      json_t *r = json_object();
      mcp_decorate(r, modern, 0, NULL);
      mcp_send_result(s, id, r);
      json_decref(r);
      return;
    }
  mcp_send_error(s, id, API_INVALID_PARAMS,
             "level must be one of debug, info, notice, warning, error, critical, alert, emergency");
}
