#!/usr/bin/env bash
# Runs every test mailpost has: installs the external clients the
# integration tests use, checks formatting and vet, runs the whole suite
# (unit, real-TLS loopback, real clients against `mailpost serve`), then
# gives each fuzz target a short run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
go vet ./...

# MAILPOST_REQUIRE_CLIENTS turns "client not installed" into a failure, so a
# broken install step can't quietly skip the real-client tests.
MAILPOST_REQUIRE_CLIENTS=1 go test -count=1 -timeout 10m ./...

# Short fuzzing runs: long enough to catch regressions in the parsers.
# Counted in executions, not seconds: a time limit on a loaded 2-core
# machine sometimes ends a run with "context deadline exceeded" and no bug.
fuzz_time=${FUZZ_TIME:-}
go test -run '^$' -fuzz '^FuzzParse$' -fuzztime "${fuzz_time:-20000x}" ./config/
go test -run '^$' -fuzz '^FuzzSession$' -fuzztime "${fuzz_time:-20000x}" ./pop3/
go test -run '^$' -fuzz '^FuzzDotStuff$' -fuzztime "${fuzz_time:-200000x}" ./pop3/
go test -run '^$' -fuzz '^FuzzSession$' -fuzztime "${fuzz_time:-50000x}" ./smtpauth/
