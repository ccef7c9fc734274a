#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, build the extensions, run the tests.
# Usage: scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  [ -f /usr/include/expat.h ] || need+=(libexpat1-dev)
  command -v prosody >/dev/null || need+=(prosody)
  command -v ejabberdctl >/dev/null || need+=(ejabberd)  # migration tests: its export_piefxis
  command -v npm >/dev/null || need+=(npm)            # the web chat's Converse.js release
  command -v chromium >/dev/null || need+=(chromium)  # the web chat's browser test (Playwright drives it)
  command -v dnsmasq >/dev/null || need+=(dnsmasq-base)  # a real DNS server for check and s2s tests
  command -v dovecot >/dev/null || need+=(dovecot-core)  # authentication against the mail system
  command -v slapd >/dev/null || need+=(slapd ldap-utils)  # ... and against LDAP
  command -v unbound >/dev/null || need+=(unbound)   # the validating resolver of the DANE cases
  command -v ip >/dev/null || need+=(iproute2)        # network namespaces of the federation lab
  command -v biboumi >/dev/null || need+=(biboumi)    # a real external component (XEP-0114)
  if [ ${#need[@]} -gt 0 ]; then
    # Debian starts a package's service on install; the tests run their own instances.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  fi
fi

# A broken extension build must fail here, not silently fall back to pure Python.
export MBXMPP_REQUIRE_EXTENSIONS=1
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 setup.py -q build_ext --inplace
python3 -m pytest "$@"
