/* MCP protocol core: eras, handshake, discover, pagination, errors, and the
 * tools driven through a test double of the control API. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mcp/mcp-internal.h"
#include "util/base64.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- doubles ---- */

static json_t *out;      /* lines the session wrote, parsed */
static json_t *requests; /* control API requests it made */
static api_sink *held;   /* sink of the last execution.create (async tests) */
static bool exec_async;  /* execution.create: respond only, exit later */
static size_t big_output;
static const char *exit_reason; /* execution.exit: the guest could not exec */
static size_t bin_size;        /* file.read of /bin: a file of this many bytes */

static void write_line(void *ud, const char *line, size_t len) {
  assert_null(memchr(line, '\n', len));
  json_error_t e;
  json_t *m = json_loadb(line, len, 0, &e);
  assert_non_null(m);
  json_array_append_new(out, m);
}

static void sink_unref(api_sink *s) {
  if (s && --s->refs == 0) s->free(s);
}

/* like api_sink_send(): send borrows, we drop ours */
static void deliver(api_sink *sink, json_t *msg) {
  sink->send(sink, msg);
  json_decref(msg);
}

static void respond(api_sink *sink, json_t *req, json_t *result) {
  deliver(sink, json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id",
                             json_object_get(req, "id"), "result", result));
}
static void respond_error(api_sink *sink, json_t *req, const char *reason, const char *msg) {
  deliver(sink, json_pack("{s:s, s:O, s:{s:i, s:s, s:{s:s}}}", "jsonrpc", "2.0", "id",
                             json_object_get(req, "id"), "error", "code", -32000, "message",
                             msg, "data", "reason", reason));
}
static void notify(api_sink *sink, const char *method, json_t *params) {
  deliver(sink, json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params",
                             params));
}

static const char *file_content = "alpha\nbeta\nalpha\ngamma\n";

static void fake_dispatch(daemon_ctx *d, api_sink *sink, json_t *req) {
  (void)d;
  json_array_append(requests, req);
  const char *m = json_string_value(json_object_get(req, "method"));
  json_t *p = json_object_get(req, "params");
  const char *sid = json_string_value(json_object_get(p, "sandbox_id"));
  if (sid && !strcmp(sid, "nope")) {
    respond_error(sink, req, "sandbox_not_found", "sandbox nope not found");
    return;
  }
  if (!strcmp(m, "sandbox.create")) {
    respond(sink, req, json_pack("{s:s, s:s}", "id", "sbx1", "state", "ready"));
  } else if (!strcmp(m, "execution.create")) {
    respond(sink, req, json_pack("{s:s}", "execution_id", "ex1"));
    if (exec_async) {
      held = api_sink_ref(sink);
      return;
    }
    if (!json_is_true(json_object_get(p, "attach"))) return;
    if (big_output) {
      char *buf = malloc(big_output);
      memset(buf, 'x', big_output);
      char *b = cr_base64_encode((const uint8_t *)buf, big_output);
      notify(sink, "execution.output", json_pack("{s:s, s:s, s:s}", "execution_id", "ex1",
                                                 "stream", "stdout", "data", b));
      free(b);
      free(buf);
    } else {
      notify(sink, "execution.output", json_pack("{s:s, s:s, s:s}", "execution_id", "ex1",
                                                 "stream", "stdout", "data", "aGkK")); /* hi\n */
    }
    notify(sink, "execution.exit",
           json_pack("{s:s, s:{s:s, s:i, s:b, s:s?, s:s?}}", "execution_id", "ex1", "execution",
                     "state", "exited", "exit_code", exit_reason ? 127 : 0, "timed_out", 0,
                     "reason", exit_reason, "message",
                     exit_reason ? "command not found: nosuch" : NULL));
  } else if (!strcmp(m, "sandbox.terminate")) {
    respond(sink, req, json_pack("{s:s, s:s}", "id", json_string_value(json_object_get(p, "id")),
                                 "state", "terminated"));
  } else if (!strcmp(m, "sandbox.get")) {
    respond(sink, req, json_pack("{s:s, s:s}", "id", json_string_value(json_object_get(p, "id")),
                                 "state", "ready"));
  } else if (!strcmp(m, "execution.cancel")) {
    respond(sink, req, json_object());
  } else if (!strcmp(m, "file.stat")) {
    respond(sink, req, json_pack("{s:s, s:i, s:i}", "type", "file", "mode", 0100755, "size", 22));
  } else if (!strcmp(m, "file.read")) {
    const char *path = json_string_value(json_object_get(p, "path"));
    if (!strcmp(path, "/missing")) {
      respond_error(sink, req, "file_not_found", "/missing: no such file");
      return;
    }
    if (!strcmp(path, "/bin")) { /* byte i is i % 251, like file.read: offset/length */
      size_t off = (size_t)json_integer_value(json_object_get(p, "offset"));
      size_t len = (size_t)json_integer_value(json_object_get(p, "length"));
      size_t n = off >= bin_size ? 0 : MIN(len, bin_size - off);
      uint8_t *buf = malloc(n + 1);
      for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)((off + i) % 251);
      char *b = cr_base64_encode(buf, n);
      respond(sink, req, json_pack("{s:s, s:I, s:I, s:b}", "data", b, "size",
                                   (json_int_t)bin_size, "length", (json_int_t)n, "eof", 1));
      free(b);
      free(buf);
      return;
    }
    char *b = cr_base64_encode((const uint8_t *)file_content, strlen(file_content));
    respond(sink, req, json_pack("{s:s, s:i, s:i, s:b}", "data", b, "size",
                                 (int)strlen(file_content), "length", (int)strlen(file_content),
                                 "eof", 1));
    free(b);
  } else if (!strcmp(m, "file.write")) {
    if (!strcmp(json_string_value(json_object_get(p, "path")), "/no/dir/f")) {
      respond_error(sink, req, "file_not_found", "/no/dir/f: No such file or directory");
      return;
    }
    respond(sink, req, json_pack("{s:i}", "size", 1));
  } else if (!strcmp(m, "execution.read")) { /* base64 on the wire, as the daemon's socket */
    respond(sink, req, json_pack("{s:s, s:s, s:I, s:i, s:s, s:{s:s, s:i}}", "stdout", "b3V0Cg==",
                                 "stderr", "ZXJyCg==", "cursor", (json_int_t)8, "dropped", 0,
                                 "state", "exited", "execution", "state", "exited", "exit_code",
                                 3));
  } else if (!strcmp(m, "sandbox.list")) {
    respond(sink, req, json_pack("{s:[{s:s}]}", "sandboxes", "id", "sbx1"));
  } else {
    respond_error(sink, req, "internal_error", "not faked");
  }
}

