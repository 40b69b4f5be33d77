/* MCP tools, the files group: read_file, write_file, edit_file,
 * list_files, file_delete, file_move, search_files. */
#include "mcp/tools.h"
#include "util/base64.h"

/* ---- schemas ---- */

const char mcp_read_file_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute path in the "
    "sandbox.\"},"
    "\"encoding\":{\"enum\":[\"utf8\",\"base64\"],\"description\":\"utf8 (default): text, "
    "by lines; base64: raw bytes, paged by offset/length.\"},"
    "\"start_line\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"utf8: first line "
    "(1-based).\"},"
    "\"end_line\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"utf8: last line, "
    "inclusive.\"},"
    "\"offset\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"base64: first byte "
    "(pass the previous result's next_offset).\"},"
    "\"length\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":4194304,\"description\":"
    "\"base64: bytes to read (default 1048576, at most 4194304).\"}," SANDBOX_ID_PROP
    "},\"required\":[\"path\"],\"additionalProperties\":false}";

/* the bytes/text are in the first text block only */
const char mcp_read_file_output[] =
    "{\"type\":\"object\",\"description\":\"Metadata: the file's text (utf8) or its base64 "
    "(base64) is the first text block.\",\"properties\":{\"path\":{\"type\":\"string\"},"
    "\"encoding\":{\"type\":\"string\"},\"size\":{\"type\":\"integer\"},"
    "\"truncated\":{\"type\":\"boolean\"},\"offset\":{\"type\":\"integer\"},"
    "\"length\":{\"type\":\"integer\"},\"eof\":{\"type\":\"boolean\"},"
    "\"next_offset\":{\"type\":\"integer\"},\"start_line\":{\"type\":\"integer\"},"
    "\"end_line\":{\"type\":\"integer\"},\"total_lines\":{\"type\":\"integer\"},"
    "\"next_start_line\":{\"type\":\"integer\"}},"
    "\"required\":[\"path\",\"encoding\",\"truncated\"]}";

const char mcp_write_file_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute path in the "
    "sandbox.\"},"
    "\"content\":{\"type\":\"string\",\"maxLength\":5592408,\"description\":\"The content "
    "(at most 4194304 bytes per call: 4 MiB of UTF-8, or 5592408 characters of base64). "
    "Write larger files in pieces: the first call without append, the rest with "
    "append:true.\"},"
    "\"encoding\":{\"enum\":[\"utf8\",\"base64\"],\"description\":\"How content is encoded "
    "(default utf8).\"},"
    "\"append\":{\"type\":\"boolean\",\"description\":\"Append content to the file instead "
    "of replacing it (for writing large files in pieces).\"},"
    "\"mode\":{\"type\":\"string\",\"pattern\":\"^[0-7]{3,4}$\",\"description\":\"Octal "
    "permissions like \\\"0755\\\" (default \\\"0644\\\").\"},"
    "\"create_parents\":{\"type\":\"boolean\",\"description\":\"Create missing parent "
    "directories.\"}," SANDBOX_ID_PROP
    "},\"required\":[\"path\",\"content\"],\"additionalProperties\":false}";

const char mcp_write_file_output[] =
    "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},"
    "\"size\":{\"type\":\"integer\"},\"bytes_written\":{\"type\":\"integer\"}},"
    "\"required\":[\"path\"]}";

const char mcp_edit_file_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\",\"minLength\":1},"
    "\"old_string\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Exact text to "
    "replace (whitespace matters).\"},"
    "\"new_string\":{\"type\":\"string\",\"description\":\"Replacement text.\"},"
    "\"replace_all\":{\"type\":\"boolean\",\"description\":\"Replace every occurrence "
    "(default: old_string must occur exactly once).\"}," SANDBOX_ID_PROP
    "},\"required\":[\"path\",\"old_string\",\"new_string\"],\"additionalProperties\":false}";

const char mcp_edit_file_output[] =
    "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},"
    "\"replacements\":{\"type\":\"integer\"},\"size\":{\"type\":\"integer\"}},"
    "\"required\":[\"path\",\"replacements\"]}";

const char mcp_list_files_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\",\"description\":\"Directory (default /).\"},"
    "\"depth\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":10,\"description\":\"Levels "
    "to descend (default 1).\"}," SANDBOX_ID_PROP "},\"additionalProperties\":false}";

