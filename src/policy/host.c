/* Host names, IP addresses and CIDRs: normalization and comparison. */
#include "policy/policy-internal.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <string.h>

#define HOST_MAX_INPUT 1024

static bool label_char_ok(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Checks an ASCII, lowercase name: labels 1-63, total <= 253. */
static const char *check_name(const char *s) {
  size_t total = strlen(s);
  if (total == 0) return "empty host name";
  if (total > 253) return "host name longer than 253 characters";
  const char *label = s;
  for (const char *p = s;; p++) {
    if (*p == '.' || *p == '\0') {
      size_t n = (size_t)(p - label);
      if (n == 0) return "empty label in host name";
      if (n > 63) return "label longer than 63 characters in host name";
      if (label[0] == '-' || label[n - 1] == '-')
        return "label starts or ends with '-' in host name";
      if (*p == '\0') {
        /* a numeric last label makes resolvers read the name as an IPv4
         * address in another notation ("127.1", "0x7f.1") */
        if (strspn(label, "0123456789") == n) return "last label of a host name cannot be numeric";
        if (n > 2 && label[0] == '0' && label[1] == 'x' && strspn(label + 2, "0123456789abcdef") == n - 2)
          return "last label of a host name cannot be numeric";
        break;
      }
      label = p + 1;
      continue;
    }
    if (*p == '*') return "'*' is only allowed as the whole first label ('*.example.com')";
    if (!label_char_ok(*p)) return "invalid character in host name";
  }
  return NULL;
}

int policy_normalize_host(const char *host, char **ret, const char **ret_problem) {
  const char *problem = NULL;
  _cleanup_free_ char *copy = NULL, *out = NULL;
  if (!host || !*host) {
    problem = "empty host name";
    goto fail;
  }
  size_t len = strnlen(host, HOST_MAX_INPUT + 1);
  if (len > HOST_MAX_INPUT) {
    problem = "host name too long";
    goto fail;
  }
  bool wildcard = false;
  if (host[0] == '*' && host[1] == '.') {
    wildcard = true;
    host += 2;
    len -= 2;
  }
  copy = strndup(host, len);
  if (!copy) return -ENOMEM;
  if (len > 0 && copy[len - 1] == '.') copy[--len] = '\0';

  bool ascii = true;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)copy[i];
    if (c >= 0x80) ascii = false;
    else if (c >= 'A' && c <= 'Z') copy[i] = (char)(c - 'A' + 'a');
    else if (c < 0x21 || c == 0x7f) {
      problem = "control character or space in host name";
      goto fail;
    }
  }
  if (ascii) {
    out = TAKE_PTR(copy);
  } else {
    char *idn = NULL;
    int rc = idn2_to_ascii_8z(copy, &idn, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
    if (rc != IDN2_OK) {
      problem = rc == IDN2_MALLOC ? "out of memory" : "invalid internationalized host name";
      if (rc == IDN2_MALLOC) return -ENOMEM;
      goto fail;
    }
    /* libidn2 allocates with malloc(): safe to free() */
    out = idn;
    for (char *p = out; *p; p++)
      if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
  }
  problem = check_name(out);
  if (problem) goto fail;
  if (wildcard) {
    if (!strchr(out, '.')) {
      problem = "wildcard needs at least two labels after '*.' (e.g. '*.example.com')";
      goto fail;
    }
    char *w = NULL;
    if (asprintf(&w, "*.%s", out) < 0) return -ENOMEM;
    if (strlen(w) > 253) {
      free(w);
      problem = "host name longer than 253 characters";
      goto fail;
    }
    free(out);
    out = w;
  }
  *ret = TAKE_PTR(out);
  return 0;
fail:
  if (ret_problem) *ret_problem = problem;
  return -EINVAL;
}

int policy_addr_parse(const char *s, policy_addr *ret, bool *ret_host_bits) {
  char buf[INET6_ADDRSTRLEN + 8];
  size_t len = strnlen(s, sizeof(buf));
  if (len >= sizeof(buf) || len == 0) return -EINVAL;
  memcpy(buf, s, len + 1);
  char *slash = strchr(buf, '/');
  long prefix = -1;
  if (slash) {
    *slash = '\0';
    const char *d = slash + 1;
    if (!*d || strlen(d) > 3) return -EINVAL;
    prefix = 0;
    for (; *d; d++) {
      if (*d < '0' || *d > '9') return -EINVAL;
      prefix = prefix * 10 + (*d - '0');
    }
  }
  policy_addr a = {0};
  if (inet_pton(AF_INET, buf, a.bytes) == 1) {
    a.family = AF_INET;
    if (prefix > 32) return -ERANGE;
    a.prefix = prefix < 0 ? 32 : (unsigned)prefix;
  } else if (inet_pton(AF_INET6, buf, a.bytes) == 1) {
    a.family = AF_INET6;
    if (prefix > 128) return -ERANGE;
    a.prefix = prefix < 0 ? 128 : (unsigned)prefix;
  } else {
    return -EINVAL;
  }
  bool host_bits = false;
  unsigned nbytes = a.family == AF_INET ? 4 : 16;
  for (unsigned i = 0; i < nbytes; i++) {
    unsigned bit0 = i * 8;
    uint8_t mask;
    if (bit0 + 8 <= a.prefix) mask = 0xff;
    else if (bit0 >= a.prefix) mask = 0;
    else mask = (uint8_t)(0xff << (8 - (a.prefix - bit0)));
    if (a.bytes[i] & (uint8_t)~mask) host_bits = true;
    a.bytes[i] &= mask;
  }
  if (ret_host_bits) *ret_host_bits = host_bits;
  *ret = a;
  return 0;
}