static mcp_session *S;

static int setup(void **state) {
  out = json_array();
  requests = json_array();
  held = NULL;
  exec_async = false;
  big_output = 0;
  exit_reason = NULL;
  bin_size = 0;
  S = mcp_session_new_with_dispatch(NULL, fake_dispatch, write_line, NULL);
  return 0;
}

static int teardown(void **state) {
  mcp_tools_set_page_size(0);
  mcp_session_close(S);
  uv_run(uv_default_loop(), UV_RUN_NOWAIT); /* timer close callbacks */
  json_decref(out);
  json_decref(requests);
  return 0;
}

static void send_line(const char *line) { mcp_session_handle_line(S, line, strlen(line)); }

static void sendf(const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  send_line(buf);
}

static json_t *last(void) {
  size_t n = json_array_size(out);
  assert_true(n > 0);
  return json_array_get(out, n - 1);
}
static int error_code(json_t *m) {
  return (int)json_integer_value(json_object_get(json_object_get(m, "error"), "code"));
}
static json_t *result(json_t *m) {
  json_t *r = json_object_get(m, "result");
  assert_non_null(r);
  return r;
}

#define MODERN_META "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}"

/* ---- tests ---- */

static void test_initialize_versions(void **state) {
  const char *echo[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"};
  for (size_t i = 0; i < ELEMENTSOF(echo); i++) {
    sendf("{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"initialize\",\"params\":{"
          "\"protocolVersion\":\"%s\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\","
          "\"version\":\"1\"}}}", i, echo[i]);
    json_t *r = result(last());
    assert_string_equal(json_string_value(json_object_get(r, "protocolVersion")), echo[i]);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "serverInfo"), "name")),
                        "cleanroom");
    json_t *caps = json_object_get(r, "capabilities");
    assert_true(json_is_false(json_object_get(json_object_get(caps, "tools"), "listChanged")));
    assert_non_null(json_object_get(caps, "resources"));
    assert_non_null(json_object_get(caps, "logging"));
    assert_non_null(strstr(json_string_value(json_object_get(r, "instructions")), "exec"));
    assert_null(json_object_get(r, "resultType"));
  }
  send_line("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"initialize\",\"params\":{"
            "\"protocolVersion\":\"1999-01-01\",\"capabilities\":{}}}");
  assert_string_equal(json_string_value(json_object_get(result(last()), "protocolVersion")),
                      "2025-11-25");
  send_line("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
  size_t n = json_array_size(out);
  send_line("{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"ping\"}");
  assert_int_equal(json_array_size(out), n + 1);
  assert_int_equal(json_object_size(result(last())), 0);
}

static void test_discover_and_modern(void **state) {
  send_line("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server/discover\",\"params\":{" MODERN_META "}}");
  json_t *r = result(last());
  json_t *sv = json_object_get(r, "supportedVersions");
  bool has = false;
  for (size_t i = 0; i < json_array_size(sv); i++)
    if (!strcmp(json_string_value(json_array_get(sv, i)), "2026-07-28")) has = true;
  assert_true(has);
  assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(r, "_meta"),
                                        "io.modelcontextprotocol/serverInfo"), "name")), "cleanroom");
  assert_string_equal(json_string_value(json_object_get(r, "resultType")), "complete");
  assert_non_null(json_object_get(r, "capabilities"));
  assert_non_null(json_object_get(r, "instructions"));

  /* a legacy client probing without _meta gets it too */
  send_line("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"server/discover\"}");
  assert_non_null(json_object_get(result(last()), "supportedVersions"));

  send_line("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/list\",\"params\":{" MODERN_META "}}");
  r = result(last());
  assert_string_equal(json_string_value(json_object_get(r, "resultType")), "complete");
  assert_true(json_is_integer(json_object_get(r, "ttlMs")));
  assert_non_null(json_string_value(json_object_get(r, "cacheScope")));

  send_line("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\",\"params\":{" MODERN_META "}}");
  assert_string_equal(json_string_value(json_object_get(result(last()), "resultType")), "complete");

  /* legacy results carry no resultType */
  send_line("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/list\"}");
  assert_null(json_object_get(result(last()), "resultType"));
}

