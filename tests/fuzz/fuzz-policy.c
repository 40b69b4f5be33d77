/* Fuzz target: cleanroom.yaml parsing, validation, compilation, matching and
 * the in-place image ref edit, all on untrusted bytes. */
#include "policy/policy.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  policy *p = NULL;
  policy_diags *d = NULL;
  cr_error *err = NULL;
  if (policy_parse((const char *)data, size, "fuzz.yaml", &p, &d, &err) >= 0) {
    char hash[72];
    (void)policy_hash(p, hash);
    static const char *const hosts[] = {"api.github.com", "a.example.com", "10.1.2.3",
                                        "[2001:db8::1]", "xn--bcher-kva.example", ""};
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
      const char *reason;
      (void)policy_match(p, hosts[i], 443, &reason);
      (void)policy_host_may_resolve(p, hosts[i]);
    }
    policy_free(p);
  }
  for (size_t i = 0; d && i < d->n; i++) free(policy_diag_format(&d->items[i]));
  policy_diags_free(d);
  cr_error_free(err);
  err = NULL;

  char *out = NULL;
  size_t out_len = 0;
  if (policy_edit_image_ref((const char *)data, size, "fuzz.yaml", "x/y@sha256:"
                            "0000000000000000000000000000000000000000000000000000000000000000",
                            &out, &out_len, &err) >= 0)
    free(out);
  cr_error_free(err);
  return 0;
}