void policy_addr_format(const policy_addr *a, char *buf, size_t size) {
  char tmp[INET6_ADDRSTRLEN];
  if (!inet_ntop(a->family, a->bytes, tmp, sizeof(tmp))) {
    snprintf(buf, size, "?");
    return;
  }
  unsigned full = a->family == AF_INET ? 32 : 128;
  if (a->prefix == full)
    snprintf(buf, size, "%s", tmp);
  else
    snprintf(buf, size, "%s/%u", tmp, a->prefix);
}

bool policy_addr_contains(const policy_addr *net, const policy_addr *a) {
  if (net->family != a->family) return false;
  unsigned full = net->family == AF_INET ? 32 : 128;
  (void)full;
  for (unsigned i = 0; i * 8 < net->prefix; i++) {
    unsigned left = net->prefix - i * 8;
    uint8_t mask = left >= 8 ? 0xff : (uint8_t)(0xff << (8 - left));
    if ((a->bytes[i] & mask) != net->bytes[i]) return false;
  }
  return true;
}

/* OCI reference: [registry[:port]/]path[:tag][@sha256:<64 hex>]. */
bool policy_image_ref_valid(const char *ref, bool *ret_pinned, const char **ret_problem) {
  const char *problem = NULL;
  bool pinned = false;
  size_t len = strnlen(ref, 1025);
  if (len == 0) {
    problem = "empty image ref";
    goto out;
  }
  if (len > 1024) {
    problem = "image ref longer than 1024 characters";
    goto out;
  }
  const char *at = strchr(ref, '@');
  size_t name_len = at ? (size_t)(at - ref) : len;
  if (at) {
    const char *d = at + 1;
    if (strncmp(d, "sha256:", 7) != 0) {
      problem = "digest must be 'sha256:<64 hex digits>'";
      goto out;
    }
    d += 7;
    size_t n = 0;
    for (; d[n]; n++)
      if (!((d[n] >= '0' && d[n] <= '9') || (d[n] >= 'a' && d[n] <= 'f'))) break;
    if (n != 64 || d[n]) {
      problem = "digest must be 'sha256:' followed by 64 lowercase hex digits";
      goto out;
    }
    pinned = true;
  }
  if (name_len == 0) {
    problem = "image ref has no repository name";
    goto out;
  }
  /* the tag follows the last ':' after the last '/' */
  size_t last_slash = 0;
  bool has_slash = false;
  for (size_t i = 0; i < name_len; i++)
    if (ref[i] == '/') {
      last_slash = i;
      has_slash = true;
    }
  size_t tag_at = 0;
  for (size_t i = has_slash ? last_slash : 0; i < name_len; i++)
    if (ref[i] == ':') tag_at = i;
  size_t repo_end = tag_at ? tag_at : name_len;
  for (size_t i = 0; i < repo_end; i++) {
    char c = ref[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || c == '/' || c == ':' || (c >= 'A' && c <= 'Z');
    if (!ok) {
      problem = "invalid character in image name";
      goto out;
    }
    /* upper case is only valid in the registry host part */
    if (c >= 'A' && c <= 'Z' && has_slash && i > (size_t)(strchr(ref, '/') - ref)) {
      problem = "image repository names must be lowercase";
      goto out;
    }
  }
  if (ref[0] == '/' || ref[repo_end - 1] == '/' || strstr(ref, "//")) {
    problem = "empty path component in image name";
    goto out;
  }
  if (tag_at) {
    size_t tlen = name_len - tag_at - 1;
    if (tlen == 0 || tlen > 128) {
      problem = "image tag must be 1-128 characters";
      goto out;
    }
    for (size_t i = tag_at + 1; i < name_len; i++) {
      char c = ref[i];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_' || c == '.' || c == '-')) {
        problem = "invalid character in image tag";
        goto out;
      }
    }
  }
out:
  if (ret_problem) *ret_problem = problem;
  if (ret_pinned) *ret_pinned = pinned;
  return problem == NULL;
}