static void test_unsupported_version(void **state) {
  send_line("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\",\"params\":{\"_meta\":"
            "{\"io.modelcontextprotocol/protocolVersion\":\"2030-01-01\"}}}");
  json_t *m = last();
  assert_int_equal(error_code(m), -32022);
  assert_int_equal(json_integer_value(json_object_get(m, "id")), 7);
  json_t *data = json_object_get(json_object_get(m, "error"), "data");
  assert_string_equal(json_string_value(json_object_get(data, "requested")), "2030-01-01");
  assert_true(json_array_size(json_object_get(data, "supported")) >= 2);
}

static void check_tool_table(json_t *all) {
  const char *want[] = {"exec", "exec_start", "exec_poll", "exec_write", "exec_kill", "read_file",
                        "write_file", "edit_file", "list_files", "file_delete", "file_move",
                        "search_files", "process_list", "diff", "sandbox_create",
                        "sandbox_list", "sandbox_inspect", "egress_events", "sandbox_remove",
                        "snapshot_create", "snapshot_restore", "snapshot_list",
                        "snapshot_remove"};
  assert_int_equal(ELEMENTSOF(want), mcp_n_tools);
  assert_int_equal(json_array_size(all), mcp_n_tools);
  for (size_t i = 0; i < json_array_size(all); i++) {
    json_t *t = json_array_get(all, i);
    assert_string_equal(json_string_value(json_object_get(t, "name")), want[i]);
    assert_non_null(json_string_value(json_object_get(t, "description")));
    assert_non_null(json_string_value(json_object_get(t, "title")));
    json_t *is = json_object_get(t, "inputSchema");
    assert_string_equal(json_string_value(json_object_get(is, "type")), "object");
    json_t *os = json_object_get(t, "outputSchema");
    if (os) assert_string_equal(json_string_value(json_object_get(os, "type")), "object");
    assert_true(json_is_boolean(json_object_get(json_object_get(t, "annotations"), "readOnlyHint")));
  }
}

static char *cursor_of(const char *text) {
  return cr_base64_encode((const uint8_t *)text, strlen(text));
}

/* The default page holds the whole table: no nextCursor. */
static void test_tools_list_one_page(void **state) {
  assert_int_equal(mcp_tools_page_size(), MCP_TOOLS_PAGE_DEFAULT);
  assert_true(mcp_n_tools <= MCP_TOOLS_PAGE_DEFAULT);
  send_line("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}");
  json_t *r = result(last());
  assert_null(json_object_get(r, "nextCursor"));
  check_tool_table(json_object_get(r, "tools"));
  /* modern era: same page, plus the cache hints */
  send_line("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\",\"params\":{" MODERN_META "}}");
  r = result(last());
  assert_null(json_object_get(r, "nextCursor"));
  assert_int_equal(json_array_size(json_object_get(r, "tools")), mcp_n_tools);
  assert_string_equal(json_string_value(json_object_get(r, "resultType")), "complete");
}

/* Smaller pages: the cursors walk the table in order, in both eras. */
static void test_tools_list_pagination(void **state) {
  for (int modern = 0; modern <= 1; modern++) {
    mcp_tools_set_page_size(5);
    json_t *all = json_array();
    _cleanup_free_ char *cursor = NULL;
    size_t pages = 0;
    do {
      if (cursor)
        sendf("{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"tools/list\",\"params\":{%s\"cursor\":\"%s\"}}",
              pages, modern ? MODERN_META "," : "", cursor);
      else
        sendf("{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"tools/list\",\"params\":{%s}}", pages,
              modern ? MODERN_META : "");
      json_t *r = result(last());
      json_t *tools = json_object_get(r, "tools");
      assert_true(json_array_size(tools) >= 1 && json_array_size(tools) <= 5);
      json_array_extend(all, tools);
      free(cursor);
      const char *next = json_string_value(json_object_get(r, "nextCursor"));
      cursor = next ? strdup(next) : NULL;
      pages++;
      assert_true(pages <= mcp_n_tools);
    } while (cursor);
    assert_int_equal(pages, (mcp_n_tools + 4) / 5);
    check_tool_table(all);
    json_decref(all);
  }

  /* a cursor from a small page stays valid after the page size grows */
  mcp_tools_set_page_size(5);
  send_line("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}");
  _cleanup_free_ char *c5 = strdup(json_string_value(json_object_get(result(last()), "nextCursor")));
  mcp_tools_set_page_size(0);
  assert_int_equal(mcp_tools_page_size(), MCP_TOOLS_PAGE_DEFAULT);
  sendf("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\",\"params\":{\"cursor\":\"%s\"}}", c5);
  json_t *r = result(last());
  assert_int_equal(json_array_size(json_object_get(r, "tools")), mcp_n_tools - 5);
  assert_null(json_object_get(r, "nextCursor"));

  /* bad cursors are -32602 */
  char past[32];
  snprintf(past, sizeof(past), "tools:%zu", mcp_n_tools);
  const char *bad_plain[] = {"tools:0", past, "tools:3x", "tools:", "other:1"};
  for (size_t i = 0; i < ELEMENTSOF(bad_plain); i++) {
    _cleanup_free_ char *bc = cursor_of(bad_plain[i]);
    sendf("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/list\",\"params\":{\"cursor\":\"%s\"}}", bc);
    assert_int_equal(error_code(last()), -32602);
  }
  send_line("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/list\",\"params\":{\"cursor\":\"bogus!\"}}");
  assert_int_equal(error_code(last()), -32602);
  send_line("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/list\",\"params\":{\"cursor\":7}}");
  assert_int_equal(error_code(last()), -32602);
}

