#!/usr/bin/env bash
# Builds every image the compose cluster needs, locally, with no registry:
#
#   ephemera/ephemera:dev       FROM scratch: static `ephemera` + `ephemera-proxy`
#   ephemera/python:dev         FROM scratch: host CPython + libs + /bin/sh, and
#                               /opt/ephemera/{bin/ephemera-proxy,bin/ephemera-python,
#                               lib/libephemera_intercept.so}
#   ephemera/otel-collector:dev FROM scratch: static `ephemera-collector`, once the
#                               workspace's collector is real (docker-compose.otel.yml)
#
# Idempotent: cargo and the Docker layer cache make a rerun with no source
# change a no-op (about 15 s, mostly staging the Python tree).
#
# Environment (all optional):
#   EPHEMERA_REPO          workspace root            (default: this script's ../)
#   EPHEMERA_TARGET_DIR    cargo target dir          (default: <repo>/target-static)
#   EPHEMERA_STAGE_DIR     image build contexts      (default: <target dir>/images)
#   EPHEMERA_PYTHON        Python to copy            (default: python3 on PATH, resolved)
#   EPHEMERA_TAG           image tag                 (default: dev)
#   EPHEMERA_PY_PRECOMPILE 1: ship .pyc (faster cold starts, ~+15 MB); 0: don't (default 1)
#   EPHEMERA_SKIP_CARGO    1: use already-built binaries (default 0)
#   EPHEMERA_IMAGES        which images, space separated (default: "ephemera python collector")
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="${EPHEMERA_REPO:-$(cd "$here/.." && pwd)}"
target_dir="${EPHEMERA_TARGET_DIR:-$repo/target-static}"
stage_dir="${EPHEMERA_STAGE_DIR:-$target_dir/images}"
tag="${EPHEMERA_TAG:-dev}"
precompile="${EPHEMERA_PY_PRECOMPILE:-1}"
images="${EPHEMERA_IMAGES:-ephemera python collector}"
triple=x86_64-unknown-linux-gnu
static_out="$target_dir/$triple/release"
intercept_so="$target_dir/release/libephemera_intercept.so"
launcher_src="$repo/node-agent/src/launcher/ephemera-python"
collector_pkg="${EPHEMERA_COLLECTOR_PKG:-ephemera-collector}"
export DOCKER_BUILDKIT=0   # classic builder: no buildx here, and FROM a local image must not pull

die() { echo "build-images: ERROR: $*" >&2; exit 1; }
log() { echo "build-images: $*" >&2; }
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

# ---- timing ----------------------------------------------------------------
declare -a timings=()
t_total=$SECONDS
step() { # step NAME CMD...: runs CMD, records its duration
    local name="$1"; shift
    local t0=$SECONDS
    log "== $name"
    "$@"
    timings+=("$(printf '%-34s %4ds' "$name" $((SECONDS - t0)))")
}
wants() { [[ " $images " == *" $1 "* ]]; }

# ---- prerequisites -----------------------------------------------------------
apt_install() { # apt_install PKG...: only when missing tools need it
    command -v apt-get >/dev/null || die "need $* but apt-get is not available; install it by hand"
    [[ $(id -u) == 0 ]] || die "need $* (apt-get install -y $*): run as root or install it first"
    log "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null; } \
        || die "apt-get install $* failed"
}
preflight() {
    command -v cargo >/dev/null || die "cargo not found (install the Rust toolchain)"
    command -v docker >/dev/null || die "docker CLI not found"
    docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is it running, may this user use it?)"
    if ! command -v strip >/dev/null || ! command -v readelf >/dev/null; then apt_install binutils; fi
    command -v ldd >/dev/null || apt_install libc-bin
    command -v ldconfig >/dev/null || [[ -x /sbin/ldconfig ]] || apt_install libc-bin
    [[ -f "$repo/Cargo.toml" ]] || die "$repo is not the Ephemera workspace (no Cargo.toml)"
    if wants python; then
        [[ -x /bin/dash || -x /usr/bin/dash ]] || apt_install dash
        [[ -x /usr/bin/env ]] || apt_install coreutils
    fi
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$triple"; then
        rustup target add "$triple"
    fi
}

