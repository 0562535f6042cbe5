#!/usr/bin/env bash
# Builds the deployment images from the repository root:
#   classifier-svc (CPU), classifier-svc (CUDA, with --cuda), the Wasm filter image and the
#   Envoy Gateway extension server (eg-extension).
#
#   deploy/images/build.sh [--cuda] [--push] [--registry REGISTRY] [--tag TAG]
#
# Image names match the manifests: semantic-router/classifier-svc:TAG[-cuda],
# ghcr.io/semantic-router/wasm-filter:TAG and semantic-router/eg-extension:TAG; --registry
# replaces the registry/organisation part.
# Needs a running Docker engine with BuildKit; without one it says so and exits with status 2.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

tag="0.1.0"
cuda=0
push=0
classifier_repo="semantic-router/classifier-svc"
wasm_repo="ghcr.io/semantic-router/wasm-filter"
eg_extension_repo="semantic-router/eg-extension"

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --cuda) cuda=1 ;;
    --push) push=1 ;;
    --tag) tag="$2"; shift ;;
    --registry)
      classifier_repo="$2/classifier-svc"
      wasm_repo="$2/wasm-filter"
      eg_extension_repo="$2/eg-extension"
      shift
      ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 64 ;;
  esac
  shift
done

if ! command -v docker >/dev/null 2>&1; then
  echo "build.sh: the docker command is not installed; install Docker (with BuildKit) to build the images." >&2
  exit 2
fi
if ! docker info >/dev/null 2>&1; then
  cat >&2 <<MSG
build.sh: no Docker engine is reachable (\`docker info\` failed).
  The docker client is installed but cannot talk to a daemon. Run this script on a machine with
  a running Docker engine (or set DOCKER_HOST to one). Nothing was built.
MSG
  exit 2
fi

export DOCKER_BUILDKIT=1

build() {
  local dockerfile="$1" image="$2"
  echo "==> building $image ($dockerfile)"
  docker build --file "$here/$dockerfile" --tag "$image" "$root"
  if [[ $push -eq 1 ]]; then
    docker push "$image"
  fi
}

build Dockerfile.classifier "$classifier_repo:$tag"
build Dockerfile.wasm "$wasm_repo:$tag"
build Dockerfile.eg-extension "$eg_extension_repo:$tag"
if [[ $cuda -eq 1 ]]; then
  build Dockerfile.classifier-cuda "$classifier_repo:$tag-cuda"
fi

echo "built: $classifier_repo:$tag $wasm_repo:$tag $eg_extension_repo:$tag$([[ $cuda -eq 1 ]] && echo " $classifier_repo:$tag-cuda")"