static void expect_invalid_params(const char *call) {
  sendf("{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"tools/call\",\"params\":%s}", call);
  json_t *m = last();
  assert_int_equal(error_code(m), -32602);
  assert_string_equal(json_string_value(json_object_get(m, "id")), "x");
}

static void test_invalid_params(void **state) {
  expect_invalid_params("{\"name\":\"no_such_tool\",\"arguments\":{}}");
  expect_invalid_params("{\"arguments\":{}}");
  expect_invalid_params("{\"name\":\"read_file\",\"arguments\":{}}");
  expect_invalid_params("{\"name\":\"read_file\",\"arguments\":{\"path\":7}}");
  expect_invalid_params("{\"name\":\"exec\",\"arguments\":{\"command\":\"true\",\"timeout_ms\":\"x\"}}");
  expect_invalid_params("{\"name\":\"exec\",\"arguments\":{\"command\":\"true\",\"argv\":[\"true\"]}}");
  expect_invalid_params("{\"name\":\"exec\",\"arguments\":{}}");
  expect_invalid_params("{\"name\":\"exec\",\"arguments\":{\"command\":\"true\",\"bogus\":1}}");
  expect_invalid_params("{\"name\":\"exec\",\"arguments\":{\"argv\":[1]}}");
  expect_invalid_params("{\"name\":\"read_file\",\"arguments\":{\"path\":\"/a\",\"encoding\":\"hex\"}}");
  expect_invalid_params("{\"name\":\"sandbox_list\",\"arguments\":[]}");
  assert_int_equal(json_array_size(requests), 0); /* nothing reached the daemon */
}

static void test_garbage_and_batches(void **state) {
  send_line("this is not json");
  json_t *m = last();
  assert_int_equal(error_code(m), -32700);
  assert_true(json_is_null(json_object_get(m, "id")));
  send_line("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]");
  assert_int_equal(error_code(last()), -32600);
  send_line("{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}");
  assert_int_equal(error_code(last()), -32600);
  send_line("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"no/such\"}");
  assert_int_equal(error_code(last()), -32601);
  size_t n = json_array_size(out);
  send_line("   ");
  send_line("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/whatever\"}");
  send_line("{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{}}");
  assert_int_equal(json_array_size(out), n);
  send_line("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\r\n");
  assert_int_equal(json_integer_value(json_object_get(last(), "id")), 3);
  assert_non_null(json_object_get(last(), "result"));
}

static void test_resources_and_logging(void **state) {
  send_line("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/templates/list\"}");
  json_t *t = json_array_get(json_object_get(result(last()), "resourceTemplates"), 0);
  assert_string_equal(json_string_value(json_object_get(t, "uriTemplate")), "cleanroom://sandboxes/{id}");
  send_line("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"resources/list\"}");
  t = json_array_get(json_object_get(result(last()), "resources"), 0);
  assert_string_equal(json_string_value(json_object_get(t, "uri")), "cleanroom://sandboxes");
  send_line("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"resources/read\",\"params\":{\"uri\":\"cleanroom://sandboxes\"}}");
  json_t *c = json_array_get(json_object_get(result(last()), "contents"), 0);
  assert_non_null(strstr(json_string_value(json_object_get(c, "text")), "sbx1"));
  send_line("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"resources/read\",\"params\":{\"uri\":\"file:///etc/passwd\"}}");
  assert_int_equal(error_code(last()), -32002);
  send_line("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"logging/setLevel\",\"params\":{\"level\":\"debug\"}}");
  assert_non_null(json_object_get(last(), "result"));
  send_line("{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"logging/setLevel\",\"params\":{\"level\":\"loud\"}}");
  assert_int_equal(error_code(last()), -32602);
}

static json_t *call_tool(const char *name, const char *args) {
  sendf("{\"jsonrpc\":\"2.0\",\"id\":42,\"method\":\"tools/call\",\"params\":{\"name\":\"%s\","
        "\"arguments\":%s}}", name, args);
  json_t *m = last();
  assert_int_equal(json_integer_value(json_object_get(m, "id")), 42);
  return result(m);
}

