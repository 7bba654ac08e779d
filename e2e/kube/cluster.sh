#!/usr/bin/env bash
# A real Kubernetes API server on loopback, without Docker or a cluster: etcd
# plus kube-apiserver, started the way controller-runtime's envtest starts
# them, with kubectl and helm beside them. For testing the controller, the
# CRDs and the Helm chart against a real API server (no nodes, so no pods run:
# objects are stored, validated, defaulted and watched, nothing more).
#
# Usage: e2e/kube/cluster.sh COMMAND [--dir DIR]
#   build   build (once) the pinned kube-apiserver, kubectl, etcd and helm;
#           prints the folder that holds them (progress goes to stderr)
#   up      build what is missing, start etcd and kube-apiserver in the
#           background (logs and pids in DIR), wait until /readyz is ok, write
#           DIR/kubeconfig and DIR/env.sh, and print the exports to use them
#   down    stop what `up` started (the pids in DIR)
#   status  say whether the API server in DIR is up
#   --dir DIR   where `up` keeps certs, etcd data, logs, pids, kubeconfig
#               (default $SLUICE_CACHE/kube-run); `up` starts from empty state
#
# The binaries are built from the Go module proxy with the local Go (no
# download of prebuilt binaries; GOTOOLCHAIN=local), from a small generated Go
# module per tool under $SLUICE_CACHE/kube-<hash>/src, and land in
# $SLUICE_CACHE/kube-<hash>/bin, where <hash> is taken from the pinned
# versions, the Go version and this script's build recipe: a second run builds
# nothing. A cold build (empty Go caches) takes about 9 minutes on 2 cores and
# fills about 4.5 GB of Go's build and module caches; an interrupted one
# resumes from Go's build cache. Pins (overridable, for trying other versions):
#   SLUICE_KUBE_VERSION  k8s.io/kubernetes (kube-apiserver, kubectl)
#   SLUICE_ETCD_VERSION  go.etcd.io/etcd/server/v3
#   SLUICE_HELM_VERSION  helm.sh/helm/v3
# SLUICE_KUBE_START_TIMEOUT (seconds, default 60) bounds etcd's and the API
# server's start each. Needs: go (1.26), openssl, curl, python3 (free ports).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/lib.sh
source "$here/../lib.sh"

# kube 1.36 is the newest minor that kube-rs 4.2 / k8s-openapi 0.28 know
# (feature `latest` = v1_36); etcd 3.6 is the line Kubernetes 1.36 is built
# and tested with (its go.mod requires etcd client v3.6.8).
KUBE_VERSION="${SLUICE_KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${SLUICE_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${SLUICE_HELM_VERSION:-v3.22.0}"
# Bump when the way the binaries are built changes, so they are rebuilt.
RECIPE=1

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

go_version() {
    command -v go >/dev/null 2>&1 || die "go not found: building the API server needs Go 1.26 (https://go.dev/doc/install or the distro's golang package)"
    GOTOOLCHAIN=local go env GOVERSION
}

# $SLUICE_CACHE/kube-<hash of the versions and the recipe>
kube_home() {
    local key
    key="kube=$KUBE_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION go=$(go_version) recipe=$RECIPE"
    echo "$SLUICE_CACHE/kube-$(printf '%s' "$key" | sha256sum | cut -c1-12)"
}

# ---------------------------------------------------------------- building

