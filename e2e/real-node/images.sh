#!/usr/bin/env bash
# Builds the images the real node runs, with BuildKit from the repository's own Dockerfiles, into OCI
# archives in the cache, named by their content: a warm run finds the archive and builds nothing.
#
#   images.sh BIN_DIR     BIN_DIR holds the prebuilt outlayer-{executor,compiler,operator} (e.g. target/debug)
#
# No registry can be reached here, so the base images the Dockerfiles name are made locally and handed to
# BuildKit as named contexts (what `docker buildx build --build-context NAME=oci-layout://…` does):
#   rust:1.95.0-slim-bookworm             debootstrap bookworm (minbase + gcc, libc6-dev, ca-certificates)
#                                         plus this machine's Rust toolchain (rustc, cargo, wasm32-wasip1)
#   gcr.io/distroless/cc-debian12:nonroot the same Debian's libc6, libgcc-s1, CA bundle and a nonroot user
#   debian:bookworm-slim                  the debootstrap tree itself (tests use it for a shell inside a pod)
#   registry.k8s.io/pause                 the static pause binary from e2e/real-node/build.sh
# The Dockerfiles take the binary prebuilt (`--build-arg BINARY=prebuilt` and a `prebuilt-binaries`
# context), as a user who built on a Debian 12 host would; without those they compile it themselves.
#
# Prints `<image reference>=<archive>` per image; the Rust harness (e2e/cluster real_node) imports them.
set -euo pipefail
shopt -s inherit_errexit

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../control-plane/versions.env
source "$here/../control-plane/versions.env"
cache_root="${OUTLAYER_E2E_CACHE:-$HOME/.cache/outlayer-e2e}"
images="$cache_root/images"
started=$SECONDS
log() { printf '[images %4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

bin_dir="${1:?usage: images.sh BIN_DIR (with outlayer-executor, outlayer-compiler, outlayer-operator)}"

# Bump when the way base images are made changes, so caches made the old way are not trusted.
BASES_REVISION=1
RUST_VERSION="$(rustc --version | awk '{print $2}')"
[[ "$RUST_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { log "cannot read the machine's Rust version: $(rustc --version)"; exit 1; }
DEBIAN_MIRROR="${OUTLAYER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

mkdir -p "$images"
exec 9>"$images/.lock"
flock 9

buildkit_bin="$cache_root/buildkit-$BUILDKIT_VERSION/bin"
runc_bin="$cache_root/runc-$RUNC_VERSION/bin"
pause_bin="$cache_root/pause-$KUBERNETES_VERSION/bin/pause"
[[ -x "$buildkit_bin/buildkitd" && -x "$runc_bin/runc" && -x "$pause_bin" ]] || {
    log "BuildKit, runc or pause missing under $cache_root: run e2e/real-node/build.sh (scripts/install-deps does)"
    exit 1
}

buildkitd_pid=""
run_dir=""
stop_buildkitd() {
    if [[ -n "$buildkitd_pid" ]]; then
        kill "$buildkitd_pid" 2>/dev/null || true
        wait "$buildkitd_pid" 2>/dev/null || true
        buildkitd_pid=""
    fi
    [[ -n "$run_dir" ]] && rm -rf "$run_dir"
    # buildkitd keeps its runc state here whatever --root says.
    rm -rf /run/buildkit
}
trap stop_buildkitd EXIT

# Starts buildkitd (OCI worker on our runc, host network for the Dockerfiles' apt-get) once, on demand.
buildctl() {
    if [[ -z "$buildkitd_pid" ]]; then
        run_dir="$(mktemp -d /tmp/outlayer-buildkit.XXXXXX)"
        PATH="$runc_bin:$PATH" "$buildkit_bin/buildkitd" \
            --root "$cache_root/buildkit-state" --addr "unix://$run_dir/buildkitd.sock" \
            --oci-worker=true --containerd-worker=false --oci-worker-net=host \
            --oci-worker-snapshotter=overlayfs >"$run_dir/buildkitd.log" 2>&1 &
        buildkitd_pid=$!
        for _ in $(seq 100); do
            "$buildkit_bin/buildctl" --addr "unix://$run_dir/buildkitd.sock" debug workers >/dev/null 2>&1 && break
            kill -0 "$buildkitd_pid" 2>/dev/null || { cat "$run_dir/buildkitd.log" >&2; log "buildkitd exited"; exit 1; }
            sleep 0.1
        done
    fi
    "$buildkit_bin/buildctl" --addr "unix://$run_dir/buildkitd.sock" "$@"
}

# The manifest digest of the single image in OCI layout $1.
layout_digest() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/index.json"))["manifests"][0]["digest"])' "$1"
}

# --- base root filesystems ------------------------------------------------------------------------------
rootfs="$images/rootfs-bookworm-r$BASES_REVISION"
if [[ ! -f "$rootfs/.complete" ]]; then
    log "debootstrap bookworm (minbase + gcc, libc6-dev, ca-certificates) from $DEBIAN_MIRROR (about a minute, once)"
    rm -rf "$rootfs" "$rootfs.tmp"
    debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev bookworm "$rootfs.tmp" "$DEBIAN_MIRROR" \
        >"$images/debootstrap.log" 2>&1 || { tail -20 "$images/debootstrap.log" >&2; exit 1; }
    # Runtimes mount their own /dev, /proc, /sys; device nodes cannot travel in an image layer anyway.
    find "$rootfs.tmp/dev" -mindepth 1 -delete
    rm -rf "$rootfs.tmp/var/cache/apt/archives/"*.deb "$rootfs.tmp/var/lib/apt/lists/"*
    touch "$rootfs.tmp/.complete"
    mv "$rootfs.tmp" "$rootfs"
fi

# A distroless/cc-like tree: the files of the packages a glibc binary needs, a CA bundle, a nonroot user.
cc_tree="$images/tree-distroless-cc-r$BASES_REVISION"
if [[ ! -f "$cc_tree/.complete" ]]; then
    log "assembling the distroless/cc stand-in from the Debian tree"
    rm -rf "$cc_tree" "$cc_tree.tmp"
    mkdir -p "$cc_tree.tmp"
    # usrmerge first (/lib -> usr/lib, …): the package lists name paths through these links.
    for link in bin lib lib32 lib64 libx32 sbin; do
        if [[ -L "$rootfs/$link" ]]; then
            mkdir -p "$cc_tree.tmp/$(dirname "$(readlink "$rootfs/$link")")"
            mkdir -p "$cc_tree.tmp/usr/$link"
            cp -a "$rootfs/$link" "$cc_tree.tmp/$link"
        fi
    done
    for pkg in base-files netbase tzdata libc6 libgcc-s1 libssl3; do
        list="$rootfs/var/lib/dpkg/info/$pkg.list"
        [[ -f "$list" ]] || list="$rootfs/var/lib/dpkg/info/$pkg:amd64.list"
        [[ -f "$list" ]] || continue
        while IFS= read -r path; do
            [[ -e "$rootfs$path" || -L "$rootfs$path" ]] || continue
            if [[ -d "$rootfs$path" && ! -L "$rootfs$path" ]]; then
                mkdir -p "$cc_tree.tmp$path"
                continue
            fi
            [[ -L "$cc_tree.tmp$path" || -e "$cc_tree.tmp$path" ]] && continue
            mkdir -p "$cc_tree.tmp$(dirname "$path")"
            cp -a "$rootfs$path" "$cc_tree.tmp$path"
        done <"$list"
    done
    # The CA bundle ca-certificates generated at install, and what a distroless image has besides.
    mkdir -p "$cc_tree.tmp/etc/ssl/certs" "$cc_tree.tmp/tmp" "$cc_tree.tmp/home/nonroot"
    cp "$rootfs/etc/ssl/certs/ca-certificates.crt" "$cc_tree.tmp/etc/ssl/certs/"
    chmod 1777 "$cc_tree.tmp/tmp"
    chown 65532:65532 "$cc_tree.tmp/home/nonroot"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$cc_tree.tmp/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$cc_tree.tmp/etc/group"
    touch "$cc_tree.tmp/.complete"
    mv "$cc_tree.tmp" "$cc_tree"
fi

# The Rust builder: the Debian tree plus this machine's toolchain where the official rust image keeps it.
rust_tree="$images/tree-rust-$RUST_VERSION-r$BASES_REVISION"
if [[ ! -f "$rust_tree/.complete" ]]; then
    log "assembling the rust:$RUST_VERSION-slim-bookworm stand-in (Debian tree + this machine's toolchain)"
    rm -rf "$rust_tree" "$rust_tree.tmp"
    cp -a "$rootfs" "$rust_tree.tmp"
    rm -f "$rust_tree.tmp/.complete"
    toolchain="$(rustc --print sysroot)"
    dest="$rust_tree.tmp/usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu"
    mkdir -p "$dest/lib/rustlib" "$rust_tree.tmp/usr/local/cargo/bin"
    cp -a "$toolchain/bin" "$dest/"
    # Only what a wasm32-wasip1 build needs: the compiler's own libraries and two std libraries.
    find "$toolchain/lib" -maxdepth 1 -type f -exec cp -a {} "$dest/lib/" \;
    for part in x86_64-unknown-linux-gnu wasm32-wasip1 etc; do
        [[ -e "$toolchain/lib/rustlib/$part" ]] && cp -a "$toolchain/lib/rustlib/$part" "$dest/lib/rustlib/"
    done
    # The component list without the parts left out, so rustup reports what is really there.
    grep -v -E '^(rust-docs|rust-std-wasm32-unknown-unknown|rust-src)' "$toolchain/lib/rustlib/components" \
        >"$dest/lib/rustlib/components" || true
    cp -a "$toolchain/lib/rustlib/"{multirust-channel-manifest.toml,multirust-config.toml,rust-installer-version} "$dest/lib/rustlib/" 2>/dev/null || true
    for manifest in "$toolchain/lib/rustlib/"manifest-*; do
        case "$manifest" in *rust-docs* | *wasm32-unknown-unknown*) continue ;; esac
        cp -a "$manifest" "$dest/lib/rustlib/"
    done
    cp "$(command -v rustup)" "$rust_tree.tmp/usr/local/cargo/bin/rustup"
    for proxy in cargo rustc rustdoc; do
        ln -s rustup "$rust_tree.tmp/usr/local/cargo/bin/$proxy"
    done
    printf 'version = "12"\ndefault_toolchain = "%s-x86_64-unknown-linux-gnu"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
        "$RUST_VERSION" >"$rust_tree.tmp/usr/local/rustup/settings.toml"
    chmod -R a+rX "$rust_tree.tmp/usr/local/rustup" "$rust_tree.tmp/usr/local/cargo"
    touch "$rust_tree.tmp/.complete"
    mv "$rust_tree.tmp" "$rust_tree"
fi

# --- base images (OCI layouts handed to BuildKit as named contexts) --------------------------------------
# base_image NAME TREE DOCKERFILE-TAIL: an OCI layout at $images/base-NAME built FROM scratch with TREE.
base_image() {
    local name="$1" tree="$2" tail="$3" layout="$images/base-$1-r$BASES_REVISION"
    if [[ ! -f "$layout/index.json" ]]; then
        log "building base image $name"
        local df
        df="$(mktemp -d)"
        printf 'FROM scratch\nCOPY --from=tree / /\n%s\n' "$tail" >"$df/Dockerfile"
        rm -rf "$layout.tmp"
        buildctl build --progress=plain --frontend dockerfile.v0 --local dockerfile="$df" --local context="$df" \
            --local tree="$tree" --opt context:tree=local:tree \
            --output "type=oci,tar=false,dest=$layout.tmp" >"$images/build-$name.log" 2>&1 ||
            { tail -30 "$images/build-$name.log" >&2; exit 1; }
        rm -rf "$df"
        mv "$layout.tmp" "$layout"
    fi
}
base_image debian "$rootfs" 'CMD ["bash"]'
base_image distroless-cc "$cc_tree" 'USER 65532:65532'
base_image rust "$rust_tree" "ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin RUST_VERSION=$RUST_VERSION"

# --- the images ---------------------------------------------------------------------------------------------
# image REF_BASE DOCKERFILE BINARY [REF]: an OCI archive named by the hash of everything that goes into it,
# tagged REF_BASE:dev-<hash> (or REF when given). BINARY (a path, may be empty) is the prebuilt binary.
image() {
    local ref_base="$1" dockerfile="$2" binary="$3" fixed_ref="${4:-}"
    local key
    key="$({
        printf 'buildkit %s bases r%s rust %s\n' "$BUILDKIT_VERSION" "$BASES_REVISION" "$RUST_VERSION"
        sha256sum "$dockerfile" | cut -d' ' -f1
        if [[ -n "$binary" ]]; then sha256sum "$binary" | cut -d' ' -f1; fi
        for layout in debian distroless-cc rust; do layout_digest "$images/base-$layout-r$BASES_REVISION"; done
    } | sha256sum | cut -c1-16)"
    local ref="${fixed_ref:-$ref_base:dev-$key}" archive="$images/$(basename "$ref_base")-$key.tar"
    if [[ ! -f "$archive" ]]; then
        log "building $ref from ${dockerfile#"$repo"/}"
        local staged
        staged="$(mktemp -d)"
        if [[ -n "$binary" ]]; then cp "$binary" "$staged/"; fi
        local cc rust debian
        cc="$(layout_digest "$images/base-distroless-cc-r$BASES_REVISION")"
        rust="$(layout_digest "$images/base-rust-r$BASES_REVISION")"
        debian="$(layout_digest "$images/base-debian-r$BASES_REVISION")"
        buildctl build --progress=plain --frontend dockerfile.v0 \
            --local context="$repo" --local dockerfile="$(dirname "$dockerfile")" \
            --opt filename="$(basename "$dockerfile")" \
            --local prebuilt="$staged" --opt context:prebuilt-binaries=local:prebuilt \
            --opt build-arg:BINARY=prebuilt --opt build-arg:RUST_VERSION="$RUST_VERSION" \
            --oci-layout cc="$images/base-distroless-cc-r$BASES_REVISION" \
            --oci-layout rust="$images/base-rust-r$BASES_REVISION" \
            --oci-layout debian="$images/base-debian-r$BASES_REVISION" \
            --opt "context:gcr.io/distroless/cc-debian12:nonroot=oci-layout://cc@$cc" \
            --opt "context:rust:$RUST_VERSION-slim-bookworm=oci-layout://rust@$rust" \
            --opt "context:rust:${RUST_VERSION%.*}-bookworm=oci-layout://rust@$rust" \
            --opt "context:debian:bookworm-slim=oci-layout://debian@$debian" \
            --output "type=oci,dest=$archive.tmp,name=$ref" >"$images/build-$(basename "$ref_base").log" 2>&1 ||
            { tail -40 "$images/build-$(basename "$ref_base").log" >&2; rm -rf "$staged" "$archive.tmp"; exit 1; }
        rm -rf "$staged"
        mv "$archive.tmp" "$archive"
        # Older archives of the same image are dead weight once a new one exists.
        find "$images" -maxdepth 1 -name "$(basename "$ref_base")-*.tar" ! -name "$(basename "$archive")" -delete
    fi
    printf '%s=%s\n' "$ref" "$archive"
}

bin_dir="$(cd "$bin_dir" 2>/dev/null && pwd)" || { log "no directory $1"; exit 1; }
for b in outlayer-executor outlayer-compiler outlayer-operator; do
    [[ -x "$bin_dir/$b" ]] || { log "$bin_dir/$b missing: build it first (cargo build -p $b)"; exit 1; }
done
image ghcr.io/outlayer/outlayer-executor "$repo/executor-image/Dockerfile" "$bin_dir/outlayer-executor"
image ghcr.io/outlayer/outlayer-compiler "$repo/compiler-image/Dockerfile" "$bin_dir/outlayer-compiler"
image ghcr.io/outlayer/outlayer-operator "$repo/operator/Dockerfile" "$bin_dir/outlayer-operator"
image outlayer.local/debian "$here/images/debian.Dockerfile" ""
image registry.k8s.io/pause "$here/images/pause.Dockerfile" "$pause_bin" "$PAUSE_IMAGE"
log "done"