static void test_exec_default_sandbox(void **state) {
  send_line("{\"jsonrpc\":\"2.0\",\"method\":\"cleanroom/configure\",\"params\":{\"image\":\"img:1\"}}");
  json_t *r = call_tool("exec", "{\"command\":\"echo hi\"}");
  assert_false(json_is_true(json_object_get(r, "isError")));
  json_t *sc = json_object_get(r, "structuredContent");
  assert_int_equal(json_integer_value(json_object_get(sc, "exit_code")), 0);
  assert_null(json_object_get(sc, "stdout")); /* the output is in the text block only */
  assert_true(json_is_false(json_object_get(sc, "truncated")));
  assert_true(json_is_false(json_object_get(sc, "timed_out")));
  assert_string_equal(json_string_value(json_object_get(sc, "execution_id")), "ex1");
  /* the text block: the same JSON plus stdout and stderr */
  json_t *text = json_loads(json_string_value(json_object_get(json_array_get(json_object_get(r, "content"), 0), "text")), 0, NULL);
  assert_string_equal(json_string_value(json_object_get(text, "stdout")), "hi\n");
  json_object_del(text, "stdout");
  json_object_del(text, "stderr");
  assert_true(json_equal(text, sc));
  json_decref(text);
  /* sandbox.create with the configured image, then execution.create via sh -c */
  json_t *q0 = json_array_get(requests, 0);
  assert_string_equal(json_string_value(json_object_get(q0, "method")), "sandbox.create");
  assert_string_equal(json_string_value(json_object_get(json_object_get(q0, "params"), "image")), "img:1");
  json_t *q1 = json_object_get(json_array_get(requests, 1), "params");
  assert_string_equal(json_string_value(json_array_get(json_object_get(q1, "argv"), 1)), "-c");
  assert_string_equal(json_string_value(json_object_get(q1, "sandbox_id")), "sbx1");
  /* reused */
  call_tool("exec", "{\"argv\":[\"true\"]}");
  assert_int_equal(json_array_size(requests), 3);
}

static void test_exec_truncation(void **state) {
  big_output = (1u << 20) + 5;
  json_t *r = call_tool("exec", "{\"command\":\"yes\",\"max_output_bytes\":1024}");
  json_t *sc = json_object_get(r, "structuredContent");
  assert_true(json_is_true(json_object_get(sc, "truncated")));
  assert_int_equal(json_integer_value(json_object_get(json_object_get(sc, "dropped_bytes"), "stdout")),
                   (1u << 20) + 5 - 1024);
  json_t *text = json_loads(json_string_value(json_object_get(json_array_get(json_object_get(r, "content"), 0), "text")), 0, NULL);
  assert_non_null(strstr(json_string_value(json_object_get(text, "stdout")), "bytes of stdout dropped"));
  json_decref(text);
}

static void test_tool_errors(void **state) {
  json_t *r = call_tool("exec", "{\"command\":\"true\",\"sandbox_id\":\"nope\"}");
  assert_true(json_is_true(json_object_get(r, "isError")));
  const char *t = json_string_value(json_object_get(json_array_get(json_object_get(r, "content"), 0), "text"));
  assert_non_null(strstr(t, "sandbox_not_found"));
  assert_non_null(strstr(t, "sandbox_list"));
  r = call_tool("read_file", "{\"path\":\"/missing\",\"sandbox_id\":\"s\"}");
  assert_true(json_is_true(json_object_get(r, "isError")));
  r = call_tool("edit_file", "{\"path\":\"/f\",\"old_string\":\"zeta\",\"new_string\":\"x\",\"sandbox_id\":\"s\"}");
  assert_true(json_is_true(json_object_get(r, "isError")));
  t = json_string_value(json_object_get(json_array_get(json_object_get(r, "content"), 0), "text"));
  assert_non_null(strstr(t, "old_string not found in /f"));
  r = call_tool("edit_file", "{\"path\":\"/f\",\"old_string\":\"alpha\",\"new_string\":\"x\",\"sandbox_id\":\"s\"}");
  t = json_string_value(json_object_get(json_array_get(json_object_get(r, "content"), 0), "text"));
  assert_non_null(strstr(t, "matches 2 times"));
  r = call_tool("edit_file", "{\"path\":\"/f\",\"old_string\":\"alpha\",\"new_string\":\"x\",\"replace_all\":true,\"sandbox_id\":\"s\"}");
  assert_false(json_is_true(json_object_get(r, "isError")));
  assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "structuredContent"), "replacements")), 2);
  json_t *w = json_object_get(json_array_get(requests, json_array_size(requests) - 1), "params");
  assert_int_equal(json_integer_value(json_object_get(w, "mode")), 0755);
  unsigned char *raw;
  size_t n;
  const char *d = json_string_value(json_object_get(w, "data"));
  assert_int_equal(cr_base64_decode_lenient(d, strlen(d), &raw, &n), 0);
  assert_int_equal(n, strlen("x\nbeta\nx\ngamma\n"));
  assert_memory_equal(raw, "x\nbeta\nx\ngamma\n", n);
  free(raw);
  r = call_tool("read_file", "{\"path\":\"/f\",\"start_line\":2,\"end_line\":3,\"sandbox_id\":\"s\"}");
  assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r, "content"), 0), "text")),
                      "beta\nalpha\n");
  assert_null(json_object_get(json_object_get(r, "structuredContent"), "content"));
  assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "structuredContent"), "end_line")), 3);
}

