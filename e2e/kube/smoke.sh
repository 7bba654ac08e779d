#!/usr/bin/env bash
# Smoke test of e2e/kube/cluster.sh: starts the test API server in a scratch
# folder, talks to it with kubectl and helm, stops it. Exits non-zero when a
# check fails. The first run builds the binaries (several minutes).
#
# Usage: e2e/kube/smoke.sh [--keep]   (--keep: leave the scratch folder, with
#                                      the logs, and the server stopped)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/lib.sh
source "$here/../lib.sh"

keep=0
[[ "${1:-}" == --keep ]] && keep=1

dir="$(mktemp -d -t sluice-kube-smoke.XXXXXX)"
passed=0 failed=0
cleanup() {
    "$here/cluster.sh" down --dir "$dir" 2>/dev/null || true
    if ((keep)); then echo "kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# check NAME COMMAND...: runs COMMAND, output to $dir/checks.log, counts it.
check() {
    local name=$1 start=$SECONDS
    shift
    echo "--- $name: $*" >>"$dir/checks.log"
    if "$@" >>"$dir/checks.log" 2>&1; then
        passed=$((passed + 1))
        note "ok   $name ($((SECONDS - start))s)"
    else
        failed=$((failed + 1))
        note "FAIL $name ($((SECONDS - start))s); its output:"
        sed -n "/^--- $name: /,\$p" "$dir/checks.log" | tail -n +2 | tail -n 20 | sed 's/^/        /'
    fi
}

# output_has PATTERN COMMAND...: COMMAND succeeds and prints PATTERN.
output_has() {
    local pattern=$1 out
    shift
    out="$("$@" 2>&1)" || { echo "$out"; return 1; }
    echo "$out"
    grep -qE -- "$pattern" <<<"$out" || { echo "(expected /$pattern/ in the output)"; return 1; }
}

# can_i ANSWER ARGS...: `kubectl auth can-i ARGS` answers ANSWER (yes/no;
# it exits 1 for no).
can_i() {
    local want=$1 out
    shift
    out="$(kubectl auth can-i "$@" 2>&1)" || true
    echo "$out"
    [[ "$out" == "$want" ]]
}

# fails COMMAND...: COMMAND fails (prints its output).
fails() {
    if "$@"; then echo "(expected it to fail)"; return 1; fi
    return 0
}

step "cluster.sh up"
start=$SECONDS
"$here/cluster.sh" up --dir "$dir" >"$dir/up.out" || { cat "$dir/up.out"; die "cluster.sh up failed"; }
note "up in $((SECONDS - start))s"
# shellcheck source=/dev/null
source "$dir/env.sh"
grep -q "KUBECONFIG=$dir/kubeconfig" <(tr -d "'" <"$dir/up.out") || die "up did not print the KUBECONFIG export"

mkdir -p "$dir/manifests/chart/templates"
cat >"$dir/manifests/crd.yaml" <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.sluice.dev
spec:
  group: smoke.sluice.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string, default: blue}
EOF
cat >"$dir/manifests/widget.yaml" <<'EOF'
apiVersion: smoke.sluice.dev/v1
kind: Widget
metadata: {name: first, namespace: default}
spec: {size: 3}
EOF
cat >"$dir/manifests/bad-widget.yaml" <<'EOF'
apiVersion: smoke.sluice.dev/v1
kind: Widget
metadata: {name: bad, namespace: default}
spec: {size: 0}
EOF
cat >"$dir/manifests/chart/Chart.yaml" <<'EOF'
apiVersion: v2
name: smoke
version: 0.1.0
kubeVersion: ">=1.30.0-0"
EOF
cat >"$dir/manifests/chart/values.yaml" <<'EOF'
greeting: hello
EOF
cat >"$dir/manifests/chart/templates/objects.yaml" <<'EOF'
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .Release.Name }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
  labels:
    app.kubernetes.io/managed-by: {{ .Release.Service }}
data:
  greeting: {{ .Values.greeting | quote }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ .Release.Name }}
rules:
- apiGroups: [smoke.sluice.dev]
  resources: [widgets]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ .Release.Name }}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: {{ .Release.Name }}}
subjects:
- {kind: ServiceAccount, name: {{ .Release.Name }}, namespace: {{ .Release.Namespace }}}
EOF

step "kubectl and helm against the API server"
m="$dir/manifests"
check "server version" output_has "v1\.[0-9]+\.[0-9]+" kubectl version
check "kubectl get ns" output_has "kube-system" kubectl get ns
check "apply CRD (server-side)" kubectl apply --server-side -f "$m/crd.yaml"
check "CRD established" kubectl wait --for condition=established --timeout=30s crd/widgets.smoke.sluice.dev
check "apply a Widget" kubectl apply --server-side -f "$m/widget.yaml"
check "get the Widget, defaulted" output_has "^3 blue$" \
    kubectl get widget first -o jsonpath='{.spec.size} {.spec.color}{"\n"}'
check "schema rejects size 0" fails kubectl apply --server-side -f "$m/bad-widget.yaml"
check "RBAC is on (a service account may not)" \
    can_i no create configmaps --as=system:serviceaccount:default:nobody
check "helm version" output_has "v3\.[0-9]+\.[0-9]+" helm version --short
check "helm lint" helm lint "$m/chart"
check "helm template" bash -c "helm template smoke '$m/chart' --kube-version \"\$(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"serverVersion\"][\"gitVersion\"])')\" >'$m/rendered.yaml'"
check "apply --dry-run=server of the rendered chart" output_has "configmap/smoke-config created \(server dry run\)" \
    kubectl apply --dry-run=server -f "$m/rendered.yaml"
check "helm install" helm install smoke "$m/chart" --wait --timeout 60s
check "installed objects" output_has "^hello$" kubectl get configmap smoke-config -o jsonpath='{.data.greeting}{"\n"}'
check "installed RBAC applies" \
    can_i yes list widgets.smoke.sluice.dev --as=system:serviceaccount:default:smoke
check "helm uninstall" helm uninstall smoke --wait

step "cluster.sh down"
api_pid="$(cat "$dir/kube-apiserver.pid")" etcd_pid="$(cat "$dir/etcd.pid")"
check "down" "$here/cluster.sh" down --dir "$dir"
check "processes gone" fails kill -0 "$api_pid" "$etcd_pid"

echo
echo "$passed passed, $failed failed"
((failed == 0))