const char mcp_list_files_output[] =
    "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},"
    "\"entries\":{\"type\":\"array\"},\"truncated\":{\"type\":\"boolean\"}},"
    "\"required\":[\"path\",\"entries\"]}";

/* ---- files ---- */

const char *mcp_check_read(json_t *args) {
  const char *enc = json_string_value(json_object_get(args, "encoding"));
  bool b64 = enc && !strcmp(enc, "base64");
  if (b64 && (json_object_get(args, "start_line") || json_object_get(args, "end_line")))
    return "start_line/end_line apply to encoding utf8; use offset/length with base64";
  if (!b64 && (json_object_get(args, "offset") || json_object_get(args, "length")))
    return "offset/length apply to encoding base64; use start_line/end_line for text";
  json_t *s = json_object_get(args, "start_line"), *e = json_object_get(args, "end_line");
  if (s && e && json_integer_value(e) < json_integer_value(s)) return "end_line is before start_line";
  return NULL;
}

static void read_text(mcp_call *c, json_t *r, const api_bytes *bytes) {
  if (!bytes) {
    mcp_call_fail(c, CR_E_INTERNAL, "file.read returned no data");
    return;
  }
  const unsigned char *raw = bytes->data ? bytes->data : (const unsigned char *)"";
  size_t n = bytes->len;
  bool eof = !json_is_false(json_object_get(r, "eof"));
  json_int_t first = arg_int(c, "start_line", 1), last = arg_int(c, "end_line", 0);
  /* find the byte range of lines [first, last] */
  size_t start = 0, line = 1, i = 0;
  while (line < (size_t)first && i < n) {
    if (raw[i++] == '\n') {
      line++;
      start = i;
    }
  }
  if (line < (size_t)first) start = n;
  size_t end = start, shown_last = line - 1, total_lines = 0;
  bool truncated = false;
  for (i = start; i < n; i++) {
    if (raw[i] == '\n') {
      shown_last++;
      if (i + 1 - start > TEXT_RETURN_MAX) {
        truncated = true;
        shown_last--;
        break;
      }
      end = i + 1;
      if (last && shown_last >= (size_t)last) break;
    }
  }
  if (i >= n && end < n && !truncated) { /* last line without newline */
    if (n - start <= TEXT_RETURN_MAX) {
      end = n;
      shown_last++;
    } else {
      truncated = true;
    }
  }
  if (end == start && start < n && truncated) { /* one giant line */
    end = start + TEXT_RETURN_MAX;
    shown_last = line;
  }
  for (size_t k = 0; k < n; k++) total_lines += raw[k] == '\n';
  if (n && raw[n - 1] != '\n') total_lines++;
  if (!eof) truncated = true;
  bool more = end < n || !eof;
  bool binary = memchr(raw, 0, n) != NULL;
  json_t *content = mcp_text_json((const char *)raw + start, end - start);
  json_t *res = json_pack("{s:s, s:s, s:I, s:I, s:I, s:b}", "path", arg_str(c, "path"),
                          "encoding", "utf8", "size",
                          json_integer_value(json_object_get(r, "size")), "start_line",
                          (json_int_t)first, "end_line", (json_int_t)shown_last, "truncated",
                          truncated && more);
  if (eof) json_object_set_new(res, "total_lines", json_integer((json_int_t)total_lines));
  if (more && (!last || shown_last < (size_t)last))
    json_object_set_new(res, "next_start_line", json_integer((json_int_t)shown_last + 1));
  /* content blocks: the text itself, then a note */
  char note[400];
  snprintf(note, sizeof(note),
           "[cleanroom: %s lines %lld-%zu%s%s%s]", arg_str(c, "path"), (long long)first, shown_last,
           truncated && more ? "; output truncated, call read_file with start_line=" : "",
           truncated && more ? "the next_start_line value for more" : "",
           binary ? "; the file has NUL bytes: use encoding base64 for exact bytes" : "");
  json_t *blocks = json_pack("[{s:s, s:o}, {s:s, s:s}]", "type", "text", "text",
                             content ? content : json_string(""), "type", "text", "text", note);
  mcp_call_finish(c, json_pack("{s:o, s:o}", "content", blocks, "structuredContent", res));
}

