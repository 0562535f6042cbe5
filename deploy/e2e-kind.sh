#!/usr/bin/env bash
# GPU end-to-end profile: the semantic router on Envoy Gateway in front of a disaggregated
# Dynamo graph (TinyLlama), on a Kind cluster.
#
# Needs a Linux VM with at least 3 NVIDIA GPUs, Docker whose default runtime is nvidia
# (nvidia-container-toolkit), kind, kubectl, helm, curl and nvidia-smi; network access to pull
# images and charts. Run from anywhere:
#
#   deploy/e2e-kind.sh            # build images, create the cluster, deploy, test
#   SKIP_BUILD=1 deploy/e2e-kind.sh   # reuse images already built with deploy/images/build.sh
#   CLEANUP=1 deploy/e2e-kind.sh      # delete the Kind cluster at the end
#
# Versions: ENVOY_GATEWAY_VERSION (v1.9.0), DYNAMO_VERSION (1.6.1), CLUSTER (semantic-router-e2e).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

CLUSTER="${CLUSTER:-semantic-router-e2e}"
ENVOY_GATEWAY_VERSION="${ENVOY_GATEWAY_VERSION:-v1.9.0}"
DYNAMO_VERSION="${DYNAMO_VERSION:-1.6.1}"
TAG="${TAG:-0.1.0}"
CLASSIFIER_IMAGE="semantic-router/classifier-svc:${TAG}"
WASM_IMAGE="ghcr.io/semantic-router/wasm-filter:${TAG}"
LOCAL_PORT="${LOCAL_PORT:-8080}"
ADMIN_PORT="${ADMIN_PORT:-19000}"
MODEL="TinyLlama/TinyLlama-1.1B-Chat-v1.0"
GW_NS="semantic-router"
GW_NAME="semantic-router"
EG_NS="envoy-gateway-system"
DYNAMO_NS="dynamo-system"
# The overlay's all-zero sha256 placeholder for the Wasm module digest.
SHA_PLACEHOLDER="0000000000000000000000000000000000000000000000000000000000000000"

work="$(mktemp -d)"
pf_pid=""
admin_pf_pid=""
cleanup() {
  if [[ -n "$pf_pid" ]]; then
    kill "$pf_pid" 2>/dev/null || true
  fi
  if [[ -n "$admin_pf_pid" ]]; then
    kill "$admin_pf_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  if [[ "${CLEANUP:-0}" == 1 ]]; then
    kind delete cluster --name "$CLUSTER" || true
  fi
}
trap cleanup EXIT

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'e2e-kind: %s\n' "$*" >&2; exit 1; }
pass() { printf '    PASS %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------
log "Checking prerequisites"
for tool in docker kind kubectl helm curl nvidia-smi sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
docker info >/dev/null 2>&1 || die "no Docker engine is reachable (docker info failed)"
runtime="$(docker info --format '{{.DefaultRuntime}}')"
if [[ "$runtime" != "nvidia" ]]; then
  cat >&2 <<MSG
e2e-kind: Docker's default runtime is "$runtime", not "nvidia"; Kind nodes would not see the GPUs.
Fix (needs nvidia-container-toolkit):
  sudo nvidia-ctk runtime configure --runtime=docker --set-as-default
  sudo systemctl restart docker
MSG
  exit 1
fi
gpus="$(nvidia-smi -L | grep -c '^GPU ')"
[[ "$gpus" -ge 3 ]] || die "at least 3 GPUs are needed (Dynamo frontend, prefill and decode workers), found $gpus"
pass "docker default runtime nvidia, $gpus GPUs"

# ---------------------------------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "Building images"
  "$here/images/build.sh" --tag "$TAG"
fi
docker image inspect "$CLASSIFIER_IMAGE" >/dev/null || die "image $CLASSIFIER_IMAGE is missing (run deploy/images/build.sh)"
docker image inspect "$WASM_IMAGE" >/dev/null || die "image $WASM_IMAGE is missing (run deploy/images/build.sh)"

# The module is served over HTTP inside the cluster (Envoy Gateway pulls OCI images only from
# TLS registries); take it out of the image that production would use.
cid="$(docker create "$WASM_IMAGE" /plugin.wasm)"
docker cp "$cid:/plugin.wasm" "$work/semantic_router.wasm" >/dev/null
docker rm "$cid" >/dev/null
wasm_sha="$(sha256sum "$work/semantic_router.wasm" | cut -d' ' -f1)"
wasm_size="$(wc -c <"$work/semantic_router.wasm")"
[[ "$wasm_size" -lt 1000000 ]] || die "the module ($wasm_size bytes) does not fit in a ConfigMap"
pass "wasm module $wasm_size bytes, sha256 $wasm_sha"

# ---------------------------------------------------------------------------------------------
log "Creating Kind cluster $CLUSTER with GPU support"
if kind get clusters | grep -qx "$CLUSTER"; then
  echo "    cluster exists, reusing it"
else
  cat >"$work/kind.yaml" <<'KIND'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
    extraMounts:
      # With nvidia as Docker's default runtime this exposes every GPU to the worker node.
      - hostPath: /dev/null
        containerPath: /var/run/nvidia-container-devices/all
KIND
  kind create cluster --name "$CLUSTER" --config "$work/kind.yaml" --wait 5m
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
worker="${CLUSTER}-worker"
docker exec "$worker" ls /dev/nvidia0 >/dev/null || die "no GPU device in the Kind worker; check the NVIDIA runtime"

log "Copying NVIDIA driver libraries to the Kind worker"
driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1 | tr -d ' ')"
libdir=""
for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib; do
  if [[ -e "$d/libcuda.so.$driver" ]]; then libdir="$d"; break; fi