static const char *text_of(json_t *r) {
  return json_string_value(json_object_get(json_array_get(json_object_get(r, "content"), 0), "text"));
}

/* read_file base64 pages: eof exactly on the chunk that reaches the end */
static void test_read_paging(void **state) {
  const size_t sizes[] = {0, 1, 1000, 1023, 1024, 1025, 5000};
  for (size_t k = 0; k < ELEMENTSOF(sizes); k++) {
    bin_size = sizes[k];
    size_t off = 0, got = 0;
    for (int calls = 0;; calls++) {
      assert_true(calls < 10);
      char args[200];
      snprintf(args, sizeof(args), "{\"path\":\"/bin\",\"encoding\":\"base64\",\"offset\":%zu,"
               "\"length\":1024,\"sandbox_id\":\"s\"}", off);
      json_t *r = call_tool("read_file", args);
      assert_false(json_is_true(json_object_get(r, "isError")));
      json_t *sc = json_object_get(r, "structuredContent");
      assert_null(json_object_get(sc, "content")); /* the bytes are in the text block only */
      unsigned char *raw;
      size_t n;
      assert_int_equal(cr_base64_decode_lenient(text_of(r), strlen(text_of(r)), &raw, &n), 0);
      for (size_t i = 0; i < n; i++) assert_int_equal(raw[i], (off + i) % 251);
      free(raw);
      assert_int_equal(json_integer_value(json_object_get(sc, "length")), n);
      got += n;
      bool eof = json_is_true(json_object_get(sc, "eof"));
      assert_int_equal(eof, off + n >= bin_size);
      if (eof) {
        assert_null(json_object_get(sc, "next_offset"));
        break;
      }
      assert_true(n > 0);
      off = (size_t)json_integer_value(json_object_get(sc, "next_offset"));
      assert_int_equal(off, got);
    }
    assert_int_equal(got, bin_size);
  }
}

static void test_write_limits(void **state) {
  /* the limits are in the schema, printed as integers */
  json_t *schema = NULL;
  for (size_t i = 0; i < mcp_n_tools; i++)
    if (!strcmp(mcp_tools[i].name, "write_file")) schema = mcp_tool_input_schema(&mcp_tools[i]);
  json_t *content = json_object_get(json_object_get(schema, "properties"), "content");
  assert_int_equal(json_integer_value(json_object_get(content, "maxLength")), 5592408);
  assert_non_null(strstr(json_string_value(json_object_get(content, "description")), "append"));
  /* 4 MiB + 1 of base64 content: -32602 naming the limit and append */
  size_t n = (4u << 20) + 3;
  char *raw = calloc(1, n);
  char *b64 = cr_base64_encode((const uint8_t *)raw, n);
  free(raw);
  size_t ll = strlen(b64) + 300;
  char *line = malloc(ll);
  snprintf(line, ll, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":"
           "\"write_file\",\"arguments\":{\"path\":\"/x\",\"encoding\":\"base64\",\"content\":\"%s\","
           "\"sandbox_id\":\"s\"}}}", b64);
  free(b64);
  send_line(line);
  free(line);
  assert_int_equal(error_code(last()), -32602);
  const char *m = json_string_value(json_object_get(json_object_get(last(), "error"), "message"));
  assert_non_null(strstr(m, "4194304"));
  assert_non_null(strstr(m, "append"));
  /* numbers in messages are integers, not 4.1943e+06 */
  send_line("{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/call\",\"params\":{\"name\":"
            "\"read_file\",\"arguments\":{\"path\":\"/x\",\"encoding\":\"base64\",\"length\":99999999}}}");
  m = json_string_value(json_object_get(json_object_get(last(), "error"), "message"));
  assert_non_null(strstr(m, "<= 4194304"));
  /* a missing directory: the hint names create_parents */
  json_t *r = call_tool("write_file", "{\"path\":\"/no/dir/f\",\"content\":\"x\",\"sandbox_id\":\"s\"}");
  assert_true(json_is_true(json_object_get(r, "isError")));
  assert_non_null(strstr(text_of(r), "create_parents"));
  /* append and mode reach file.write */
  r = call_tool("write_file", "{\"path\":\"/y\",\"content\":\"x\",\"append\":true,\"mode\":\"0755\","
                "\"sandbox_id\":\"s\"}");
  assert_false(json_is_true(json_object_get(r, "isError")));
  json_t *w = json_object_get(json_array_get(requests, json_array_size(requests) - 1), "params");
  assert_true(json_is_true(json_object_get(w, "append")));
  assert_int_equal(json_integer_value(json_object_get(w, "mode")), 0755);
  send_line("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":"
            "\"write_file\",\"arguments\":{\"path\":\"/y\",\"content\":\"x\",\"mode\":\"999\"}}}");
  assert_int_equal(error_code(last()), -32602);
}

