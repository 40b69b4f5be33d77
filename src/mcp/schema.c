/* The subset of JSON Schema our tools' inputSchema uses: type, properties,
 * required, additionalProperties:false, enum, items, minimum, maximum,
 * minLength, maxLength, pattern. Enough to answer -32602 before any work starts. */
#include "mcp/mcp-internal.h"

#include <math.h>
#include <regex.h>
#include <string.h>

/* A limit as the schema wrote it: 4194304, not 4.1943e+06. */
static void fmt_number(char *out, size_t n, double v) {
  if (floor(v) == v && fabs(v) < 9007199254740992.0) snprintf(out, n, "%lld", (long long)v);
  else snprintf(out, n, "%g", v);
}

/* JSON Schema counts characters (code points), not bytes. */
static size_t utf8_chars(const char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
  return k;
}

static bool type_is(json_t *v, const char *type) {
  if (!strcmp(type, "object")) return json_is_object(v);
  if (!strcmp(type, "array")) return json_is_array(v);
  if (!strcmp(type, "string")) return json_is_string(v);
  if (!strcmp(type, "boolean")) return json_is_boolean(v);
  if (!strcmp(type, "null")) return json_is_null(v);
  if (!strcmp(type, "number")) return json_is_number(v);
  if (!strcmp(type, "integer"))
    return json_is_integer(v) ||
           (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v) &&
            fabs(json_real_value(v)) < 9007199254740992.0);
  return true;
}

static const char *check(json_t *schema, json_t *v, const char *where, char *buf,
                         size_t buflen, int depth) {
  if (!json_is_object(schema) || depth > 16) return NULL;
  json_t *type = json_object_get(schema, "type");
  if (json_is_string(type) && !type_is(v, json_string_value(type))) {
    snprintf(buf, buflen, "%s must be of type %s", where, json_string_value(type));
    return buf;
  }
  if (json_is_array(type)) {
    bool ok = false;
    size_t i;
    json_t *t;
    json_array_foreach(type, i, t) if (json_is_string(t) && type_is(v, json_string_value(t))) ok = true;
    if (!ok) {
      snprintf(buf, buflen, "%s has the wrong type", where);
      return buf;
    }
  }
  json_t *en = json_object_get(schema, "enum");
  if (json_is_array(en)) {
    bool ok = false;
    size_t i;
    json_t *e;
    json_array_foreach(en, i, e) if (json_equal(e, v)) ok = true;
    if (!ok) {
      _cleanup_free_ char *allowed = json_dumps(en, JSON_COMPACT);
      snprintf(buf, buflen, "%s must be one of %s", where, allowed ? allowed : "the enum");
      return buf;
    }
  }
  if (json_is_number(v)) {
    json_t *mn = json_object_get(schema, "minimum"), *mx = json_object_get(schema, "maximum");
    char num[40];
    if (json_is_number(mn) && json_number_value(v) < json_number_value(mn)) {
      fmt_number(num, sizeof(num), json_number_value(mn));
      snprintf(buf, buflen, "%s must be >= %s", where, num);
      return buf;
    }
    if (json_is_number(mx) && json_number_value(v) > json_number_value(mx)) {
      fmt_number(num, sizeof(num), json_number_value(mx));
      snprintf(buf, buflen, "%s must be <= %s", where, num);
      return buf;
    }
  }
  if (json_is_string(v)) {
    json_t *ml = json_object_get(schema, "minLength");
    if (json_is_integer(ml) && json_string_length(v) < (size_t)json_integer_value(ml)) {
      snprintf(buf, buflen, "%s must not be empty", where);
      return buf;
    }
    json_t *xl = json_object_get(schema, "maxLength");
    if (json_is_integer(xl) && json_string_length(v) > (size_t)json_integer_value(xl)) {
      size_t chars = utf8_chars(json_string_value(v), json_string_length(v));
      if (chars > (size_t)json_integer_value(xl)) {
        const char *desc = json_string_value(json_object_get(schema, "description"));
        snprintf(buf, buflen, "%s is %zu characters, over its maxLength of %lld%s%s", where,
                 chars, (long long)json_integer_value(xl), desc ? ". " : "", desc ? desc : "");
        return buf;
      }
    }
    const char *pat = json_string_value(json_object_get(schema, "pattern"));
    if (pat) {
      regex_t re;
      if (regcomp(&re, pat, REG_EXTENDED | REG_NOSUB) == 0) {
        bool ok = regexec(&re, json_string_value(v), 0, NULL, 0) == 0;
        regfree(&re);
        if (!ok) {
          snprintf(buf, buflen, "%s must match %s", where, pat);
          return buf;
        }
      }
    }
  }
  if (json_is_object(v)) {
    json_t *props = json_object_get(schema, "properties");
    json_t *req = json_object_get(schema, "required");
    size_t i;
    json_t *r;
    json_array_foreach(req, i, r) {
      if (json_is_string(r) && !json_object_get(v, json_string_value(r))) {
        snprintf(buf, buflen, "missing required parameter '%s'%s%s", json_string_value(r),
                 strcmp(where, "arguments") ? " in " : "", strcmp(where, "arguments") ? where : "");
        return buf;
      }
    }
    json_t *addl = json_object_get(schema, "additionalProperties");
    const char *key;
    json_t *pv;
    json_object_foreach(v, key, pv) {
      json_t *ps = json_object_get(props, key);
      char sub[160];
      if (!strcmp(where, "arguments"))
        snprintf(sub, sizeof(sub), "'%.100s'", key);
      else
        snprintf(sub, sizeof(sub), "%.40s.%.100s", where, key);
      if (!ps) {
        if (json_is_false(addl)) {
          snprintf(buf, buflen, "unknown parameter %s", sub);
          return buf;
        }
        if (json_is_object(addl)) ps = addl;
        else continue;
      }
      const char *m = check(ps, pv, sub, buf, buflen, depth + 1);
      if (m) return m;
    }
  }
  if (json_is_array(v)) {
    json_t *items = json_object_get(schema, "items");
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
      char sub[160];
      snprintf(sub, sizeof(sub), "%.100s[%zu]", where, i);
      const char *m = check(items, e, sub, buf, buflen, depth + 1);
      if (m) return m;
    }
  }
  return NULL;
}

const char *mcp_schema_check(json_t *schema, json_t *v, char *buf, size_t buflen) {
  return check(schema, v, "arguments", buf, buflen, 0);
}
