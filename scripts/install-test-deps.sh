#!/usr/bin/env bash
# Installs what the test suite needs beyond Go: real mail clients that the
# integration tests drive against `mailpost serve` (curl for pop3s://,
# python3 for poplib and smtplib, fetchmail, swaks). Safe to run again; skips what is there.
set -euo pipefail

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v fetchmail >/dev/null 2>&1 || need+=(fetchmail)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
# swaks speaks TLS only with Net::SSLeay, which apt counts as a recommendation.
perl -MNet::SSLeay -e1 >/dev/null 2>&1 || need+=(libnet-ssleay-perl)

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing test dependencies: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