static bool file_read_done(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *r = mcp_result_of(msg);
  const char *enc = arg_str(c, "encoding");
  if (!enc || strcmp(enc, "base64") != 0) {
    read_text(c, r, msg->bytes);
    return true;
  }
  /* the model gets text: base64, encoded once, here */
  _cleanup_free_ char *b64 =
      msg->bytes ? cr_base64_encode(msg->bytes->data ? msg->bytes->data : (const uint8_t *)"",
                                    msg->bytes->len)
                 : NULL;
  if (!b64) {
    mcp_call_fail(c, CR_E_INTERNAL, "file.read returned no data");
    return true;
  }
  /* eof from the file's size, not from a short read: a chunk that ends
   * before the end of the file is never the last one */
  size_t n = (size_t)json_integer_value(json_object_get(r, "length"));
  uint64_t off = (uint64_t)arg_int(c, "offset", 0);
  uint64_t size = (uint64_t)json_integer_value(json_object_get(r, "size"));
  bool eof = off + n >= size;
  json_t *res = json_pack("{s:s, s:s, s:I, s:I, s:I, s:b, s:b}", "path", arg_str(c, "path"),
                          "encoding", "base64", "size", (json_int_t)size, "offset",
                          (json_int_t)off, "length", (json_int_t)n, "eof", eof, "truncated", !eof);
  if (!eof) json_object_set_new(res, "next_offset", json_integer((json_int_t)(off + n)));
  char note[300];
  if (eof)
    snprintf(note, sizeof(note), "[cleanroom: %s: %zu bytes from offset %llu, base64 in the "
             "first block; end of file (size %llu)]", arg_str(c, "path"), n,
             (unsigned long long)off, (unsigned long long)size);
  else
    snprintf(note, sizeof(note), "[cleanroom: %s: %zu bytes from offset %llu, base64 in the "
             "first block; NOT the end (size %llu): call read_file again with offset=%llu]",
             arg_str(c, "path"), n, (unsigned long long)off, (unsigned long long)size,
             (unsigned long long)(off + n));
  json_t *blocks = json_pack("[{s:s, s:s}, {s:s, s:s}]", "type", "text", "text", b64, "type",
                             "text", "text", note);
  mcp_call_finish(c, json_pack("{s:o, s:o}", "content", blocks, "structuredContent", res));
  return true;
}

void mcp_read_file_run(mcp_call *c) {
  const char *enc = arg_str(c, "encoding");
  bool b64 = enc && !strcmp(enc, "base64");
  json_t *p = json_pack("{s:s, s:s, s:I, s:I}", "sandbox_id", c->sandbox_id, "path",
                        arg_str(c, "path"), "offset", b64 ? arg_int(c, "offset", 0) : 0,
                        "length", b64 ? arg_int(c, "length", B64_DEFAULT_LEN) : (json_int_t)TEXT_READ_MAX);
  mcp_api(c->s, c, "file.read", p, file_read_done);
}

/* Decoded content of write_file (NULL + message on bad input). */
static unsigned char *write_content(json_t *args, size_t *ret_n, const char **ret_problem) {
  const char *enc = json_string_value(json_object_get(args, "encoding"));
  json_t *cv = json_object_get(args, "content");
  const char *content = json_string_value(cv);
  size_t len = json_string_length(cv);
  unsigned char *raw = NULL;
  *ret_problem = NULL;
  if (enc && !strcmp(enc, "base64")) {
    if (cr_base64_decode_lenient(content, len, &raw, ret_n) < 0) {
      *ret_problem = "'content' is not valid base64";
      return NULL;
    }
  } else {
    raw = malloc(len + 1);
    if (!raw) {
      *ret_problem = "out of memory";
      return NULL;
    }
    memcpy(raw, content, len);
    *ret_n = len;
  }
  if (*ret_n > WRITE_MAX) {
    free(raw);
    *ret_problem = "'content' is larger than 4194304 bytes, the most write_file takes per "
                   "call: write the file in pieces of at most 4194304 bytes, the first call "
                   "without append and the rest with append:true";
    return NULL;
  }
  return raw;
}

const char *mcp_check_write_file(json_t *args) {
  size_t n;
  const char *problem;
  free(write_content(args, &n, &problem));
  return problem;
}