# Runs a go command in a generated module folder, output appended to LOG.
# While it runs, prints a line every 30 s with the count of packages compiled
# so far (go build -v lists each package it compiles, not the cached ones).
run_go() { # DIR LOG WHAT GO-ARGS...
    local dir=$1 log=$2 what=$3 start=$SECONDS pid rc=0 before
    shift 3
    before="$(wc -l <"$log")"
    (cd "$dir" && exec env GOTOOLCHAIN=local GOFLAGS="-trimpath -buildvcs=false" go "$@") >>"$log" 2>&1 &
    pid=$!
    # A background job ignores SIGINT, so Ctrl-C would leave go running: stop
    # it ourselves (what it compiled so far stays in Go's build cache).
    # shellcheck disable=SC2064 # $pid is meant to expand now
    trap "kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true; echo 'interrupted: run it again to resume' >&2; exit 130" INT TERM
    while kill -0 "$pid" 2>/dev/null; do
        for _ in $(seq 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null || break
        note "$what: $(($(wc -l <"$log") - before)) packages/modules so far, $((SECONDS - start))s" >&2
    done
    wait "$pid" || rc=$?
    trap - INT TERM
    if ((rc != 0)); then
        echo >&2
        echo "error: $what failed (go $*, exit $rc); last lines of $log:" >&2
        tail -n 30 "$log" | sed 's/^/    /' >&2
        echo "Fix the cause and run the same command again: what was built is kept in Go's build cache." >&2
        return "$rc"
    fi
    note "$what: done in $((SECONDS - start))s" >&2
}

# Writes DIR/go.mod for a throwaway module (once; `go get -tool` fills it in).
init_module() { # DIR NAME [EXTRA-GO.MOD-TEXT]
    local dir=$1 name=$2 extra=${3:-}
    mkdir -p "$dir"
    [[ -f "$dir/.resolved" ]] && return 0
    printf 'module sluice.local/%s\n\ngo 1.26.0\n%s' "$name" "$extra" >"$dir/go.mod"
    rm -f "$dir/go.sum"
}

# The `replace` block that makes k8s.io/kubernetes usable as a dependency: its
# go.mod requires each staging module at v0.0.0 and points them at
# ./staging/..., which only works inside its own repository; we point each at
# its published tag v0.<minor>.<patch> instead. The list is read from that
# version's own go.mod, so it follows the version pinned.
kube_replaces() { # LOG
    local log=$1 gomod staging_version
    gomod="$(cd "$src_root" && GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" 2>>"$log" \
        | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
    [[ -f "$gomod" ]] || { echo "error: could not fetch k8s.io/kubernetes@$KUBE_VERSION (see $log)" >&2; return 1; }
    staging_version="v0.${KUBE_VERSION#v1.}"
    echo "replace ("
    grep -oE '^[[:space:]]*k8s\.io/[A-Za-z0-9._-]+ => \./staging/' "$gomod" \
        | awk -v v="$staging_version" '{ printf "\t%s => %s %s\n", $1, $1, v }'
    echo ")"
}

# Builds PKG into BIN/NAME (to a temporary name first, so a half-written
# binary is never taken for a built one).
build_binary() { # SRC LOG NAME PKG LDFLAGS
    local src=$1 log=$2 name=$3 pkg=$4 ldflags=$5
    [[ -x "$bin/$name" ]] && { note "$name: already built" >&2; return 0; }
    run_go "$src" "$log" "building $name" build -v -ldflags="$ldflags" -o "$bin/.$name.tmp" "$pkg" || return 1
    mv -f "$bin/.$name.tmp" "$bin/$name"
    note "$name: $(du -h "$bin/$name" | cut -f1)" >&2
}

build_kube() {
    local src="$src_root/kube" log="$src_root/kube.log" minor ldflags="-s -w" p replaces
    [[ -x "$bin/kube-apiserver" && -x "$bin/kubectl" ]] && return 0
    step "k8s.io/kubernetes $KUBE_VERSION: kube-apiserver and kubectl" >&2
    : >>"$log"
    if [[ ! -f "$src/.resolved" ]]; then
        replaces="$(kube_replaces "$log")" || return 1
        init_module "$src" kube-tools "
// k8s.io/kubernetes requires its staging modules at v0.0.0: use their tags.
$replaces
"
        run_go "$src" "$log" "resolving modules (downloads on first use)" \
            get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kubectl@$KUBE_VERSION" || return 1
        touch "$src/.resolved"
    fi
    # What upstream's hack/lib/version.sh stamps, so /version, `kubectl
    # version` and helm's kubeVersion checks see the real version.
    minor="${KUBE_VERSION#v1.}"
    minor="${minor%%.*}"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    build_binary "$src" "$log" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags" || return 1
    build_binary "$src" "$log" kubectl k8s.io/kubernetes/cmd/kubectl "$ldflags" || return 1
}

build_etcd() {
    local src="$src_root/etcd" log="$src_root/etcd.log"
    [[ -x "$bin/etcd" ]] && return 0
    step "go.etcd.io/etcd/server/v3 $ETCD_VERSION: etcd" >&2
    : >>"$log"
    if [[ ! -f "$src/.resolved" ]]; then
        init_module "$src" etcd-tools
        run_go "$src" "$log" "resolving modules (downloads on first use)" \
            get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" || return 1
        touch "$src/.resolved"
    fi
    build_binary "$src" "$log" etcd go.etcd.io/etcd/server/v3 "-s -w" || return 1
}

build_helm() {
    local src="$src_root/helm" log="$src_root/helm.log" k8s ldflags
    [[ -x "$bin/helm" ]] && return 0
    step "helm.sh/helm/v3 $HELM_VERSION: helm" >&2
    : >>"$log"
    if [[ ! -f "$src/.resolved" ]]; then
        init_module "$src" helm-tools
        run_go "$src" "$log" "resolving modules (downloads on first use)" \
            get -tool "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || return 1
        touch "$src/.resolved"
    fi
    # As helm's Makefile: its version, and the Kubernetes version `helm
    # template` assumes, taken from the client-go it is built with.
    k8s="$(cd "$src" && GOTOOLCHAIN=local go list -m -f '{{.Version}}' k8s.io/client-go)" || return 1
    k8s="${k8s#v0.}"
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${k8s%%.*}"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s%%.*}"
    build_binary "$src" "$log" helm helm.sh/helm/v3/cmd/helm "$ldflags" || return 1
}

# Builds whatever is missing; sets $bin.
ensure_built() {
    local home lock_fd start=$SECONDS
    home="$(kube_home)"
    bin="$home/bin"
    src_root="$home/src"
    if [[ -x "$bin/kube-apiserver" && -x "$bin/kubectl" && -x "$bin/etcd" && -x "$bin/helm" ]]; then
        return 0
    fi
    mkdir -p "$bin" "$src_root"
    # One build at a time per folder (two scripts starting at once wait).
    exec {lock_fd}>"$home/.lock"
    flock "$lock_fd"
    echo "building into $home (kube $KUBE_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION, $(go_version))" >&2
    echo "a cold build takes several minutes; logs: $src_root/*.log" >&2
    build_etcd || die "building etcd failed"
    build_kube || die "building kube-apiserver/kubectl failed"
    build_helm || die "building helm failed"
    flock -u "$lock_fd"
    echo "built in $((SECONDS - start))s:" >&2
    (cd "$bin" && du -h etcd kube-apiserver kubectl helm | sed 's/^/    /') >&2
}

# ---------------------------------------------------------------- running

certs() { # DIR
    local d=$1/certs
    mkdir -p "$d"
    (
        cd "$d"
        ossl() { openssl "$@" 2>>openssl.log || { cat openssl.log >&2; exit 1; }; }
        # CA for the serving certificate, and the serving certificate.
        ossl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=sluice-test-ca"
        ossl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "extendedKeyUsage=serverAuth" \
            "keyUsage=digitalSignature,keyEncipherment" "basicConstraints=CA:FALSE" >apiserver.ext
        ossl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile apiserver.ext
        # Service-account token signing key pair.
        ossl genrsa -out sa-signer.key 2048
        ossl rsa -in sa-signer.key -pubout -out sa-signer.pub
        # Client CA, and the admin client certificate (group system:masters).
        ossl req -x509 -newkey rsa:2048 -nodes -keyout client-ca.key -out client-ca.crt -days 3650 -subj "/CN=sluice-test-client-ca"
        ossl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin"
        printf '%s\n' "extendedKeyUsage=clientAuth" "keyUsage=digitalSignature,keyEncipherment" "basicConstraints=CA:FALSE" >admin.ext
        ossl x509 -req -in admin.csr -CA client-ca.crt -CAkey client-ca.key -CAcreateserial -out admin.crt -days 3650 -extfile admin.ext
        rm -f ./*.csr ./*.ext ./*.srl
    )
}

write_kubeconfig() { # DIR PORT
    local dir=$1 port=$2
    b64() { base64 -w0 <"$1"; }
    cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sluice-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(b64 "$dir/certs/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$dir/certs/admin.crt")
    client-key-data: $(b64 "$dir/certs/admin.key")
contexts:
- name: sluice-test
  context:
    cluster: sluice-test
    user: admin
    namespace: default
current-context: sluice-test
EOF
    chmod 600 "$dir/kubeconfig"
}

write_env() { # DIR
    local dir=$1
    cat >"$dir/env.sh" <<EOF
# Source this: the test API server started by e2e/kube/cluster.sh up.
export KUBECONFIG='$dir/kubeconfig'
export PATH='$bin':"\$PATH"
export SLUICE_KUBECTL='$bin/kubectl'
export SLUICE_HELM='$bin/helm'
# For tools that look for envtest's binaries (controller-runtime, kube-rs envtest).
export KUBEBUILDER_ASSETS='$bin'
# Keep kubectl's and helm's caches out of the home folder.
export KUBECACHEDIR='$dir/kubectl-cache'
export HELM_CACHE_HOME='$dir/helm/cache'
export HELM_CONFIG_HOME='$dir/helm/config'
export HELM_DATA_HOME='$dir/helm/data'
EOF
}

# The pid in DIR/NAME.pid when that process is still the binary we started.
live_pid() { # DIR NAME
    local pid
    pid="$(cat "$1/$2.pid" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "/$2 " || return 1
    echo "$pid"
}

api_ready() { # DIR PORT
    [[ "$(curl -sS --max-time 3 --cacert "$1/certs/ca.crt" --cert "$1/certs/admin.crt" \
        --key "$1/certs/admin.key" "https://127.0.0.1:$2/readyz" 2>/dev/null)" == ok ]]
}

stop_all() { # DIR
    local dir=$1 name pid
    for name in kube-apiserver etcd; do
        if pid="$(live_pid "$dir" "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
            echo "stopped $name (pid $pid)" >&2
        fi
        rm -f "$dir/$name.pid"
    done
    rm -f "$dir/port"
}

cmd_up() { # DIR
    local dir=$1 ports etcd_port peer_port api_port etcd_pid api_pid timeout
    ensure_built
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if live_pid "$dir" kube-apiserver >/dev/null && api_ready "$dir" "$(cat "$dir/port")"; then
        echo "already up (e2e/kube/cluster.sh down --dir '$dir' stops it)" >&2
        print_env "$dir"
        return 0
    fi
    stop_all "$dir" 2>/dev/null
    # Fresh state every time, as envtest does; only what we create is removed.
    rm -rf "$dir/certs" "$dir/etcd-data" "$dir/kubectl-cache" "$dir/helm" "$dir/apiserver-certs" \
        "$dir/kubeconfig" "$dir/env.sh" "$dir/etcd.log" "$dir/kube-apiserver.log"
    # $dir expanded now: the trap may run where cmd_up's locals are gone.
    # shellcheck disable=SC2064
    trap "echo 'up failed; logs: $dir/etcd.log $dir/kube-apiserver.log' >&2; stop_all $(printf %q "$dir")" EXIT
    trap 'exit 130' INT TERM

    step "certificates" >&2
    command -v openssl >/dev/null || die "openssl not found"
    certs "$dir"

    mapfile -t ports < <(free_ports 3)
    etcd_port=${ports[0]} peer_port=${ports[1]} api_port=${ports[2]}
    timeout="${SLUICE_KUBE_START_TIMEOUT:-60}"

    step "etcd on 127.0.0.1:$etcd_port" >&2
    # setsid: its own session, so it outlives this script and a Ctrl-C here.
    setsid "$bin/etcd" \
        --name=default \
        --data-dir="$dir/etcd-data" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" \
        --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-cluster="default=http://127.0.0.1:$peer_port" \
        --unsafe-no-fsync=true \
        </dev/null >"$dir/etcd.log" 2>&1 &
    etcd_pid=$!
    echo "$etcd_pid" >"$dir/etcd.pid"
    wait_http_ok "http://127.0.0.1:$etcd_port/health" "$etcd_pid" "$timeout" \
        || { tail -n 20 "$dir/etcd.log" >&2; die "etcd did not become healthy"; }

    step "kube-apiserver on https://127.0.0.1:$api_port" >&2
    mkdir -p "$dir/apiserver-certs"
    setsid "$bin/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address=127.0.0.1 \
        --advertise-address=127.0.0.1 \
        --secure-port="$api_port" \
        --cert-dir="$dir/apiserver-certs" \
        --tls-cert-file="$dir/certs/apiserver.crt" \
        --tls-private-key-file="$dir/certs/apiserver.key" \
        --client-ca-file="$dir/certs/client-ca.crt" \
        --authorization-mode=RBAC \
        --service-cluster-ip-range=10.0.0.0/24 \
        --allow-privileged=true \
        --disable-admission-plugins=ServiceAccount \
        --service-account-issuer="https://127.0.0.1:$api_port/" \
        --service-account-key-file="$dir/certs/sa-signer.pub" \
        --service-account-signing-key-file="$dir/certs/sa-signer.key" \
        </dev/null >"$dir/kube-apiserver.log" 2>&1 &
    api_pid=$!
    echo "$api_pid" >"$dir/kube-apiserver.pid"
    echo "$api_port" >"$dir/port"
    local start=$SECONDS
    wait_command_ok "$api_pid" "$timeout" api_ready "$dir" "$api_port" \
        || { tail -n 30 "$dir/kube-apiserver.log" >&2; die "kube-apiserver did not become ready (/readyz) within ${timeout}s"; }
    note "ready in $((SECONDS - start))s" >&2

    write_kubeconfig "$dir" "$api_port"
    write_env "$dir"
    trap - EXIT INT TERM
    print_env "$dir"
}

print_env() { # DIR
    local dir=$1
    cat <<EOF
# API server https://127.0.0.1:$(cat "$dir/port") (etcd + kube-apiserver $KUBE_VERSION; logs in $dir)
export KUBECONFIG='$dir/kubeconfig'
# kubectl: $bin/kubectl
# helm:    $bin/helm
# all of it (KUBECONFIG, PATH, KUBEBUILDER_ASSETS, caches): source '$dir/env.sh'
# stop:    e2e/kube/cluster.sh down --dir '$dir'
EOF
}

cmd_down() { # DIR
    local dir=$1
    [[ -d "$dir" ]] || { echo "nothing to stop in $dir" >&2; return 0; }
    stop_all "$dir"
}

cmd_status() { # DIR
    local dir=$1 port
    port="$(cat "$dir/port" 2>/dev/null)" || { echo "down ($dir)"; return 1; }
    if live_pid "$dir" kube-apiserver >/dev/null && api_ready "$dir" "$port"; then
        echo "up: https://127.0.0.1:$port (KUBECONFIG=$dir/kubeconfig)"
    else
        echo "not ready ($dir; see its logs)"
        return 1
    fi
}

main() {
    local cmd="" dir="$SLUICE_CACHE/kube-run"
    while (($#)); do
        case "$1" in
            -h | --help | help) usage; return 0 ;;
            --dir) [[ $# -ge 2 ]] || die "--dir needs a folder"; dir=$2; shift ;;
            --dir=*) dir=${1#--dir=} ;;
            build | up | down | status) [[ -z "$cmd" ]] || die "one command at a time"; cmd=$1 ;;
            *) die "unknown argument '$1' (see --help)" ;;
        esac
        shift
    done
    case "$cmd" in
        build) ensure_built; echo "$bin" ;;
        up) cmd_up "$dir" ;;
        down) cmd_down "$dir" ;;
        status) ensure_bin_path; cmd_status "$dir" ;;
        "") usage >&2; return 2 ;;
    esac
}

# Sets $bin without building (for status).
ensure_bin_path() {
    bin="$(kube_home)/bin"
}

main "$@"
