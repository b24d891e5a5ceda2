#!/usr/bin/env bash
# Fetches the console's front-end libraries from the npm registry into
# tidelog/console/static/vendor/ (they are committed: installing tidelog needs no
# network and no build step). Run it to update them, then run tests/console/.
#
#   uPlot 1.6.32 (MIT): dist/uPlot.iife.min.js, dist/uPlot.min.css, LICENSE
set -euo pipefail
UPLOT_VERSION=1.6.32
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENDOR="$ROOT/tidelog/console/static/vendor"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm pack "uplot@$UPLOT_VERSION" >/dev/null
tar xzf "uplot-$UPLOT_VERSION.tgz"
mkdir -p "$VENDOR"
cp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css "$VENDOR/"
cp package/LICENSE "$VENDOR/uPlot.LICENSE"
echo "uPlot $UPLOT_VERSION -> $VENDOR"
