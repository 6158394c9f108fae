#!/usr/bin/env bash
# Builds the local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) and the helm CLI from their Go modules into a per-version cache directory.
#
# Idempotent: binaries already in the cache that report the pinned version are reused, and so are
# binaries found in $KUBEBUILDER_ASSETS (the controller-runtime envtest convention). Versions are
# pinned in versions.env, which the Rust harness (e2e/cluster) reads too.
#
#   OUTLAYER_E2E_CACHE   cache root (default: $HOME/.cache/outlayer-e2e)
#   KUBEBUILDER_ASSETS   directory with prebuilt binaries to use instead of building them
#   E2E_GO               go binary to use (default: `go` on PATH, else a toolchain from the proxy)
#
# Prints the directory of each binary on its last lines, e.g. `kube-apiserver=/path/bin/kube-apiserver`.
set -euo pipefail
# Errors inside $(...) must stop the script too.
shopt -s inherit_errexit

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${OUTLAYER_E2E_CACHE:-$HOME/.cache/outlayer-e2e}"
k8s_bin="$cache_root/k8s-$KUBERNETES_VERSION/bin"
etcd_bin="$cache_root/etcd-$ETCD_VERSION/bin"
helm_bin="$cache_root/helm-$HELM_VERSION/bin"
k8s_minor="${KUBERNETES_VERSION#v1.}"
k8s_minor="${k8s_minor%%.*}"
started=$SECONDS

log() { printf '[control-plane %4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

# The version a binary reports, normalised to "vX.Y.Z"; empty when it cannot run.
reported_version() {
    local bin="$1" out
    case "$(basename "$bin")" in
        etcd) out="$("$bin" --version 2>/dev/null | sed -n 's/^etcd Version: */v/p')" ;;
        kubectl) out="$("$bin" version --client 2>/dev/null | sed -n 's/^Client Version: *//p')" ;;
        helm) out="$("$bin" version --template '{{.Version}}' 2>/dev/null)" ;;
        *) out="$("$bin" --version 2>/dev/null | sed -n 's/^Kubernetes *//p')" ;;
    esac
    printf '%s' "$out"
}

# Succeeds when $1 is an executable reporting version $2.
has_version() {
    [[ -x "$1" ]] && [[ "$(reported_version "$1")" == "$2" ]]
}

# Go: the machine's, else the official toolchain module from the Go module proxy (the same
# mechanism GOTOOLCHAIN=auto uses), cached next to the binaries.
find_go() {
    if [[ -n "${E2E_GO:-}" ]]; then
        printf '%s' "$E2E_GO"
        return
    fi
    if command -v go >/dev/null 2>&1; then
        command -v go
        return
    fi
    local go_version="${GO_TOOLCHAIN_VERSION:-go1.26.8}" arch
    case "$(uname -m)" in
        x86_64) arch=amd64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) log "no Go on PATH and no toolchain for $(uname -m); install Go >= 1.26" && exit 1 ;;
    esac
    local dir="$cache_root/toolchain/$go_version.linux-$arch"
    if [[ ! -x "$dir/bin/go" ]]; then
        local proxy="${GOPROXY:-https://proxy.golang.org}"
        proxy="${proxy%%,*}"
        local url="$proxy/golang.org/toolchain/@v/v0.0.1-$go_version.linux-$arch.zip"
        log "no Go on PATH: fetching $go_version from $url"
        mkdir -p "$cache_root/toolchain"
        local tmp
        tmp="$(mktemp -d "$cache_root/toolchain/.fetch.XXXXXX")"
        curl -fsSL --retry 3 -o "$tmp/go.zip" "$url"
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$tmp/go.zip" "$tmp/x"
        # The module zip holds golang.org/toolchain@<version>/{bin,pkg,src,...}; zip drops modes.
        local go_bin root
        go_bin="$(find "$tmp/x" -path '*/bin/go' -type f | head -n1)"
        [[ -n "$go_bin" ]] || { log "no bin/go in $url"; exit 1; }
        root="$(dirname "$(dirname "$go_bin")")"
        chmod -R u+x "$root/bin" "$root/pkg/tool"
        rm -rf "$dir"
        mv "$root" "$dir"
        rm -rf "$tmp"
    fi
    printf '%s' "$dir/bin/go"
}