static bool written(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (mcp_is_error(msg)) {
    const char *reason = msg->reason;
    if (reason && !strcmp(reason, CR_E_FILE_NOT_FOUND) && !arg_bool(c, "create_parents") &&
        !strcmp(c->tool->name, "write_file")) {
      const char *m = msg->message;
      mcp_call_fail(c, reason, "%s; set create_parents:true to create the missing directories",
                    m ? m : "no such directory");
      return true;
    }
    mcp_call_fail_api(c, msg);
    return true;
  }
  json_t *r = json_pack("{s:s, s:I}", "path", arg_str(c, "path"), "size",
                        json_integer_value(json_object_get(mcp_result_of(msg), "size")));
  if (c->scratch) json_object_update(r, c->scratch);
  mcp_call_finish_structured(c, r);
  return true;
}

void mcp_write_file_run(mcp_call *c) {
  size_t n = 0;
  const char *problem;
  _cleanup_free_ unsigned char *raw = write_content(c->args, &n, &problem);
  if (!raw) {
    mcp_call_fail(c, CR_E_INVALID_ARGUMENT, "%s", problem ? problem : "bad content");
    return;
  }
  json_int_t mode = 0644;
  const char *m = arg_str(c, "mode");
  if (m) mode = (json_int_t)strtol(m, NULL, 8);
  json_t *p = json_pack("{s:s, s:s, s:I, s:b, s:b}", "sandbox_id", c->sandbox_id, "path",
                        arg_str(c, "path"), "mode", mode, "parents",
                        arg_bool(c, "create_parents"), "append", arg_bool(c, "append"));
  c->scratch = json_pack("{s:I}", "bytes_written", (json_int_t)n);
  mcp_api_bytes(c->s, c, "file.write", p, raw, n, written);
}

/* edit_file: file.stat (keep the mode) -> file.read -> replace -> file.write */
static bool edit_read(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *r = mcp_result_of(msg);
  const char *path = arg_str(c, "path");
  if (!json_is_true(json_object_get(r, "eof"))) {
    mcp_call_fail(c, CR_E_FILE_ERROR, "%s is larger than %u bytes, too large for edit_file; "
                  "edit it with exec (e.g. sed)", path, TEXT_READ_MAX);
    return true;
  }
  if (!msg->bytes) {
    mcp_call_fail(c, CR_E_INTERNAL, "file.read returned no data");
    return true;
  }
  size_t n = msg->bytes->len;
  unsigned char *raw = malloc(n + 1); /* memmem below wants a non-NULL base */
  if (!raw) {
    mcp_call_fail(c, CR_E_INTERNAL, "out of memory");
    return true;
  }
  if (n) memcpy(raw, msg->bytes->data, n);
  const char *old = arg_str(c, "old_string");
  size_t olen = json_string_length(json_object_get(c->args, "old_string"));
  const char *new = arg_str(c, "new_string");
  size_t nlen = json_string_length(json_object_get(c->args, "new_string"));
  size_t count = 0;
  for (const unsigned char *p = raw; (p = memmem(p, n - (size_t)(p - raw), old, olen)); p += olen) count++;
  if (count == 0) {
    free(raw);
    mcp_call_fail(c, CR_E_INVALID_ARGUMENT, "old_string not found in %s; read_file it first and "
                  "copy the exact text (whitespace and indentation matter)", path);
    return true;
  }
  if (count > 1 && !arg_bool(c, "replace_all")) {
    free(raw);
    mcp_call_fail(c, CR_E_INVALID_ARGUMENT, "old_string matches %zu times in %s; add context "
                  "to make it unique or set replace_all", count, path);
    return true;
  }
  size_t out_len = n - count * olen + count * nlen;
  _cleanup_free_ char *out = malloc(out_len + 1);
  if (!out) {
    free(raw);
    mcp_call_fail(c, CR_E_INTERNAL, "out of memory");
    return true;
  }
  size_t o = 0;
  const unsigned char *p = raw, *end = raw + n;
  const unsigned char *hit;
  while ((hit = memmem(p, (size_t)(end - p), old, olen))) {
    memcpy(out + o, p, (size_t)(hit - p));
    o += (size_t)(hit - p);
    memcpy(out + o, new, nlen);
    o += nlen;
    p = hit + olen;
  }
  memcpy(out + o, p, (size_t)(end - p));
  o += (size_t)(end - p);
  free(raw);
  json_int_t mode = json_integer_value(json_object_get(c->scratch, "mode"));
  json_t *wp = json_pack("{s:s, s:s, s:I}", "sandbox_id", c->sandbox_id, "path", path, "mode",
                         mode ? mode : 0644);
  json_decref(c->scratch);
  c->scratch = json_pack("{s:I}", "replacements", (json_int_t)count);
  mcp_api_bytes(c->s, c, "file.write", wp, out, o, written);
  return true;
}

