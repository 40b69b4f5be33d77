#!/usr/bin/env python3
"""Checks schemas/cleanroom.schema.json: it is a valid JSON Schema 2020-12,
every example policy and valid fixture validates against it, and a few
invalid documents do not. Usage: check-schema.py SCHEMA EXAMPLES_DIR DATA_DIR.
Exits 77 (meson: skipped) when python3-jsonschema or python3-yaml is missing."""
import json
import os
import sys

try:
    import jsonschema
    import yaml
except ImportError as e:
    print(f"skipping: {e}", file=sys.stderr)
    sys.exit(77)

schema_path, examples_dir, data_dir = sys.argv[1:4]
with open(schema_path) as f:
    schema = json.load(f)
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)

failures = 0
checked = 0
files = [os.path.join(examples_dir, n) for n in sorted(os.listdir(examples_dir)) if n.endswith(".yaml")]
files += [os.path.join(data_dir, n) for n in ("full.yaml", "full-respelled.yaml", "match.yaml",
                                              "bump.yaml", "bump-quoted.yaml")]
for path in files:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    errors = list(validator.iter_errors(doc))
    checked += 1
    for e in errors:
        failures += 1
        print(f"{path}: {'/'.join(str(p) for p in e.absolute_path)}: {e.message}", file=sys.stderr)

invalid = [
    "version: 2\n",
    "sandbox: {}\n",
    "version: 1\nsandbx: {}\n",
    "version: 1\nsandbox: {network: {default: allow}}\n",
    "version: 1\nsandbox: {network: {allow: [{host: a.com, ports: [70000]}]}}\n",
    "version: 1\nsandbox: {resources: {memory: lots}}\n",
    "version: 1\nsandbox: {dependencies: [{name: a}]}\n",
    "version: 1\nrepository: {path: relative}\n",
]
for text in invalid:
    if validator.is_valid(yaml.safe_load(text)):
        failures += 1
        print(f"schema accepts an invalid policy: {text!r}", file=sys.stderr)

print(f"{checked} policies valid, {len(invalid)} invalid ones rejected" if not failures
      else f"{failures} failures")
sys.exit(1 if failures else 0)