done
[[ -n "$libdir" ]] || die "libcuda.so.$driver not found on the host"
docker exec "$worker" mkdir -p /nvidia-driver-libs
tar -cf - -C "$(dirname "$(command -v nvidia-smi)")" nvidia-smi | docker exec -i "$worker" tar -xf - -C /nvidia-driver-libs/
tar -cf - -C "$libdir" "libnvidia-ml.so.$driver" "libcuda.so.$driver" | docker exec -i "$worker" tar -xf - -C /nvidia-driver-libs/
docker exec "$worker" sh -c "cd /nvidia-driver-libs && ln -sf libnvidia-ml.so.$driver libnvidia-ml.so.1 && ln -sf libcuda.so.$driver libcuda.so.1 && ln -sf libcuda.so.1 libcuda.so"
docker exec "$worker" sh -c 'LD_LIBRARY_PATH=/nvidia-driver-libs /nvidia-driver-libs/nvidia-smi -L' || die "nvidia-smi does not run in the Kind worker"

log "Deploying the NVIDIA device plugin"
kubectl apply -f "$here/kind/nvidia-device-plugin.yaml"
kubectl -n kube-system rollout status daemonset/nvidia-device-plugin-daemonset --timeout=5m
for _ in $(seq 1 60); do
  allocatable="$(kubectl get node "$worker" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')"
  [[ "${allocatable:-0}" -ge 3 ]] && break
  sleep 5
done
[[ "${allocatable:-0}" -ge 3 ]] || die "the worker advertises ${allocatable:-0} nvidia.com/gpu, 3 needed"
pass "worker advertises $allocatable GPUs"

log "Loading the classifier image into the cluster"
kind load docker-image "$CLASSIFIER_IMAGE" --name "$CLUSTER"

# ---------------------------------------------------------------------------------------------
log "Installing Envoy Gateway $ENVOY_GATEWAY_VERSION"
helm upgrade --install eg oci://docker.io/envoyproxy/gateway-helm \
  --version "$ENVOY_GATEWAY_VERSION" \
  --namespace "$EG_NS" --create-namespace \
  --values "$here/envoy-gateway/values.yaml" \
  --wait --timeout 10m
kubectl -n "$EG_NS" wait --for=condition=Available deployment/envoy-gateway --timeout=5m

log "Installing the Dynamo platform $DYNAMO_VERSION (CRDs, operator, etcd, NATS)"
helm upgrade --install dynamo-crds \
  "https://helm.ngc.nvidia.com/nvidia/ai-dynamo/charts/dynamo-crds-${DYNAMO_VERSION}.tgz" \
  --namespace default --wait --timeout 5m
kubectl wait --for=condition=Established crd/dynamographdeployments.nvidia.com --timeout=2m
helm upgrade --install dynamo-platform \
  "https://helm.ngc.nvidia.com/nvidia/ai-dynamo/charts/dynamo-platform-${DYNAMO_VERSION}.tgz" \
  --namespace "$DYNAMO_NS" --create-namespace --wait --timeout 15m

# ---------------------------------------------------------------------------------------------
log "Applying deploy/overlays/e2e-kind"
kubectl create namespace "$GW_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$GW_NS" create configmap semantic-router-wasm \
  --from-file=semantic_router.wasm="$work/semantic_router.wasm" --dry-run=client -o yaml | kubectl apply -f -
kubectl kustomize "$here/overlays/e2e-kind" | sed "s/${SHA_PLACEHOLDER}/${wasm_sha}/" >"$work/manifests.yaml"
grep -q "$wasm_sha" "$work/manifests.yaml" || die "the sha256 placeholder was not replaced"
kubectl apply -f "$work/manifests.yaml"

log "Waiting for readiness"
kubectl -n "$GW_NS" rollout status deployment/wasm-server --timeout=5m
kubectl -n "$GW_NS" wait --for=condition=Programmed "gateway/$GW_NAME" --timeout=10m
kubectl -n "$GW_NS" wait "envoyextensionpolicy/$GW_NAME" \
  --for=jsonpath='{.status.ancestors[0].conditions[?(@.type=="Accepted")].status}'=True --timeout=5m
