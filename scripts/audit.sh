#!/usr/bin/env bash
# Dependency audit: every pinned requirement checked against a vulnerability database
# (pip-audit, pinned, in a tool venv of its own under var/). Exit codes:
#   0  no known vulnerability outside scripts/audit-exceptions.txt, or the audit could
#      not run because the database is unreachable (printed as "skipped: …"; a network
#      problem never fails CI)
#   1  a known vulnerability that the exception list does not cover
# NEWSMON_AUDIT_JSON=report.json evaluates an existing pip-audit JSON report instead of
# running pip-audit (used by tests/test_security.py).
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_AUDIT_VERSION=2.10.1
tool_venv="${NEWSMON_AUDIT_VENV:-var/audit-venv}"
exceptions="${NEWSMON_AUDIT_EXCEPTIONS:-scripts/audit-exceptions.txt}"
report="${NEWSMON_AUDIT_JSON:-}"
py="${PYTHON:-python3}"

# IDs from the exception list (first field); an entry past its date no longer counts.
ignore_args=()
ignored_ids=""
today=$(date -u +%F)
if [ -f "$exceptions" ]; then
  while read -r id pkg until _; do
    [ -n "$id" ] || continue
    case "$id" in \#*) continue ;; esac
    if [[ ! "$until" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]]; then
      echo "audit: $exceptions: entry $id has no valid date (ID package YYYY-MM-DD reason)" >&2
      exit 1
    fi
    if [[ "$until" < "$today" ]]; then
      echo "audit: exception $id ($pkg) expired on $until; it is not applied"
      continue
    fi
    ignore_args+=(--ignore-vuln "$id")
    ignored_ids="$ignored_ids $id"
  done < "$exceptions"
fi

if [ -z "$report" ]; then
  if [ ! -x "$tool_venv/bin/pip-audit" ] || ! "$tool_venv/bin/pip-audit" --version 2>/dev/null | grep -q " $PIP_AUDIT_VERSION\$"; then
    if ! { "$py" -m venv "$tool_venv" && "$tool_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "pip-audit==$PIP_AUDIT_VERSION"; } >/dev/null 2>&1; then
      echo "audit skipped: cannot install pip-audit==$PIP_AUDIT_VERSION (package index unreachable)"
      exit 0
    fi
  fi
  # Which database answers? OSV first, else PyPI's per-release JSON (which carries OSV data).
  service="${NEWSMON_AUDIT_SERVICE:-}"  # osv or pypi: skip the probe
  [ -n "$service" ] || service=$("$tool_venv/bin/python" - <<'EOF'
import json, urllib.request
def ok(req):
    try:
        with urllib.request.urlopen(req, timeout=8) as r:
            return r.status == 200 and "vulns" in r.read(2_000_000).decode("utf-8", "replace")
    except Exception:
        return False
osv = urllib.request.Request("https://api.osv.dev/v1/query", method="POST", headers={"Content-Type": "application/json"},
                             data=json.dumps({"package": {"name": "jinja2", "ecosystem": "PyPI"}, "version": "2.4.1"}).encode())
if ok(osv):
    print("osv")
elif ok("https://pypi.org/pypi/jinja2/2.4.1/json"):
    print("pypi")
else:
    print("none")
EOF
)
  if [ "$service" = none ]; then
    echo "audit skipped: vulnerability database unreachable (neither api.osv.dev nor pypi.org per-release JSON answered)"
    exit 0
  fi
  report=$(mktemp)
  trap 'rm -f "$report"' EXIT
  set +e
  # Fully pinned requirements: audited as listed, without resolving or installing anything.
  "$tool_venv/bin/pip-audit" -r requirements.txt -r requirements-dev.txt --no-deps --disable-pip -s "$service" \
    --progress-spinner off ${ignore_args[@]+"${ignore_args[@]}"} -f json -o "$report" >/dev/null 2>"$report.err"
  code=$?
  set -e
  if [ ! -s "$report" ]; then
    echo "audit skipped: pip-audit could not query the $service database (exit $code): $(tail -n 1 "$report.err")"
    rm -f "$report.err"
    exit 0
  fi
  rm -f "$report.err"
fi

IGNORED="$ignored_ids" "$py" - "$report" <<'EOF'
import json, os, sys

data = json.load(open(sys.argv[1]))
ignored = set(os.environ.get("IGNORED", "").split())
deps = data.get("dependencies", [])
skipped = [d["name"] for d in deps if d.get("skip_reason")]
audited = [d for d in deps if not d.get("skip_reason")]
found, excepted = [], []
for d in audited:
    for v in d.get("vulns", []):
        ids = {v["id"], *v.get("aliases", [])}
        (excepted if ids & ignored else found).append((d["name"], d["version"], v["id"], ", ".join(v.get("fix_versions", []))))
if not audited:
    print(f"audit skipped: vulnerability database unreachable ({len(skipped)} packages could not be looked up)")
    sys.exit(0)
for name, version, vid, fix in found:
    print(f"VULNERABLE {name}=={version}: {vid}" + (f" (fixed in {fix})" if fix else ""))
note = f"; not audited: {', '.join(skipped)}" if skipped else ""
if found:
    print(f"audit failed: {len(found)} known vulnerabilities not in scripts/audit-exceptions.txt{note}")
    sys.exit(1)
for name, version, vid, _ in excepted:
    print(f"excepted {name}=={version}: {vid} (scripts/audit-exceptions.txt)")
print(f"audit ok: {len(audited)} packages, no known vulnerability outside the {len(ignored)} listed exceptions{note}")
EOF
