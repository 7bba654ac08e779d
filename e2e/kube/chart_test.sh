#!/usr/bin/env bash
# Tests the Helm chart charts/sluice and the generated CRDs, without a cluster:
#
#   1. e2e/kube/crdcheck (go test): kube-apiserver's own validation of the
#      CRDs (structural schemas, CEL rules and their cost), and of the docs'
#      objects and refused ones against them
#   2. helm lint --strict, for the default values and each e2e/kube/values/*.yaml
#   3. helm template of each, checked by e2e/kube/check_render.py (kinds,
#      least-privilege RBAC, flags, ports, probes, selectors, ...)
#   4. values that must be refused (values/invalid-*.yaml) are refused
#
# With --server-dry-run (needs KUBECONFIG and kubectl), also against a real
# API server: the CRDs are applied (server-side, for real), then every
# rendering and the objects of e2e/kube/crdcheck/testdata/valid.yaml are sent
# with `kubectl apply --dry-run=server`, and each object of invalid.yaml must
# be refused. ServiceMonitors are skipped when the server lacks their CRD.
# Then the chart is installed for real (no nodes needed: nothing has to run)
# and `kubectl auth can-i` checks what each ServiceAccount may do. Point it at
# a throwaway API server (e2e/kube/cluster.sh up): it creates the CRDs, a
# namespace and a release there.
#
# Usage: e2e/kube/chart_test.sh [--server-dry-run] [--no-crdcheck]
# helm: the one on PATH, else $SLUICE_CACHE/gobin/helm, else installed there
# with `go install helm.sh/helm/v3/cmd/helm@v3.22.0` (a few minutes, once).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=e2e/lib.sh
source e2e/lib.sh

server_dry_run=0 crdcheck=1
while (($#)); do
    case "$1" in
        --server-dry-run) server_dry_run=1 ;;
        --no-crdcheck) crdcheck=0 ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

HELM_VERSION=v3.22.0
# The Kubernetes version templates are rendered for (a `go install`ed helm
# does not know its own default).
KUBE_VERSION=1.34.0
NAMESPACE=sluice-test
chart=charts/sluice
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0 checks=0

fail() {
    echo "    FAIL: $*"
    failures=$((failures + 1))
}

pass() {
    checks=$((checks + 1))
}

ensure_helm() {
    if command -v helm >/dev/null 2>&1; then
        return
    fi
    export PATH="$SLUICE_CACHE/gobin:$PATH"
    if ! command -v helm >/dev/null 2>&1; then
        command -v go >/dev/null 2>&1 || die "neither helm nor go found"
        note "installing helm $HELM_VERSION into $SLUICE_CACHE/gobin (go install)"
        GOBIN="$SLUICE_CACHE/gobin" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
            || die "go install helm failed"
    fi
}

# Python with PyYAML for check_render.py.
ensure_python_yaml() {
    if python3 -c 'import yaml' 2>/dev/null; then
        python=python3
        return
    fi
    local venv="$SLUICE_CACHE/venv-chartcheck"
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
        { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet pyyaml==6.0.3; } || die "cannot install PyYAML"
    fi
    python="$venv/bin/python"
}

ensure_helm
ensure_python_yaml
note "$(helm version --short 2>/dev/null || helm version)"

if ((crdcheck)); then
    step "CRDs: kube-apiserver's validation (e2e/kube/crdcheck)"
    if (cd e2e/kube/crdcheck && go test -count=1 ./... 2>&1 | sed 's/^/    /'; exit "${PIPESTATUS[0]}"); then
        pass
    else
        fail "e2e/kube/crdcheck"
    fi
fi