pass "EnvoyExtensionPolicy $GW_NAME is Accepted"
envoy_selector="gateway.envoyproxy.io/owning-gateway-namespace=$GW_NS,gateway.envoyproxy.io/owning-gateway-name=$GW_NAME"
kubectl -n "$EG_NS" wait --for=condition=Available deployment -l "$envoy_selector" --timeout=10m
pass "Envoy with the classifier sidecar is Available"

# The filter routes by body (route_mode: body), so it needs no allow_on_headers_stop_iteration
# and no extension server: the Wasm filter Envoy runs is exactly what the policy configures.
log "Checking the Wasm filter in Envoy: body route mode, no allow_on_headers_stop_iteration"
envoy_pod="$(kubectl -n "$EG_NS" get pod -l "$envoy_selector" -o jsonpath='{.items[0].metadata.name}')"
[[ -n "$envoy_pod" ]] || die "no Envoy pod for gateway $GW_NS/$GW_NAME"
kubectl -n "$EG_NS" port-forward "pod/$envoy_pod" "$ADMIN_PORT:19000" >"$work/admin-port-forward.log" 2>&1 &
admin_pf_pid=$!
filter_found=0
for _ in $(seq 1 30); do
  sleep 2
  if curl -sS --max-time 10 "http://127.0.0.1:$ADMIN_PORT/config_dump" -o "$work/config_dump.json" 2>/dev/null \
    && grep -q 'semantic_router' "$work/config_dump.json" && grep -q 'route_mode' "$work/config_dump.json"; then
    filter_found=1
    break
  fi
done
kill "$admin_pf_pid" 2>/dev/null || true
admin_pf_pid=""
[[ "$filter_found" == 1 ]] || die "no Wasm filter with root id semantic_router and a route_mode in Envoy's config_dump"
grep -Eq 'route_mode[^,]*body' "$work/config_dump.json" || die "the Wasm filter's configuration is not route_mode body"
if grep -Eq '"allow_on_headers_stop_iteration": *true' "$work/config_dump.json"; then
  die "allow_on_headers_stop_iteration is set, but nothing in this profile should set it"
fi
pass "the Wasm filter runs in body route mode without allow_on_headers_stop_iteration"

kubectl -n "$DYNAMO_NS" wait --for=condition=Ready dynamographdeployment/vllm --timeout=45m
for component in frontend vllmprefillworker vllmdecodeworker; do
  pods="$(kubectl -n "$DYNAMO_NS" get pods -o name | grep -i "vllm-$component" || true)"
  [[ -n "$pods" ]] || die "no pod for Dynamo component $component"
  for pod in $pods; do
    kubectl -n "$DYNAMO_NS" wait --for=condition=Ready "$pod" --timeout=30m
  done
done
pass "Dynamo frontend, prefill and decode workers are Ready"

# ---------------------------------------------------------------------------------------------
log "Port-forwarding the Gateway to localhost:$LOCAL_PORT"
svc="$(kubectl -n "$EG_NS" get service -l "$envoy_selector" -o jsonpath='{.items[0].metadata.name}')"
[[ -n "$svc" ]] || die "no Envoy service for gateway $GW_NS/$GW_NAME"
kubectl -n "$EG_NS" port-forward "service/$svc" "$LOCAL_PORT:80" >"$work/port-forward.log" 2>&1 &
pf_pid=$!
sleep 3
url="http://127.0.0.1:$LOCAL_PORT/v1/chat/completions"

chat() { # chat OUT_PREFIX PROMPT -> writes OUT_PREFIX.{headers,body}, prints the status code
  curl -sS --max-time 120 -o "$1.body" -D "$1.headers" -w '%{http_code}' "$url" \
    -H 'content-type: application/json' \
    -d "{\"model\":\"MoM\",\"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":\"$2\"}]}" || echo 000
}

log "Routing a math question through MoM"
status=000
for _ in $(seq 1 30); do
  status="$(chat "$work/math" "What is 2+2?")"
  [[ "$status" == 200 ]] && break
  sleep 10
done
[[ "$status" == 200 ]] || { cat "$work/math.body" >&2 || true; die "chat completion answered $status"; }
grep -Eq "\"model\" *: *\"${MODEL//\//\\/}\"" "$work/math.body" || die "response model is not $MODEL: $(cat "$work/math.body")"
pass "response model $MODEL"
grep -iq '^x-vsr-selected-category: *math' "$work/math.headers" || die "x-vsr-selected-category is not math: $(cat "$work/math.headers")"
pass "x-vsr-selected-category: math"

log "Concurrent requests"
n=16
for i in $(seq 1 "$n"); do
  (chat "$work/c$i" "Request $i: explain why the sky is blue in one sentence." >"$work/c$i.status") &
done
wait
failed=0
for i in $(seq 1 "$n"); do
  [[ "$(cat "$work/c$i.status")" == 200 ]] || failed=$((failed + 1))
done
[[ "$failed" -eq 0 ]] || die "$failed of $n concurrent requests failed"
pass "$n concurrent requests succeeded"

log "All end-to-end checks passed"
