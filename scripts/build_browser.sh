#!/usr/bin/env bash
# Build stac-browser (npm @radiantearth/stac-browser, the exact version pinned in
# browser/package.json, locked by browser/package-lock.json) for `thisme-stac serve`.
#
#   scripts/build_browser.sh [--force] [OUT_DIR]
#
# OUT_DIR defaults to api/thisme_stac_api/stac_browser (git-ignored). The build is served at
# /browser/ (pathPrefix, HTML5 history mode) and has no catalogUrl: the page loads
# /browser/config.js at run time, which the API generates (thisme_stac_api.browser), so one
# build works behind any host name. Idempotent: nothing is done when OUT_DIR holds a build of
# the same version and lockfile. Needs Node.js >= 18 and npm; reaches only the npm registry.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG_DIR="$ROOT/browser"
WORK_DIR="$PKG_DIR/work"
# Behind a reverse proxy that serves the API under a path (THISME_ROOT_PATH=/stac), build with
# THISME_BROWSER_PATH_PREFIX=/stac/browser/ so the page asks for its files where the proxy has them.
PATH_PREFIX="${THISME_BROWSER_PATH_PREFIX:-/browser/}"
FORCE=0
OUT_DIR=""
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build_browser.sh: unknown option $arg" >&2; exit 2 ;;
    *) OUT_DIR="$arg" ;;
  esac
done
OUT_DIR="${OUT_DIR:-$ROOT/api/thisme_stac_api/stac_browser}"
if ! [[ "$PATH_PREFIX" =~ ^/([A-Za-z0-9._~-]+/)*browser/$ ]]; then
  echo "build_browser.sh: the path prefix must be /browser/ or /<path>/browser/, not '$PATH_PREFIX'" >&2
  exit 2
fi
case "$OUT_DIR" in /*) ;; *) OUT_DIR="$PWD/$OUT_DIR" ;; esac
STAMP="$OUT_DIR/.thisme-build"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build_browser.sh: $tool is not installed (stac-browser is built with Node.js >= 18 and npm)" >&2
    exit 1
  fi
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "build_browser.sh: Node.js >= 18 is needed, found $(node --version)" >&2
  exit 1
fi

version="$(node -p 'require(process.argv[1]).dependencies["@radiantearth/stac-browser"]' \
  "$PKG_DIR/package.json")"
if ! [[ "$version" =~ ^4\.[0-9]+\.[0-9]+$ ]]; then
  echo "build_browser.sh: browser/package.json must pin an exact 4.x stac-browser, not '$version'" >&2
  exit 1
fi
lock_sum="$(sha256sum "$PKG_DIR/package-lock.json" | cut -d' ' -f1)"
script_sum="$(sha256sum "$0" | cut -d' ' -f1)"
wanted="stac-browser $version lock $lock_sum script $script_sum prefix $PATH_PREFIX"

if [ "$FORCE" -eq 0 ] && [ -f "$STAMP" ] && [ -f "$OUT_DIR/index.html" ] \
  && [ "$(cat "$STAMP")" = "$wanted" ]; then
  echo "stac-browser $version already built in $OUT_DIR"
  exit 0
fi

echo "building stac-browser $version into $OUT_DIR" >&2
cd "$PKG_DIR"
# Exactly the locked tree (ol-stac pinned by "overrides"); no install scripts are needed.
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error

# Build a copy of the package's sources beside node_modules, so the build tools resolve from
# browser/node_modules and the sources are not treated as a dependency (not transpiled).
rm -rf "$WORK_DIR"
mkdir -p "$WORK_DIR"
cp -R "$PKG_DIR/node_modules/@radiantearth/stac-browser" "$WORK_DIR/stac-browser"
src="$WORK_DIR/stac-browser"
# Its styles import "../../node_modules/ol/ol.css": give the copy the tree it expects.
ln -s ../../node_modules "$src/node_modules"
installed="$(node -p 'require(process.argv[1]).version' "$src/package.json")"
if [ "$installed" != "$version" ]; then
  echo "build_browser.sh: installed stac-browser is $installed, expected $version" >&2
  exit 1
fi

# Runtime configuration: load config.js (served by the API) before the application.
marker='<!-- <script defer="defer" src="/config.js"></script> -->'
if ! grep -qF "$marker" "$src/public/index.html"; then
  echo "build_browser.sh: public/index.html has no config.js placeholder; check the version" >&2
  exit 1
fi
# No favicon request to the API root (a 404 in every page's console): an empty inline icon.
sed -i "s|$marker|<script defer=\"defer\" src=\"${PATH_PREFIX}config.js\"></script><link rel=\"icon\" href=\"data:,\">|" \
  "$src/public/index.html"
# The committed defaults ask nothing of the runtime file: no catalog URL is built in.
rm -f "$src/public/config.js"

tmp_out="$OUT_DIR.tmp.$$"
trap 'rm -rf "$tmp_out"' EXIT
(
  cd "$src"
  NODE_ENV=production SB_pathPrefix="$PATH_PREFIX" SB_historyMode=history \
    SB_noSourceMaps=true BROWSERSLIST_IGNORE_OLD_DATA=1 \
    "$PKG_DIR/node_modules/.bin/vue-cli-service" build --dest "$tmp_out" --no-clean
)
if [ ! -f "$tmp_out/index.html" ] || ! grep -qF "${PATH_PREFIX}config.js" "$tmp_out/index.html"; then
  echo "build_browser.sh: the build did not produce index.html loading ${PATH_PREFIX}config.js" >&2
  exit 1
fi
rm -f "$tmp_out/config.js"
printf '%s\n' "$wanted" >"$tmp_out/.thisme-build"
rm -rf "$OUT_DIR"
mkdir -p "$(dirname "$OUT_DIR")"
mv "$tmp_out" "$OUT_DIR"
trap - EXIT
# Every build starts with `npm ci` anyway: leave no 300 MB tree in the work tree.
rm -rf "$WORK_DIR" "$PKG_DIR/node_modules"
echo "stac-browser $version built in $OUT_DIR ($(du -sh "$OUT_DIR" | cut -f1))"