# Value sets: "default" (the chart's values.yaml) and each values/*.yaml.
cases=(default)
for file in e2e/kube/values/*.yaml; do
    name="$(basename "$file" .yaml)"
    [[ "$name" == invalid-* ]] || cases+=("$name")
done

values_args() { # CASE
    [[ "$1" == default ]] || echo "--values=e2e/kube/values/$1.yaml"
}

for case in "${cases[@]}"; do
    step "chart: $case"
    # shellcheck disable=SC2046 # one argument or none
    if helm lint --strict --kube-version "$KUBE_VERSION" $(values_args "$case") "$chart" >"$work/lint.log" 2>&1; then
        note "helm lint --strict: ok"
        pass
    else
        sed 's/^/    /' "$work/lint.log"
        fail "helm lint $case"
    fi
    # shellcheck disable=SC2046
    if helm template sluice "$chart" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
        $(values_args "$case") >"$work/$case.yaml" 2>"$work/template.log"; then
        note "helm template: $(grep -c '^kind:' "$work/$case.yaml") objects"
        pass
    else
        sed 's/^/    /' "$work/template.log"
        fail "helm template $case"
        continue
    fi
    values_file=()
    [[ "$case" == default ]] || values_file=("e2e/kube/values/$case.yaml")
    if "$python" e2e/kube/check_render.py "$work/$case.yaml" ${values_file[@]+"${values_file[@]}"}; then
        pass
    else
        fail "check_render $case"
    fi
done

step "chart: values that must be refused"
for file in e2e/kube/values/invalid-*.yaml; do
    if helm template sluice "$chart" --kube-version "$KUBE_VERSION" --values "$file" >/dev/null 2>"$work/refused.log"; then
        fail "$file was accepted"
    else
        note "$(basename "$file"): refused: $(grep -m1 -o 'Error: .*' "$work/refused.log" | cut -c1-150)"
        pass
    fi
done

if ((server_dry_run)); then
    step "API server: kubectl apply --dry-run=server"
    [[ -n "${KUBECONFIG:-}" ]] || die "--server-dry-run needs KUBECONFIG"
    command -v kubectl >/dev/null 2>&1 || die "--server-dry-run needs kubectl"
    kubectl version >/dev/null || die "the API server in $KUBECONFIG does not answer"
    kubectl apply --server-side --force-conflicts -f "$chart/crds/" | sed 's/^/    /'
    kubectl wait --for condition=established --timeout=60s -f "$chart/crds/" >/dev/null
    kubectl get namespace "$NAMESPACE" >/dev/null 2>&1 || kubectl create namespace "$NAMESPACE" >/dev/null
    have_monitoring=0
    kubectl api-resources --api-group=monitoring.coreos.com -o name 2>/dev/null | grep -q '^servicemonitors' \
        && have_monitoring=1
    for case in "${cases[@]}"; do
        [[ -s "$work/$case.yaml" ]] || continue
        rendered="$work/$case.yaml"
        if ((!have_monitoring)); then
            "$python" - "$rendered" >"$work/$case-nosm.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] != "ServiceMonitor"]
print(yaml.safe_dump_all(docs))
PY
            rendered="$work/$case-nosm.yaml"
        fi
        if kubectl apply --dry-run=server -n "$NAMESPACE" -f "$rendered" >"$work/apply.log" 2>&1; then
            note "$case: $(wc -l <"$work/apply.log") objects accepted"
            pass
        else
            sed 's/^/    /' "$work/apply.log"
            fail "server dry-run of $case"
        fi
    done
    if kubectl apply --dry-run=server -n "$NAMESPACE" -f e2e/kube/crdcheck/testdata/valid.yaml \
        >"$work/apply.log" 2>&1; then
        note "crdcheck/testdata/valid.yaml: $(wc -l <"$work/apply.log") objects accepted"
        pass
    else
        sed 's/^/    /' "$work/apply.log"
        fail "server dry-run of valid.yaml"
    fi
    # Each refused object on its own, with the message it expects (not those
    # with a bad status: the API server drops the status of a created object).
    "$python" - e2e/kube/crdcheck/testdata/invalid.yaml "$work" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and "status" not in d]
for n, doc in enumerate(docs):
    doc.setdefault("apiVersion", "sluice.dev/v1alpha1")
    expect = doc["metadata"]["annotations"]["expect"]
    with open(f"{sys.argv[2]}/invalid-{n:03}.yaml", "w") as f:
        f.write(yaml.safe_dump(doc))
    with open(f"{sys.argv[2]}/invalid-{n:03}.expect", "w") as f:
        f.write(expect)
PY
    for file in "$work"/invalid-*.yaml; do
        expect="$(cat "${file%.yaml}.expect")"
        if kubectl apply --dry-run=server -n "$NAMESPACE" -f "$file" >"$work/apply.log" 2>&1; then
            fail "accepted: $(grep -m1 'name:' "$file")"
        elif tr -d '"' <"$work/apply.log" | grep -qF -- "$(tr -d '"' <<<"$expect")"; then
            pass
        else
            fail "refused, but not with \"$expect\": $(head -c 300 "$work/apply.log")"
        fi
    done
    note "invalid.yaml: $(find "$work" -name 'invalid-*.yaml' | wc -l) objects refused"

    step "API server: helm install, and what each ServiceAccount may do"
    release=rbac
    if helm install "$release" "$chart" --namespace "$NAMESPACE" --wait=false >"$work/install.log" 2>&1; then
        pass
        controller="system:serviceaccount:$NAMESPACE:$release-sluice-controller"
        proxy="system:serviceaccount:$NAMESPACE:$release-sluice-proxy"
        # ACCOUNT EXPECTED VERB RESOURCE [NAMESPACE]
        while read -r who want verb resource ns; do
            [[ -n "$who" ]] || continue
            account=$controller
            [[ "$who" == proxy ]] && account=$proxy
            subresource_args=()
            if [[ "$resource" == */* ]]; then
                subresource_args=(--subresource "${resource#*/}")
                resource="${resource%%/*}"
            fi
            got="$(kubectl auth can-i "$verb" "$resource" ${subresource_args[@]+"${subresource_args[@]}"} \
                --as "$account" -n "${ns:-$NAMESPACE}" 2>/dev/null || true)"
            if [[ "$got" == "$want" ]]; then
                pass
            else
                fail "$who can-i $verb $resource in ${ns:-$NAMESPACE}: $got, expected $want"
            fi
        done <<'CASES'
controller yes list budgets.sluice.dev
controller yes watch aigateways.sluice.dev
controller yes patch budgets.sluice.dev/status
controller no patch budgets.sluice.dev
controller no delete backends.sluice.dev
controller no create mcproutes.sluice.dev
controller yes get secrets
controller no create secrets
controller no list secrets kube-system
controller no list budgets.sluice.dev kube-system
controller yes create events.events.k8s.io
controller yes update leases.coordination.k8s.io
controller no delete leases.coordination.k8s.io
controller no list pods
proxy no list budgets.sluice.dev
proxy no get secrets
proxy no get leases.coordination.k8s.io
CASES
        note "kubectl auth can-i: checked"
        helm uninstall "$release" --namespace "$NAMESPACE" >/dev/null 2>&1 || true
    else
        sed 's/^/    /' "$work/install.log"
        fail "helm install"
    fi
fi

step "summary"
echo "$checks passed, $failures failed"
((failures == 0))