# ---- cargo -------------------------------------------------------------------
build_static() {
    if [[ "${EPHEMERA_SKIP_CARGO:-0}" == 1 ]]; then log "EPHEMERA_SKIP_CARGO=1: not building"; return; fi
    ( cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
        cargo build --release --target "$triple" -p ephemera-cli -p ephemera-node-agent --bins ) \
        || die "static build failed (cargo output above)"
}
build_intercept() {
    if [[ "${EPHEMERA_SKIP_CARGO:-0}" == 1 ]]; then return; fi
    # A normal (dynamic) cdylib: it is LD_PRELOADed into glibc programs.
    ( cd "$repo" && env -u RUSTFLAGS CARGO_TARGET_DIR="$target_dir" cargo build --release -p ephemera-intercept ) \
        || die "intercept build failed (cargo output above)"
}
is_static() { ! readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter' && ! readelf -d "$1" 2>/dev/null | grep -q NEEDED; }
check_binaries() {
    local b
    for b in ephemera ephemera-proxy; do
        [[ -x "$static_out/$b" ]] || die "$static_out/$b missing after the build"
        is_static "$static_out/$b" || die "$static_out/$b is not statically linked (it would not run FROM scratch)"
    done
    if wants python; then
        [[ -f "$intercept_so" ]] || die "$intercept_so missing after the build"
    fi
}

# ---- helpers for staging rootfs ---------------------------------------------
fresh_dir() { rm -rf "$1"; mkdir -p "$1"; }
# Host merged-/usr layout: /bin -> usr/bin etc.; mirror it so paths match the host's ldd output.
mirror_toplevel_links() {
    local root="$1" d
    for d in bin sbin lib lib64; do
        if [[ -L "/$d" ]]; then
            mkdir -p "$root/$(readlink "/$d")"; ln -sfn "$(readlink "/$d")" "$root/$d"
        else
            mkdir -p "$root/$d"
        fi
    done
}
is_elf() { [[ -f "$1" && "$(head -c4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" == '177ELF' ]]; }
# copy_libs ROOT FILE...: copies the shared libraries FILEs (host paths) need
# into ROOT at their host paths (resolved through merged-/usr symlinks).
copy_libs() {
    local root="$1"; shift
    local f lib dest
    for f in "$@"; do
        { ldd "$f" 2>/dev/null || true; } | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}'
    done | sort -u | while read -r lib; do
        [[ -e "$lib" ]] || die "library $lib (needed by the image) not found"
        dest="$root$(cd "$(dirname "$lib")" && pwd -P)/$(basename "$lib")"
        # libpython is installed at /usr/local/lib; skip the host prefix copy
        if [[ "$lib" == "${py_libdir:-/nonexistent}/"* || -e "$dest" ]]; then continue; fi
        mkdir -p "$(dirname "$dest")"
        cp -L "$lib" "$dest"
    done
}

