#!/usr/bin/env bash
# Builds what a real node needs, from the Go module proxy and Debian packages, into per-version cache
# directories next to the control plane's: kubelet and kube-proxy, containerd (+ ctr and the runc shim),
# runc, the CNI plugins, kube-router (the NetworkPolicy engine), BuildKit (buildkitd + buildctl) and the
# static "pause" binary of the sandbox image. Idempotent: a component whose directory exists is reused
# (builds land in a scratch dir and are moved into place, so a killed build leaves nothing trusted).
#
#   OUTLAYER_E2E_CACHE   cache root (default: $HOME/.cache/outlayer-e2e)
#
# Versions: e2e/control-plane/versions.env. Debian packages it needs (libseccomp-dev for runc's seccomp,
# iptables/ipset/nftables for kube-proxy and kube-router): scripts/install-deps.
# Prints `name=/path` for each binary directory on its last lines.
set -euo pipefail
shopt -s inherit_errexit

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../control-plane/versions.env
source "$here/../control-plane/versions.env"
cache_root="${OUTLAYER_E2E_CACHE:-$HOME/.cache/outlayer-e2e}"
started=$SECONDS
log() { printf '[real-node %4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

mkdir -p "$cache_root"
# One build at a time (two test runs, or install-deps twice): the second waits, then finds the cache.
exec 9>"$cache_root/.real-node-build.lock"
flock 9

GO="${E2E_GO:-$(command -v go || true)}"
[[ -n "$GO" ]] || { log "no Go on PATH; run e2e/control-plane/build.sh first (it fetches a toolchain)"; exit 1; }
export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false"

# Runs "$@" (a go build/install with -v) printing one progress line per 100 packages instead of each name.
with_progress() {
    local what="$1" count=0 line
    shift
    log "building $what (minutes when cold)"
    if ! "$@" 2>&1 | while IFS= read -r line; do
        if [[ "$line" =~ ^[a-zA-Z0-9._~/-]+$ ]]; then
            count=$((count + 1))
            if ((count % 100 == 0)); then
                log "  $what: $count packages compiled (last: $line)"
            fi
        else
            printf '%s\n' "$line" >&2
        fi
    done; then
        log "building $what failed"
        exit 1
    fi
}

# component DIR: when DIR/bin is missing, runs the build function $2 with a scratch bin dir as $1, then
# moves it into place.
component() {
    local dir="$1" build="$2"
    if [[ -d "$dir/bin" ]]; then
        return
    fi
    mkdir -p "$dir"
    # Scratch dirs of builds that were killed (the lock above makes them safe to remove).
    rm -rf "$dir"/.build.*
    local tmp
    tmp="$(mktemp -d "$dir/.build.XXXXXX")"
    "$build" "$tmp"
    mv "$tmp" "$dir/bin"
    log "$(basename "$dir") ready"
}

k8s_dir="$cache_root/k8s-node-$KUBERNETES_VERSION"
build_k8s_node() {
    local out="$1" minor="${KUBERNETES_VERSION#v1.}"
    minor="${minor%%.*}"
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    (cd "$here/../control-plane/kubernetes" &&
        with_progress "kubelet kube-proxy $KUBERNETES_VERSION" env CGO_ENABLED=0 \
            "$GO" build -mod=readonly -v -trimpath -ldflags "$ldflags" -o "$out/" \
            k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
}

containerd_dir="$cache_root/containerd-$CONTAINERD_VERSION"
build_containerd() {
    # The runc shim is needed too; no_btrfs: Debian's btrfs headers are not installed and not needed.
    with_progress "containerd $CONTAINERD_VERSION" env GOBIN="$1" CGO_ENABLED=0 \
        "$GO" install -v -trimpath -tags no_btrfs -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
        "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
        "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" \
        "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
}

runc_dir="$cache_root/runc-$RUNC_VERSION"
build_runc() {
    # seccomp needs cgo and Debian's libseccomp-dev; Debian 12 has no libpathrs, so that tag stays off.
    with_progress "runc $RUNC_VERSION" env GOBIN="$1" CGO_ENABLED=1 \
        "$GO" install -v -trimpath -tags "seccomp urfave_cli_no_docs" \
        -ldflags "-X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"
}

cni_dir="$cache_root/cni-plugins-$CNI_PLUGINS_VERSION"
build_cni() {
    local base="github.com/containernetworking/plugins/plugins"
    with_progress "CNI plugins $CNI_PLUGINS_VERSION" env GOBIN="$1" CGO_ENABLED=0 \
        "$GO" install -v -trimpath -ldflags "-s -w" \
        "$base/main/bridge@$CNI_PLUGINS_VERSION" "$base/main/loopback@$CNI_PLUGINS_VERSION" \
        "$base/ipam/host-local@$CNI_PLUGINS_VERSION" "$base/meta/portmap@$CNI_PLUGINS_VERSION"
}

kube_router_dir="$cache_root/kube-router-$KUBE_ROUTER_VERSION"
build_kube_router() {
    with_progress "kube-router $KUBE_ROUTER_VERSION" env GOBIN="$1" CGO_ENABLED=0 \
        "$GO" install -v -trimpath -ldflags "-s -w" \
        "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
}

buildkit_dir="$cache_root/buildkit-$BUILDKIT_VERSION"
build_buildkit() {
    (cd "$here/buildkit" &&
        with_progress "BuildKit $BUILDKIT_VERSION" env CGO_ENABLED=0 \
            "$GO" build -mod=readonly -v -trimpath \
            -ldflags "-s -w -X github.com/moby/buildkit/version.Version=$BUILDKIT_VERSION" -o "$1/" \
            github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl)
}

pause_dir="$cache_root/pause-$KUBERNETES_VERSION"
build_pause() {
    # The sandbox image's one binary, from the pause.c the Kubernetes module ships (as its Makefile does).
    local src
    src="$(cd "$here/../control-plane/kubernetes" && "$GO" list -mod=readonly -m -f '{{.Dir}}' k8s.io/kubernetes)"
    [[ -n "$src" && -f "$src/build/pause/linux/pause.c" ]] || {
        (cd "$here/../control-plane/kubernetes" && "$GO" mod download k8s.io/kubernetes)
        src="$(cd "$here/../control-plane/kubernetes" && "$GO" list -mod=readonly -m -f '{{.Dir}}' k8s.io/kubernetes)"
    }
    log "building pause from $src/build/pause/linux/pause.c"
    gcc -Os -Wall -Werror -static -DVERSION="v3.10.1-outlayer" -o "$1/pause" "$src/build/pause/linux/pause.c"
    strip "$1/pause"
}

component "$pause_dir" build_pause
component "$runc_dir" build_runc
component "$cni_dir" build_cni
component "$containerd_dir" build_containerd
component "$k8s_dir" build_k8s_node
component "$buildkit_dir" build_buildkit
component "$kube_router_dir" build_kube_router

log "done"
printf 'kubelet=%s\n' "$k8s_dir/bin/kubelet"
printf 'kube-proxy=%s\n' "$k8s_dir/bin/kube-proxy"
printf 'containerd=%s\n' "$containerd_dir/bin/containerd"
printf 'runc=%s\n' "$runc_dir/bin/runc"
printf 'cni=%s\n' "$cni_dir/bin"
printf 'kube-router=%s\n' "$kube_router_dir/bin/kube-router"
printf 'buildkitd=%s\n' "$buildkit_dir/bin/buildkitd"
printf 'pause=%s\n' "$pause_dir/bin/pause"
