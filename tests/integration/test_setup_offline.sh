#!/usr/bin/env bash
# Set-up with no reachable package registry (every download through a proxy that refuses) fails
# with one line on stderr naming what could not be installed: the venv's torch from PyPI, and the
# gloo headers from Debian's archive. (Debian's own packages are installed already here.)
source "$(dirname "$0")/lib.sh"
export https_proxy=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 PIP_RETRIES=0 PIP_TIMEOUT=5
offline() {  # offline NAME VARS...: runs setup.sh with those variables; stdout, stderr and rc kept
  local name=$1; shift
  set +e
  env "$@" ./scripts/setup.sh >"$WORK/$name.out" 2>"$WORK/$name.err"
  RC=$?
  set -e
  [[ $RC -ne 0 ]] || fail "$name: set-up succeeded offline"
  [[ $(wc -l <"$WORK/$name.err") -eq 1 ]] || { cat "$WORK/$name.err"; fail "$name: not one line on stderr"; }
}
offline pip TITAN_VENV="$WORK/venv" TITAN_DEPS="$WORK/deps"
grep -q "^setup: error: pip could not install torch==2.11.0 numpy safetensors==0.8.0 transformers==5.25.0 tokenizers==0.23.3 tensorboard==2.21.0 bochscpu-python==0.4.0 into $WORK/venv (is PyPI reachable?)$" "$WORK/pip.err" ||
  { cat "$WORK/pip.err"; fail "pip error line"; }
offline gloo TITAN_DEPS="$WORK/deps"  # the project's venv, but no gloo headers yet
grep -q "^setup: error: could not download libgloo-dev_.*_amd64.deb from deb.debian.org (Debian's package registry): .*$" "$WORK/gloo.err" ||
  { cat "$WORK/gloo.err"; fail "gloo error line"; }
echo "PASS"
