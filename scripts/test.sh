#!/usr/bin/env bash
# Runs the test suite and ends with one plain summary line ("tests: N passed, M failed").
set -uo pipefail
cd "$(dirname "$0")/.."
report=$(mktemp)
npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@"
rc=$?
node -e '
  const fs = require("node:fs");
  let r = {};
  try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch {}
  const passed = r.numPassedTests ?? 0, failed = r.numFailedTests ?? 0, skipped = r.numPendingTests ?? 0;
  console.log(`tests: ${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
' "$report"
rm -f "$report"
exit $rc
