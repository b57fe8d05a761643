#!/usr/bin/env bash
# Installs what the test suite needs beyond Go: real mail clients that the
# integration tests drive against `mailpost serve` (curl for pop3s://,
# python3 for poplib and smtplib, fetchmail, swaks) and Debian's chromium, in
# which the web package's settings page is driven headless. Safe to run again;
# skips what is there.
set -euo pipefail

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v fetchmail >/dev/null 2>&1 || need+=(fetchmail)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-pop3d)
# swaks speaks TLS only with Net::SSLeay, which apt counts as a recommendation.
perl -MNet::SSLeay -e1 >/dev/null 2>&1 || need+=(libnet-ssleay-perl)

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing test dependencies: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The import test starts its own Dovecot on loopback; a packaged one that
  # systemd started would only hold ports 110/995 on the CI machine.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet dovecot 2>/dev/null; then
    $SUDO systemctl disable --now dovecot >/dev/null 2>&1 || true
  fi
fi

# Pebble, Let's Encrypt's test CA, and its DNS/challenge test server: the
# ACME tests run both on loopback (acme/acmetest). go install also puts
# Pebble's module (with the test certificates the tests use) in the module
# cache.
pebble_version=v2.10.1
gobin="$(go env GOPATH | cut -d: -f1)/bin"
for tool in pebble pebble-challtestsrv; do
  if [ ! -x "$gobin/$tool" ] || [ ! -d "$(go env GOMODCACHE)/github.com/letsencrypt/pebble/v2@$pebble_version" ]; then
    echo "installing $tool $pebble_version"
    go install "github.com/letsencrypt/pebble/v2/cmd/$tool@$pebble_version"
  fi
done
