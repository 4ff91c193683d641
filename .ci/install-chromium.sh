#!/usr/bin/env bash
# Install Debian's chromium (headless browser for the HTML report test) unless a chromium is already there.
#
#   .ci/install-chromium.sh     # prints the browser's path; the test looks for `chromium` on PATH
#
# Needs root or sudo only when it has to install. The test skips (with a message) where no chromium exists.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "install-chromium: installing Debian's chromium package" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >&2
fi
command -v chromium
chromium --version >&2