# ---- (a) ephemera/ephemera ---------------------------------------------------
stage_ephemera() {
    local ctx="$stage_dir/ephemera" root
    root="$ctx/root"
    fresh_dir "$ctx"; mkdir -p "$root/tmp" "$root/data"; chmod 1777 "$root/tmp"
    install -m 0755 "$static_out/ephemera" "$root/ephemera"
    install -m 0755 "$static_out/ephemera-proxy" "$root/ephemera-proxy"
    strip --strip-debug "$root/ephemera" "$root/ephemera-proxy"
    mkdir -p "$root/etc"
    printf 'root:x:0:0:root:/:/ephemera\nnobody:x:65534:65534:nobody:/:/ephemera\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    cp "$here/images/ephemera.Dockerfile" "$ctx/Dockerfile"
}
declare -a superseded=()
build_image() { # build_image NAME CONTEXT
    local old new
    old="$(docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true)"
    docker build -q -t "$1" "$2" >/dev/null || die "docker build of $1 failed (run: DOCKER_BUILDKIT=0 docker build -t $1 $2)"
    new="$(docker image inspect -f '{{.Id}}' "$1")"
    if [[ -n "$old" && "$old" != "$new" ]]; then superseded+=("$old"); fi
}
remove_superseded() { # the images this run untagged, children first; kept if still in use
    local i
    for ((i = ${#superseded[@]} - 1; i >= 0; i--)); do
        docker rmi "${superseded[i]}" >/dev/null 2>&1 || log "kept superseded image ${superseded[i]:7:12} (still in use)"
    done
}
smoke_ephemera() {
    docker run --rm "ephemera/ephemera:$tag" --version >/dev/null \
        || die "ephemera/ephemera:$tag does not run (docker run --rm ephemera/ephemera:$tag --version)"
}

# ---- (b) ephemera/python -----------------------------------------------------
py_info() {
    local py="${EPHEMERA_PYTHON:-python3}"
    command -v "$py" >/dev/null || die "python3 not found (set EPHEMERA_PYTHON)"
    # The pyenv shim (or any wrapper) resolves to the real interpreter here.
    eval "$("$py" - <<'PY'
import os, sys, sysconfig, shlex
v = sysconfig.get_config_var
def out(k, x): print("%s=%s" % (k, shlex.quote(str(x or ""))))
out("py_exe", os.path.realpath(sys.executable))
out("py_ver", "%d.%d" % sys.version_info[:2])
out("py_stdlib", sysconfig.get_paths()["stdlib"])
out("py_dynload", v("DESTSHARED") or os.path.join(sysconfig.get_paths()["platstdlib"], "lib-dynload"))
out("py_shared", v("Py_ENABLE_SHARED"))
out("py_soname", v("INSTSONAME"))
out("py_libdir", v("LIBDIR"))
out("py_impl", sys.implementation.name)
PY
)"
    [[ "$py_impl" == cpython && "${py_ver%%.*}" == 3 ]] || die "$py_exe is not CPython 3"
    [[ -x "$py_exe" && -d "$py_stdlib" && -d "$py_dynload" ]] || die "cannot find $py_exe's stdlib ($py_stdlib) or lib-dynload ($py_dynload)"
    log "python: $py_exe ($py_ver), stdlib $py_stdlib"
}
# Not shipped: tests, GUI, packaging tools, docs, the static lib, site-packages.
py_excludes=(
    --exclude=__pycache__ --exclude='*.pyc' --exclude='*.pyo'
    --exclude=site-packages --exclude=dist-packages
    --exclude='config-*'
    --exclude=test --exclude=tests --exclude=idle_test --exclude=unittest/test
    --exclude=idlelib --exclude=tkinter --exclude=turtledemo --exclude=turtle.py
    --exclude=ensurepip --exclude=lib2to3 --exclude=pydoc_data
    --exclude='_tkinter.*' --exclude='_test*.so' --exclude='_ctypes_test*' --exclude='xxlimited*'
    --exclude='_xxtestfuzz*' --exclude='_xxsubinterpreters*' --exclude='_curses*' --exclude='readline.*'
    --exclude='nis.*' --exclude='ossaudiodev.*' --exclude='*.exe' --exclude='*.a'
)
stage_python() {
    local ctx="$stage_dir/python" root pyroot dyn rel
    root="$ctx/root"
    fresh_dir "$ctx"
    mirror_toplevel_links "$root"
    mkdir -p "$root/tmp" "$root/etc" "$root/usr/local/bin" "$root/usr/local/lib" \
             "$root/opt/ephemera/bin" "$root/opt/ephemera/lib" "$root/code"
    chmod 1777 "$root/tmp"
    pyroot="$root/usr/local/lib/python$py_ver"

    # Interpreter + stdlib, laid out as /usr/local/{bin,lib/pythonX.Y}.
    install -m 0755 "$py_exe" "$root/usr/local/bin/python$py_ver"
    ln -sfn "python$py_ver" "$root/usr/local/bin/python3"
    ln -sfn "python$py_ver" "$root/usr/local/bin/python"
    mkdir -p "$pyroot"
    tar -C "$py_stdlib" "${py_excludes[@]}" -cf - . | tar -C "$pyroot" -xf -
    # lib-dynload may live outside the stdlib (Debian's python: /usr/lib/python3.X/lib-dynload)
    dyn="$pyroot/lib-dynload"
    if [[ ! -d "$dyn" ]]; then
        mkdir -p "$dyn"
        tar -C "$py_dynload" "${py_excludes[@]}" -cf - . | tar -C "$dyn" -xf -
    fi
    if [[ "$py_shared" == 1 && -n "$py_soname" ]]; then
        # libpython goes to the multiarch dir, which ld.so searches without a cache.
        rel="$(cd /usr/lib/x86_64-linux-gnu 2>/dev/null && pwd -P || echo /usr/lib)"
        mkdir -p "$root$rel"
        cp -L "$py_libdir/$py_soname" "$root$rel/$py_soname"
    fi

    # /bin/sh (dash), env (the launcher's `#!/usr/bin/env python3`) and a few tools for `docker exec`.
    local sh_src tool
    sh_src="$(command -v dash || true)"; [[ -n "$sh_src" ]] || sh_src=/bin/sh
    install -m 0755 "$(readlink -f "$sh_src")" "$root/usr/bin/dash"
    ln -sfn dash "$root/usr/bin/sh"
    for tool in env cat ls mkdir rm cp mv ln sleep uname id true false; do
        if [[ -x "/usr/bin/$tool" ]]; then install -m 0755 "$(readlink -f "/usr/bin/$tool")" "$root/usr/bin/$tool"; fi
    done

    # Ephemera's pieces.
    install -m 0755 "$static_out/ephemera-proxy" "$root/opt/ephemera/bin/ephemera-proxy"
    strip --strip-debug "$root/opt/ephemera/bin/ephemera-proxy"
    install -m 0755 "$intercept_so" "$root/opt/ephemera/lib/libephemera_intercept.so"
    strip --strip-debug "$root/opt/ephemera/lib/libephemera_intercept.so"
    if [[ -f "$launcher_src" ]]; then
        install -m 0755 "$launcher_src" "$root/opt/ephemera/bin/ephemera-python"
    else
        # TODO(node-agent): the launcher lives at node-agent/src/launcher/ephemera-python;
        # if it moves, update launcher_src above.
        die "the Python launcher $launcher_src is missing: cannot build ephemera/python"
    fi

    # Shared libraries of everything ELF in the image (host paths; libpython mapped above).
    local -a elves=("$py_exe" "$intercept_so")
    while IFS= read -r -d '' f; do if is_elf "$f"; then elves+=("$f"); fi; done \
        < <(find "$root/usr/bin" "$dyn" -type f -print0)
    copy_libs "$root" "${elves[@]}"
    # Strip debug info from the copied shared objects (not the interpreter's symbols).
    find "$root/usr/lib" "$dyn" -name '*.so*' -type f -exec strip --strip-debug {} + 2>/dev/null || true
    # An ld.so cache so libraries resolve fast (and /usr/local/lib is searched).
    printf '/usr/local/lib\n' >"$root/etc/ld.so.conf"
    "$(command -v ldconfig || echo /sbin/ldconfig)" -r "$root" 2>/dev/null || log "warning: ldconfig -r failed; relying on ld.so's default paths"

    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

    if [[ "$precompile" == 1 ]]; then
        # Unchecked-hash pycs: valid whatever the files' mtimes become in the image.
        "$py_exe" -m compileall -q -j0 --invalidation-mode unchecked-hash \
            -s "$root" -p / "$pyroot" >/dev/null || die "compileall failed"
    fi

    # Quick check in a chroot before paying for a docker build.
    if [[ $(id -u) == 0 ]]; then
        chroot "$root" /usr/local/bin/python3 -c 'import hashlib, json, random, tempfile, math, os, shutil, zipfile, subprocess, sqlite3, zlib, ssl' \
            || die "the staged Python in $root cannot import the stdlib modules the examples need"
    fi
    cp "$here/images/python.Dockerfile" "$ctx/Dockerfile"
}
smoke_python() {
    local img="ephemera/python:$tag" ex="$repo/examples/functions/cpu_heavy" outp
    docker run --rm "$img" python3 -c 'import hashlib, json, random, tempfile, math, os, shutil, zipfile, subprocess, sqlite3; subprocess.run(["/bin/sh","-c","true"], check=True)' \
        || die "$img: python cannot import the stdlib the examples use"
    docker run --rm -e LD_PRELOAD=/opt/ephemera/lib/libephemera_intercept.so "$img" /bin/sh -c 'python3 -c pass' \
        || die "$img: the intercept library does not load (LD_PRELOAD=/opt/ephemera/lib/libephemera_intercept.so)"
    docker run --rm "$img" /opt/ephemera/bin/ephemera-proxy --help >/dev/null \
        || die "$img: ephemera-proxy does not run"
    if [[ -f "$ex/handler.py" ]]; then
        # The launcher end to end: one activation line in, one result line out on fd 3.
        outp="$(echo '{"value": {"n": 20}, "action_name": "smoke"}' | docker run --rm -i -v "$ex:/code:ro" -w /code "$img" \
            /bin/sh -c 'ephemera-python handler.py 3>&1 1>/dev/null 2>/dev/null')" \
            || die "$img: ephemera-python failed on examples/functions/cpu_heavy"
        [[ "$outp" == *'"digits": 19'* ]] || die "$img: unexpected launcher output: $outp"
    fi
}

# ---- (c) the OTLP collector -------------------------------------------------
# Built when the workspace has the `ephemera-collector` binary; the image is
# made only once the binary is a real collector (its --help offers --listen),
# so a placeholder does not put a dead service into the cluster. The compose
# service lives in docker-compose.otel.yml, used when this image exists.
collector_pkg_dir() { # prints the package dir holding [[bin]] $collector_pkg
    local m
    for m in "$repo"/*/Cargo.toml; do
        if grep -qs "^name = \"$collector_pkg\"" "$m"; then dirname "$m"; return; fi
    done
}
build_collector() {
    local dir pkg ctx bin
    dir="$(collector_pkg_dir)"
    if [[ -z "$dir" ]]; then
        log "no $collector_pkg binary in the workspace yet: skipping the collector image"; return
    fi
    pkg="$(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)"
    bin="$static_out/$collector_pkg"
    if [[ "${EPHEMERA_SKIP_CARGO:-0}" != 1 ]]; then
        # Its own cargo run: features resolve as for the collector alone, so
        # the binaries above are not rebuilt.
        ( cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
            cargo build --release --target "$triple" -p "$pkg" --bin "$collector_pkg" ) \
            || die "static build of $collector_pkg failed (cargo output above)"
    fi
    [[ -x "$bin" ]] || die "$bin missing after the build"
    is_static "$bin" || die "$bin is not statically linked"
    if ! "$bin" --help 2>/dev/null | grep -q -- '--listen'; then
        log "$collector_pkg has no --listen yet (a placeholder): no collector image"
        docker rmi "ephemera/otel-collector:$tag" >/dev/null 2>&1 || true
        return
    fi
    ctx="$stage_dir/otel-collector"
    fresh_dir "$ctx"; mkdir -p "$ctx/root/data" "$ctx/root/tmp"; chmod 1777 "$ctx/root/tmp"
    install -m 0755 "$bin" "$ctx/root/ephemera-collector"
    strip --strip-debug "$ctx/root/ephemera-collector"
    printf 'FROM scratch\nCOPY root/ /\nENTRYPOINT ["/ephemera-collector"]\nCMD ["--listen", "0.0.0.0:4317", "--out", "/data/spans.jsonl"]\n' >"$ctx/Dockerfile"
    build_image "ephemera/otel-collector:$tag" "$ctx"
    docker run --rm "ephemera/otel-collector:$tag" --help >/dev/null \
        || die "ephemera/otel-collector:$tag does not run (docker run --rm ephemera/otel-collector:$tag --help)"
}

# ---- main --------------------------------------------------------------------
step "preflight" preflight
step "cargo: static ephemera + proxy" build_static
if wants python; then step "cargo: intercept cdylib" build_intercept; fi
check_binaries
mkdir -p "$stage_dir"
if wants ephemera; then
    step "stage ephemera/ephemera" stage_ephemera
    step "docker build ephemera/ephemera" build_image "ephemera/ephemera:$tag" "$stage_dir/ephemera"
    step "smoke ephemera/ephemera" smoke_ephemera
fi
if wants python; then
    py_info
    step "stage ephemera/python" stage_python
    step "docker build ephemera/python" build_image "ephemera/python:$tag" "$stage_dir/python"
    step "smoke ephemera/python" smoke_python
fi
if wants collector; then step "collector" build_collector; fi
remove_superseded

echo
echo "step timings:"
printf '  %s\n' "${timings[@]}"
printf '  %-34s %4ds\n' "total" $((SECONDS - t_total))
echo
echo "images:"
docker image ls --filter "reference=ephemera/*:$tag" --format '{{.Repository}}:{{.Tag}}\t{{.Size}}\t{{.ID}}' | sort | sed 's/^/  /'