static bool edit_stat(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *r = mcp_result_of(msg);
  const char *type = json_string_value(json_object_get(r, "type"));
  if (type && strcmp(type, "file") != 0 && strcmp(type, "regular") != 0) {
    mcp_call_fail(c, CR_E_FILE_ERROR, "%s is a %s, not a regular file", arg_str(c, "path"), type);
    return true;
  }
  c->scratch = json_pack("{s:I}", "mode", json_integer_value(json_object_get(r, "mode")) & 07777);
  mcp_api(c->s, c, "file.read",
          json_pack("{s:s, s:s, s:I, s:I}", "sandbox_id", c->sandbox_id, "path",
                    arg_str(c, "path"), "offset", (json_int_t)0, "length", (json_int_t)TEXT_READ_MAX),
          edit_read);
  return true;
}

void mcp_edit_file_run(mcp_call *c) {
  mcp_api(c->s, c, "file.stat",
          json_pack("{s:s, s:s}", "sandbox_id", c->sandbox_id, "path", arg_str(c, "path")),
          edit_stat);
}

static bool listed(mcp_op *op, const mcp_msg *msg) {
  if (!msg->response) return false;
  mcp_call *c = op->call;
  if (failed_response(op, msg)) return true;
  json_t *entries = json_object_get(mcp_result_of(msg), "entries");
  json_t *list = json_array();
  size_t i;
  json_t *e;
  json_array_foreach(entries, i, e) {
    if (i >= LIST_MAX_ENTRIES) break;
    json_array_append(list, e);
  }
  json_t *r = json_pack("{s:s, s:o, s:b}", "path", arg_str(c, "path") ?: "/", "entries", list,
                        "truncated", json_array_size(entries) > LIST_MAX_ENTRIES);
  if (json_array_size(entries) > LIST_MAX_ENTRIES)
    json_object_set_new(r, "total_entries", json_integer((json_int_t)json_array_size(entries)));
  mcp_call_finish_structured(c, r);
  return true;
}

void mcp_list_files_run(mcp_call *c) {
  mcp_api(c->s, c, "file.list",
          json_pack("{s:s, s:s, s:I}", "sandbox_id", c->sandbox_id, "path",
                    arg_str(c, "path") ?: "/", "depth", arg_int(c, "depth", 1)),
          listed);
}

/* ---- file_delete, file_move, search_files: guest programs run with argv ----
 * (rm, mv, find + grep of the image; busybox has them all). The program's
 * exit status and stderr become the answer. */

#define SEARCH_DEFAULT_RESULTS 200
#define SEARCH_MAX_RESULTS 2000
#define SEARCH_MAX_LINE 400
#define HELPER_OUTPUT (512u * 1024)

const char mcp_file_delete_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"path\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute path in the "
    "sandbox.\"},"
    "\"recursive\":{\"type\":\"boolean\",\"description\":\"Delete a directory with everything "
    "in it (default false: files and empty directories only).\"}," SANDBOX_ID_PROP
    "},\"required\":[\"path\"],\"additionalProperties\":false}";

const char mcp_file_move_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"from\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute source path.\"},"
    "\"to\":{\"type\":\"string\",\"minLength\":1,\"description\":\"Absolute destination "
    "path.\"},"
    "\"overwrite\":{\"type\":\"boolean\",\"description\":\"Replace an existing destination "
    "(default false: fail).\"}," SANDBOX_ID_PROP
    "},\"required\":[\"from\",\"to\"],\"additionalProperties\":false}";

const char mcp_search_files_input[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"pattern\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":1000,\"description\":"
    "\"Extended regular expression (grep -E) matched against each line.\"},"
    "\"path\":{\"type\":\"string\",\"description\":\"Directory or file to search (default "
    "/).\"},"
    "\"glob\":{\"type\":\"string\",\"description\":\"Only files whose name matches this "
    "shell glob, e.g. *.c\"},"
    "\"case_insensitive\":{\"type\":\"boolean\"},"
    "\"max_results\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":2000,\"description\":"
    "\"At most this many matching lines (default 200, at most 2000); lines are cut at 400 "
    "bytes.\"}," SANDBOX_ID_PROP
    "},\"required\":[\"pattern\"],\"additionalProperties\":false}";

const char mcp_search_files_output[] =
    "{\"type\":\"object\",\"properties\":{\"matches\":{\"type\":\"array\",\"items\":{\"type\":"
    "\"object\",\"properties\":{\"path\":{\"type\":\"string\"},\"line\":{\"type\":\"integer\"},"
    "\"text\":{\"type\":\"string\"}}}},\"truncated\":{\"type\":\"boolean\"}},"
    "\"required\":[\"matches\",\"truncated\"]}";

const char *mcp_check_abs(json_t *args) {
  static const char *const keys[] = {"path", "from", "to"};
  for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
    const char *p = json_string_value(json_object_get(args, keys[i]));
    if (p && p[0] != '/') return "paths must be absolute (start with /)";
  }
  const char *p = json_string_value(json_object_get(args, "path"));
  if (p && !strcmp(p, "/") && json_object_get(args, "recursive")) return "refusing to delete /";
  return NULL;
}

