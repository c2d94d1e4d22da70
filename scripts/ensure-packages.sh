#!/usr/bin/env bash
# Make sure the Debian packages the tests need are installed: espeak-ng and sox make the test
# speech, tesseract-ocr reads the text on screen (the chapters' titles), chromium and
# chromium-driver are the real browser of the web page's tests.
#   scripts/ensure-packages.sh                 install what is missing, or fail naming it
#   scripts/ensure-packages.sh --best-effort   the same, but only warn (make demo: without
#                                              tesseract its chapters are titled from speech)
set -euo pipefail

best_effort=0
if [ "${1:-}" = "--best-effort" ]; then best_effort=1; shift; fi
packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(espeak-ng sox tesseract-ocr tesseract-ocr-eng chromium chromium-driver)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
if command -v dpkg-query >/dev/null; then
  for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
else  # not Debian (a Mac): look for the programs instead
  command -v espeak-ng >/dev/null || missing+=(espeak-ng)
  command -v tesseract >/dev/null || missing+=(tesseract-ocr)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

fail() {
  if [ $best_effort -eq 1 ]; then echo "warning: $*" >&2; exit 0; fi
  echo "error: $*" >&2; exit 1
}
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  fail "missing packages: ${missing[*]} (install them: apt-get install ${missing[*]}, or brew install espeak-ng tesseract on a Mac)"
fi
echo "installing ${missing[*]}"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/sessionpipe-apt.log 2>&1; then
  tail -5 /tmp/sessionpipe-apt.log >&2
  fail "could not install ${missing[*]} (apt-get failed, log: /tmp/sessionpipe-apt.log)"
fi
for p in "${missing[@]}"; do installed "$p" || fail "package $p is still not installed"; done