/* a line the connection skipped: an error for its id, the session goes on */
static void test_reject_line(void **state) {
  json_t *id = json_integer(12);
  mcp_session_reject_line(S, id, 9u << 20);
  json_decref(id);
  assert_int_equal(error_code(last()), -32600);
  assert_int_equal(json_integer_value(json_object_get(last(), "id")), 12);
  const char *m = json_string_value(json_object_get(json_object_get(last(), "error"), "message"));
  assert_non_null(strstr(m, "8388608"));
  assert_non_null(strstr(m, "append"));
  send_line("{\"jsonrpc\":\"2.0\",\"id\":13,\"method\":\"ping\"}");
  assert_int_equal(json_integer_value(json_object_get(last(), "id")), 13);
  assert_non_null(json_object_get(last(), "result"));
}

static size_t count_method(const char *method, const char *id) {
  size_t n = 0;
  for (size_t i = 0; i < json_array_size(requests); i++) {
    json_t *q = json_array_get(requests, i);
    if (strcmp(json_string_value(json_object_get(q, "method")), method)) continue;
    json_t *p = json_object_get(q, "params");
    const char *qid = json_string_value(json_object_get(p, "id"));
    if (!id || (qid && !strcmp(qid, id))) n++;
  }
  return n;
}

static void test_names_and_idle(void **state) {
  /* --name n1 with a 1 ms idle timeout: created, remembered under n1 */
  send_line("{\"jsonrpc\":\"2.0\",\"method\":\"cleanroom/configure\",\"params\":{\"name\":\"n1\","
            "\"idle_timeout_ms\":1}}");
  call_tool("exec", "{\"argv\":[\"true\"]}");
  assert_int_equal(count_method("sandbox.create", NULL), 1);
  char *id = mcp_name_lookup("n1");
  assert_string_equal(id, "sbx1");
  free(id);
  /* a second session by name gets it back (sandbox.get, no create) and a
   * third pins it with --sandbox */
  mcp_session *s2 = mcp_session_new_with_dispatch(NULL, fake_dispatch, write_line, NULL);
  mcp_session *s3 = mcp_session_new_with_dispatch(NULL, fake_dispatch, write_line, NULL);
  const char *cfg2 = "{\"jsonrpc\":\"2.0\",\"method\":\"cleanroom/configure\",\"params\":{\"name\":\"n1\"}}";
  mcp_session_handle_line(s2, cfg2, strlen(cfg2));
  const char *ex = "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"exec\","
                   "\"arguments\":{\"argv\":[\"true\"]}}}";
  mcp_session_handle_line(s2, ex, strlen(ex));
  assert_int_equal(count_method("sandbox.create", NULL), 1);
  assert_int_equal(count_method("sandbox.get", "sbx1"), 1);
  const char *cfg3 = "{\"jsonrpc\":\"2.0\",\"method\":\"cleanroom/configure\",\"params\":{\"sandbox\":\"n1\"}}";
  mcp_session_handle_line(s3, cfg3, strlen(cfg3));
  assert_int_equal(mcp_sandbox_attached("sbx1"), 3);
  /* never removed while a session is attached */
  mcp_session_close(S);
  S = NULL;
  mcp_session_close(s2);
  uv_run(uv_default_loop(), UV_RUN_NOWAIT);
  assert_int_equal(count_method("sandbox.terminate", "sbx1"), 0);
  /* the last one leaves: removed once the timeout passes, its name forgotten */
  mcp_session_close(s3);
  uv_run(uv_default_loop(), UV_RUN_DEFAULT); /* returns when the idle timer has fired */
  assert_int_equal(count_method("sandbox.terminate", "sbx1"), 1);
  assert_null(mcp_name_lookup("n1"));
}

/* argv naming a missing program: isError, not exit 127 */
static void test_exec_not_found(void **state) {
  exit_reason = "command_not_found";
  json_t *r = call_tool("exec", "{\"argv\":[\"nosuch\"],\"sandbox_id\":\"s\"}");
  assert_true(json_is_true(json_object_get(r, "isError")));
  assert_non_null(strstr(text_of(r), "command_not_found"));
  /* messages never point the model at host CLI commands */
  r = call_tool("exec", "{\"command\":\"true\",\"sandbox_id\":\"nope\"}");
  assert_null(strstr(text_of(r), "'cleanroom "));
}

/* exec_poll: execution.read's streams reach the tool as bytes (the bridge
 * of a test double decodes the socket's base64, as api_call never encodes) */
static void test_exec_poll_streams(void **state) {
  json_t *r = call_tool("exec_poll", "{\"execution_id\":\"01exec\"}");
  assert_false(json_is_true(json_object_get(r, "isError")));
  const char *t = text_of(r);
  assert_non_null(t);
  assert_non_null(strstr(t, "out\\n"));
  assert_non_null(strstr(t, "err\\n"));
  json_t *sc = json_object_get(r, "structuredContent");
  assert_int_equal(json_integer_value(json_object_get(sc, "exit_code")), 3);
  assert_int_equal(json_integer_value(json_object_get(sc, "cursor")), 8);
}