/* Runs argv in the sandbox; done(c, exit_code, stdout, stderr) on exit. */
typedef void (*helper_done_fn)(mcp_call *c, int code, const char *out, size_t out_len,
                               const char *err, size_t err_len);

static bool helper_msg(mcp_op *op, const mcp_msg *msg) {
  mcp_call *c = op->call;
  if (msg->response) {
    if (mcp_is_error(msg)) {
      mcp_call_fail_api(c, msg);
      return true;
    }
    return false;
  }
  const char *method = msg->method;
  json_t *p = msg->params;
  if (!method || !mcp_call_alive(c)) return false;
  if (!strcmp(method, "execution.output")) {
    const char *stream = json_string_value(json_object_get(p, "stream"));
    if (!msg->bytes) return false;
    mcp_outbuf_add(&c->out[stream && !strcmp(stream, "stderr")], (const char *)msg->bytes->data,
                   msg->bytes->len);
    return false;
  }
  if (!strcmp(method, "execution.exit")) {
    json_t *ex = json_object_get(p, "execution");
    json_t *code = json_object_get(ex, "exit_code");
    helper_done_fn done = (helper_done_fn)c->helper_done;
    mcp_outbuf *o = &c->out[0], *e = &c->out[1];
    if (!json_is_integer(code)) {
      const char *m = json_string_value(json_object_get(ex, "message"));
      mcp_call_fail(c, CR_E_INTERNAL, "the helper command did not run: %s", m ? m : "no exit code");
      return true;
    }
    /* the head part of the buffer holds everything up to its cap */
    done(c, (int)json_integer_value(code), o->head ? o->head : "", o->head_len,
         e->head ? e->head : "", e->head_len);
    return true;
  }
  return false;
}

static void run_helper(mcp_call *c, json_t *argv /* stolen */, helper_done_fn done) {
  mcp_outbuf_init(&c->out[0], HELPER_OUTPUT * 2);
  mcp_outbuf_init(&c->out[1], 8192);
  c->helper_done = (void (*)(void))done;
  json_t *p = json_pack("{s:s, s:o, s:b, s:I}", "sandbox_id", c->sandbox_id, "argv", argv,
                        "attach", 1, "timeout_ms", (json_int_t)60000);
  mcp_api(c->s, c, "execution.create", p, helper_msg);
}

static void helper_fail(mcp_call *c, const char *what, const char *err, size_t err_len) {
  _cleanup_free_ char *e = mcp_utf8_lossy(err, MIN(err_len, 1000), NULL);
  while (e && *e && e[strlen(e) - 1] == '\n') e[strlen(e) - 1] = 0;
  const char *reason = e && (strstr(e, "No such file") || strstr(e, "can't stat") ||
                             strstr(e, "can't remove"))
                           ? CR_E_FILE_NOT_FOUND
                           : CR_E_FILE_ERROR;
  mcp_call_fail(c, reason, "%s: %s", what, e && *e ? e : "failed");
}

static void deleted(mcp_call *c, int code, const char *out, size_t out_len, const char *err,
                    size_t err_len) {
  if (code != 0) return helper_fail(c, arg_str(c, "path"), err, err_len);
  mcp_call_finish_structured(c, json_pack("{s:s, s:b}", "path", arg_str(c, "path"), "deleted", 1));
}

