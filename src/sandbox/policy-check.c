/* What a backend can enforce of a compiled policy (docs/policy.md). A
 * sandbox whose policy asks for more fails before anything boots
 * (backend_capability_mismatch): nothing is silently skipped. */
#include "sandbox/sandbox-internal.h"
#include "policy/policy.h"

#include <string.h>

static bool nonempty(json_t *j) {
  return (json_is_array(j) && json_array_size(j) > 0) ||
         (json_is_string(j) && json_string_length(j) > 0);
}

int sbx_policy_check(const backend_ops *be, json_t *compiled, const char *claimed_hash,
                     char **ret_hash, cr_error **err) {
  if (!json_is_object(compiled))
    return cr_error_set(err, CR_E_POLICY_INVALID, 0, "policy must be a compiled policy object");
  char hash[72];
  if (policy_hash_json(compiled, hash) < 0) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "policy");
  if (claimed_hash && strcmp(claimed_hash, hash))
    return cr_error_set(err, CR_E_POLICY_INVALID, 0,
                        "policy_hash %s does not match the policy (%s)", claimed_hash, hash);
  json_t *sb = json_object_get(compiled, "sandbox");
  json_t *caps = be->capabilities();
  /* egress is enforced by the backend itself, or by src/egress on the TAP
   * the backend attaches when this host can (CAP_NET_ADMIN, TUN, nftables) */
  const char *why = NULL;
  const char *netcap = json_string_value(json_object_get(caps, "network"));
  bool wants_net = egress_policy_wants_network(compiled);
  bool has_net = json_is_true(json_object_get(caps, "egress")) ||
                 (wants_net && netcap && !strcmp(netcap, "tap") && egress_host_capable(&why));
  if (!has_net && !why) why = "the backend attaches no network device";
  bool has_docker = json_is_true(json_object_get(caps, "docker"));
  json_decref(caps);
  if (!has_net && wants_net)
    return cr_error_set(err, CR_E_BACKEND_CAPABILITY_MISMATCH, 0,
                        "the policy allows network egress (sandbox.network.allow), but the %s "
                        "backend on this host cannot enforce it (%s); refusing to start a "
                        "sandbox whose egress would not be filtered. Remove network.allow to "
                        "run without network",
                        be->name, why ? why : "no per-sandbox egress");
  if (!has_docker && json_is_true(json_object_get(json_object_get(sb, "docker"), "required")))
    return cr_error_set(err, CR_E_BACKEND_CAPABILITY_MISMATCH, 0,
                        "the policy requires Docker in the sandbox (sandbox.docker.required), "
                        "which the %s backend does not provide yet", be->name);
  static const char *setup[] = {"dependencies", "services"};
  for (size_t i = 0; i < ELEMENTSOF(setup); i++)
    if (nonempty(json_object_get(sb, setup[i])))
      return cr_error_set(err, CR_E_BACKEND_CAPABILITY_MISMATCH, 0,
                          "the policy declares sandbox.%s, which are not run yet; refusing to "
                          "start a sandbox without them",
                          setup[i]);
  if (nonempty(json_object_get(json_object_get(sb, "run"), "before")))
    return cr_error_set(err, CR_E_BACKEND_CAPABILITY_MISMATCH, 0,
                        "the policy declares sandbox.run.before, which is not run yet; refusing "
                        "to start a sandbox without it");
  if (ret_hash) *ret_hash = strdup(hash);
  return 0;
}