# go build with one progress line per 100 compiled packages, so a cold build (many minutes)
# visibly advances without flooding the log with thousands of package names.
go_build() {
    local what="$1" module_dir="$2" out_dir="$3" ldflags="$4"
    shift 4
    local count=0 line
    log "building $what (cold builds take many minutes on 2 cores)"
    if ! (
        cd "$module_dir"
        GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0 \
            "$GO" build -v -trimpath -ldflags "$ldflags" -o "$out_dir/" "$@" 2>&1
    ) | while IFS= read -r line; do
        # `go build -v` names each package as it is compiled; anything else is a diagnostic.
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

# Binaries from KUBEBUILDER_ASSETS win when present (envtest ships etcd, kube-apiserver, kubectl).
asset() {
    local name="$1"
    if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$name" ]]; then
        printf '%s' "$KUBEBUILDER_ASSETS/$name"
    fi
}

k8s_tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
missing_k8s=()
declare -A found=()
for tool in "${k8s_tools[@]}"; do
    from_assets="$(asset "$tool")"
    if [[ -n "$from_assets" ]]; then
        v="$(reported_version "$from_assets")"
        [[ "$v" == "$KUBERNETES_VERSION" ]] || log "warning: $from_assets reports '$v', pinned is $KUBERNETES_VERSION"
        found[$tool]="$from_assets"
    elif has_version "$k8s_bin/$tool" "$KUBERNETES_VERSION"; then
        found[$tool]="$k8s_bin/$tool"
    else
        missing_k8s+=("$tool")
    fi
done

etcd_path="$(asset etcd)"
if [[ -n "$etcd_path" ]]; then
    v="$(reported_version "$etcd_path")"
    [[ "$v" == "$ETCD_VERSION" ]] || log "warning: $etcd_path reports '$v', pinned is $ETCD_VERSION"
    found[etcd]="$etcd_path"
elif has_version "$etcd_bin/etcd" "$ETCD_VERSION"; then
    found[etcd]="$etcd_bin/etcd"
fi

# helm is not in envtest's assets; only the cache counts.
if has_version "$helm_bin/helm" "$HELM_VERSION"; then
    found[helm]="$helm_bin/helm"
fi

if ((${#missing_k8s[@]} > 0)) || [[ -z "${found[etcd]:-}" ]] || [[ -z "${found[helm]:-}" ]]; then
    GO="$(find_go)"
    "$GO" version >/dev/null 2>&1 || { log "cannot run Go at $GO"; exit 1; }
    log "using $("$GO" version)"
fi

if [[ -z "${found[etcd]:-}" ]]; then
    mkdir -p "$etcd_bin"
    # Build into a scratch dir and move into place, so an interrupted build never leaves a
    # half-written binary that a later run would trust.
    tmp="$(mktemp -d "$etcd_bin/.build.XXXXXX")"
    go_build "etcd $ETCD_VERSION" "$here/etcd" "$tmp" "-s -w" go.etcd.io/etcd/server/v3
    # go names the binary after the path element before the /v3 suffix ("server").
    mv "$tmp/server" "$etcd_bin/etcd"
    rmdir "$tmp"
    has_version "$etcd_bin/etcd" "$ETCD_VERSION" || {
        log "built etcd reports '$(reported_version "$etcd_bin/etcd")', expected $ETCD_VERSION"
        exit 1
    }
    found[etcd]="$etcd_bin/etcd"
    log "etcd $ETCD_VERSION ready"
else
    log "reusing ${found[etcd]}"
fi

if ((${#missing_k8s[@]} > 0)); then
    mkdir -p "$k8s_bin"
    tmp="$(mktemp -d "$k8s_bin/.build.XXXXXX")"
    # Without these the binaries report v0.0.0 and version-checking clients refuse them.
    ldflags="-s -w"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
    ldflags+=" -X k8s.io/component-base/version.gitMinor=$k8s_minor"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"
    pkgs=()
    for tool in "${missing_k8s[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$tool"); done
    # One `go build` for all of them: they share most packages, which then compile once.
    go_build "${missing_k8s[*]} $KUBERNETES_VERSION" "$here/kubernetes" "$tmp" "$ldflags" "${pkgs[@]}"
    for tool in "${missing_k8s[@]}"; do
        mv "$tmp/$tool" "$k8s_bin/$tool"
        has_version "$k8s_bin/$tool" "$KUBERNETES_VERSION" || {
            log "built $tool reports '$(reported_version "$k8s_bin/$tool")', expected $KUBERNETES_VERSION"
            exit 1
        }
        found[$tool]="$k8s_bin/$tool"
    done
    rmdir "$tmp"
    log "Kubernetes $KUBERNETES_VERSION ready"
else
    log "reusing Kubernetes $KUBERNETES_VERSION binaries"
fi

if [[ -z "${found[helm]:-}" ]]; then
    mkdir -p "$helm_bin"
    tmp="$(mktemp -d "$helm_bin/.build.XXXXXX")"
    # Helm's Makefile sets the version the same way; without it `helm version` says only "v4.3".
    go_build "helm $HELM_VERSION" "$here/helm" "$tmp" \
        "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" helm.sh/helm/v4/cmd/helm
    mv "$tmp/helm" "$helm_bin/helm"
    rmdir "$tmp"
    has_version "$helm_bin/helm" "$HELM_VERSION" || {
        log "built helm reports '$(reported_version "$helm_bin/helm")', expected $HELM_VERSION"
        exit 1
    }
    found[helm]="$helm_bin/helm"
    log "helm $HELM_VERSION ready"
else
    log "reusing ${found[helm]}"
fi

log "done"
for tool in etcd "${k8s_tools[@]}" helm; do
    printf '%s=%s\n' "$tool" "${found[$tool]}"
done