void mcp_file_delete_run(mcp_call *c) {
  const char *path = arg_str(c, "path");
  json_t *argv = arg_bool(c, "recursive") ? json_pack("[s, s, s, s]", "rm", "-r", "--", path)
                                          : json_pack("[s, s, s, s, s]", "sh", "-c",
                                                      "if [ -d \"$1\" ] && [ ! -L \"$1\" ]; then "
                                                      "rmdir -- \"$1\"; else rm -- \"$1\"; fi",
                                                      "sh", path);
  run_helper(c, argv, deleted);
}

static void moved(mcp_call *c, int code, const char *out, size_t out_len, const char *err,
                  size_t err_len) {
  if (code == 17) {
    mcp_call_fail(c, CR_E_FILE_ERROR, "%s exists; pass overwrite:true to replace it",
                  arg_str(c, "to"));
    return;
  }
  if (code != 0) return helper_fail(c, arg_str(c, "from"), err, err_len);
  mcp_call_finish_structured(c, json_pack("{s:s, s:s}", "from", arg_str(c, "from"), "to",
                                          arg_str(c, "to")));
}

void mcp_file_move_run(mcp_call *c) {
  const char *script = arg_bool(c, "overwrite")
                           ? "mv -f -- \"$1\" \"$2\""
                           : "if [ -e \"$2\" ] || [ -L \"$2\" ]; then exit 17; fi; mv -- \"$1\" \"$2\"";
  run_helper(c, json_pack("[s, s, s, s, s, s]", "sh", "-c", script, "sh", arg_str(c, "from"),
                          arg_str(c, "to")),
             moved);
}

static void searched(mcp_call *c, int code, const char *out, size_t out_len, const char *err,
                     size_t err_len) {
  /* grep: 0 matches found, 1 none; find may say 1 for unreadable dirs */
  if (code > 1 && out_len == 0) return helper_fail(c, "search_files", err, err_len);
  size_t max = (size_t)arg_int(c, "max_results", SEARCH_DEFAULT_RESULTS);
  json_t *matches = json_array();
  bool truncated = false;
  const char *p = out, *end = out + out_len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) { /* a cut line at the cap */
      truncated = true;
      break;
    }
    if (json_array_size(matches) >= max) {
      truncated = true;
      break;
    }
    /* path:line:text (paths with ':' are split at the first ":<digits>:") */
    const char *q = p;
    const char *c1 = NULL;
    while ((q = memchr(q, ':', (size_t)(nl - q)))) {
      const char *d = q + 1;
      while (d < nl && *d >= '0' && *d <= '9') d++;
      if (d > q + 1 && d < nl && *d == ':') {
        c1 = q;
        break;
      }
      q++;
    }
    if (c1) {
      const char *num = c1 + 1;
      const char *c2 = memchr(num, ':', (size_t)(nl - num));
      size_t tl = (size_t)(nl - c2 - 1);
      json_t *path = mcp_text_json(p, (size_t)(c1 - p));
      json_t *text = mcp_text_json(c2 + 1, MIN(tl, SEARCH_MAX_LINE));
      json_array_append_new(matches, json_pack("{s:o, s:I, s:o}", "path", path, "line",
                                               (json_int_t)strtoll(num, NULL, 10), "text", text));
    }
    p = nl + 1;
  }
  if (c->out[0].total > out_len) truncated = true;
  mcp_call_finish_structured(c, json_pack("{s:o, s:b}", "matches", matches, "truncated", truncated));
}

void mcp_search_files_run(mcp_call *c) {
  size_t max = (size_t)arg_int(c, "max_results", SEARCH_DEFAULT_RESULTS);
  char head[32];
  snprintf(head, sizeof(head), "%zu", max + 1);
  /* find prunes nothing but /proc and /sys; grep -I skips binary files where supported */
  const char *script =
      "p=$1; g=$2; pat=$3; n=$4; fl=-nHE; [ \"$5\" = 1 ] && fl=-nHEi; "
      "find \"$p\" \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type f "
      "-name \"$g\" -exec grep $fl -e \"$pat\" -- {} + 2>/dev/null | head -n \"$n\"";
  run_helper(c, json_pack("[s, s, s, s, s, s, s, s, s]", "sh", "-c", script, "sh",
                          arg_str(c, "path") ?: "/", arg_str(c, "glob") ?: "*",
                          arg_str(c, "pattern"), head, arg_bool(c, "case_insensitive") ? "1" : "0"),
             searched);
}

const char *mcp_check_search(json_t *args) {
  const char *p = json_string_value(json_object_get(args, "path"));
  if (p && p[0] != '/') return "'path' must be absolute";
  return NULL;
}
