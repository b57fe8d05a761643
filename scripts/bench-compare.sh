#!/usr/bin/env bash
# Side-by-side benchmark: mailpost against Dovecot (POP3) and Postfix
# (submission, Dovecot SASL, delivery into Dovecot's Maildir), all measured
# by cmd/mailpost-bench's client code on this machine, PASSES passes each
# (default 3) on freshly started servers, medians and ranges.
#
#   sudo bash scripts/bench-compare.sh            # results in $OUT (printed)
#   PASSES=1 bash scripts/bench-compare.sh -idle 20 -duration 2s -settle 3s   # a quick smoke run
#
# Arguments are passed to every mailpost-bench run (after its own flags).
# Needs root (Dovecot and Postfix start as root and drop privileges) and
#   apt-get install -y dovecot-pop3d postfix      # postfix: "No configuration"
# Nothing is installed here, and the system's Dovecot/Postfix instances are
# neither read nor started: each server runs from a temp dir on 127.0.0.1.
# Run it on a quiet machine: every figure is CPU-bound on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

passes=${PASSES:-3}
extra=("$@")
out=${OUT:-$(mktemp -d /tmp/mailpost-bench-compare.XXXXXX)}
mkdir -p "$out"

missing=()
for cmd in dovecot doveadm postfix postconf go; do
	command -v "$cmd" >/dev/null || missing+=("$cmd")
done
if ((${#missing[@]})); then
	echo "missing: ${missing[*]}; install with: apt-get install -y dovecot-pop3d postfix (and Go)" >&2
	exit 1
fi
if [[ $(id -u) != 0 ]]; then
	echo "run as root: Dovecot and Postfix start as root and drop privileges" >&2
	exit 1
fi

go build -o "$out/mailpost-bench" ./cmd/mailpost-bench
go build -o "$out/mailpost" .
{
	date -u
	echo "$(nproc) cores, $(uname -srm), $(go version)"
	echo "dovecot $(dovecot --version)"
	git describe --always --dirty 2>/dev/null || true
} | tee "$out/machine.txt"

# run NAME ARGS...: one configuration, PASSES passes, bounded to an hour.
run() {
	local name=$1
	shift
	echo
	echo "=== $name: mailpost-bench -passes $passes $* ${extra[*]} ($(uptime | sed 's/.*load/load/'))"
	timeout 3600 "$out/mailpost-bench" -passes "$passes" "$@" "${extra[@]}" | tee "$out/$name.txt"
}

# POP3. Dovecot's defaults (high-security login processes) first, then its
# documented high-performance login mode, then both with a cheap scheme
# (SSHA512), which is what a mailpost cache hit costs: Dovecot's auth cache
# still verifies the hash on every login.
run mailpost-pop3 -bin "$out/mailpost" -only memory,rate,retr20k,retr5m,nocache
run dovecot-pop3 -target dovecot
run dovecot-pop3-performance -target dovecot -dovecot-login performance -only memory,rate
run dovecot-rate-ssha512 -target dovecot -dovecot-scheme SSHA512 -only rate
run dovecot-rate-ssha512-performance -target dovecot -dovecot-scheme SSHA512 -dovecot-login performance -only rate

# Submission.
run mailpost-submit -bin "$out/mailpost" -only submit
run postfix-submit -target postfix
run postfix-submit-ssha512 -target postfix -dovecot-scheme SSHA512

echo
echo "results in $out"