static void test_cancel_kills(void **state) {
  exec_async = true;
  send_line("{\"jsonrpc\":\"2.0\",\"id\":77,\"method\":\"tools/call\",\"params\":{\"name\":\"exec\","
            "\"arguments\":{\"command\":\"sleep 100\",\"sandbox_id\":\"s\"},\"_meta\":{\"progressToken\":\"p\"}}}");
  assert_non_null(held);
  /* output arrives as progress */
  size_t n = json_array_size(out);
  notify(held, "execution.output", json_pack("{s:s, s:s, s:s}", "execution_id", "ex1", "stream",
                                             "stdout", "data", "aGkK"));
  assert_int_equal(json_array_size(out), n + 1);
  json_t *p = json_object_get(last(), "params");
  assert_string_equal(json_string_value(json_object_get(last(), "method")), "notifications/progress");
  assert_string_equal(json_string_value(json_object_get(p, "message")), "hi\n");
  double first = json_number_value(json_object_get(p, "progress"));
  notify(held, "execution.output", json_pack("{s:s, s:s, s:s}", "execution_id", "ex1", "stream",
                                             "stdout", "data", "aGkK"));
  assert_true(json_number_value(json_object_get(json_object_get(last(), "params"), "progress")) > first);
  n = json_array_size(out);
  send_line("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":77}}");
  json_t *q = json_array_get(requests, json_array_size(requests) - 1);
  assert_string_equal(json_string_value(json_object_get(q, "method")), "execution.cancel");
  assert_string_equal(json_string_value(json_object_get(json_object_get(q, "params"), "signal")), "KILL");
  /* the exit arrives; no response for a cancelled request */
  notify(held, "execution.exit", json_pack("{s:s, s:{s:s, s:n}}", "execution_id", "ex1",
                                           "execution", "state", "exited", "exit_code"));
  assert_int_equal(json_array_size(out), n);
  sink_unref(held);
}

static void test_close_kills_running(void **state) {
  exec_async = true;
  send_line("{\"jsonrpc\":\"2.0\",\"id\":78,\"method\":\"tools/call\",\"params\":{\"name\":\"exec\","
            "\"arguments\":{\"command\":\"sleep 100\",\"sandbox_id\":\"s\"}}}");
  mcp_session_close(S);
  json_t *q = json_array_get(requests, json_array_size(requests) - 1);
  assert_string_equal(json_string_value(json_object_get(q, "method")), "execution.cancel");
  size_t n = json_array_size(out);
  notify(held, "execution.exit", json_pack("{s:s, s:{s:s, s:n}}", "execution_id", "ex1",
                                           "execution", "state", "exited", "exit_code"));
  assert_int_equal(json_array_size(out), n);
  sink_unref(held); /* the last reference: frees the op and the session */
  S = NULL;
}

static void test_b64_and_outbuf(void **state) {
  const char bin[] = {'a', 0, 'b', (char)0xff, '\n'};
  char *e = cr_base64_encode((const uint8_t *)bin, sizeof(bin));
  unsigned char *d;
  size_t n;
  assert_int_equal(cr_base64_decode_lenient(e, strlen(e), &d, &n), 0);
  assert_int_equal(n, sizeof(bin));
  assert_memory_equal(d, bin, n);
  free(d);
  free(e);
  assert_true(cr_base64_decode_lenient("a", 1, &d, &n) < 0);
  mcp_outbuf b;
  mcp_outbuf_init(&b, 8);
  mcp_outbuf_add(&b, "0123", 4);
  mcp_outbuf_add(&b, "456789abcdef", 12);
  uint64_t dropped;
  json_t *t = mcp_outbuf_text(&b, "stdout", &dropped);
  assert_int_equal(dropped, 8);
  const char *s = json_string_value(t);
  assert_int_equal(strncmp(s, "0123", 4), 0);
  assert_string_equal(s + strlen(s) - 4, "cdef");
  json_decref(t);
  mcp_outbuf_done(&b);
}

int main(void) {
  /* names live in the data dir: a temporary one; no idle timers unless a
   * test asks for them */
  char dir[] = "/tmp/cr-test-mcp-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  setenv("CLEANROOM_DATA_DIR", dir, 1);
  setenv("CLEANROOM_MCP_IDLE_TIMEOUT", "0", 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_initialize_versions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_discover_and_modern, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unsupported_version, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tools_list_one_page, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tools_list_pagination, setup, teardown),
      cmocka_unit_test_setup_teardown(test_invalid_params, setup, teardown),
      cmocka_unit_test_setup_teardown(test_garbage_and_batches, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resources_and_logging, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exec_default_sandbox, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exec_truncation, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tool_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_kills, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_paging, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_limits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reject_line, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exec_not_found, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exec_poll_streams, setup, teardown),
      cmocka_unit_test_setup_teardown(test_names_and_idle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_kills_running, setup, teardown),
      cmocka_unit_test_setup_teardown(test_b64_and_outbuf, setup, teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  char path[300];
  snprintf(path, sizeof(path), "%s/mcp-names.json", dir);
  unlink(path);
  rmdir(dir);
  return rc;
}
