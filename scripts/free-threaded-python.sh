#!/usr/bin/env bash
# Print the path of a free-threaded CPython (PEP 703: the GIL can be off), getting one first
# if this machine has none:
#
#   scripts/free-threaded-python.sh            # e.g. /opt/python3.13t/bin/python3.13t
#
# In order: python3.14t or python3.13t on PATH; `uv python find 3.14t` (how a machine with
# the internet gets one: `uv python install 3.14t`); the build cached at $PREFIX; else build
# Debian trixie's python3.13 source package (the upstream CPython 3.13 tarball) with
# --disable-gil into $PREFIX, once per machine (about 10 minutes on two cores). The build
# uses an apt configuration of its own for the trixie source; the system's apt is untouched.
# Progress goes to stderr; only the interpreter's path goes to stdout.
set -euo pipefail

PREFIX="${CONTEND_FREE_THREADED_PREFIX:-/opt/python3.13t}"

free_threaded() {   # is $1 an interpreter built with the GIL optional?
    "$1" -c 'import sys, sysconfig; sys.exit(not sysconfig.get_config_var("Py_GIL_DISABLED"))' \
        2>/dev/null
}

for candidate in python3.14t python3.13t "$PREFIX/bin/python3.13t"; do
    path="$(command -v "$candidate" || true)"
    if [ -n "$path" ] && free_threaded "$path"; then
        echo "$path"
        exit 0
    fi
done
if command -v uv >/dev/null; then
    path="$(uv python find 3.14t 2>/dev/null || true)"
    if [ -n "$path" ] && free_threaded "$path"; then
        echo "$path"
        exit 0
    fi
fi

echo "free-threaded-python: none found; building CPython 3.13 with --disable-gil into $PREFIX" >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
cat > "$work/apt/sources.list" <<'EOF'
deb-src http://deb.debian.org/debian trixie main
EOF
apt_own=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=-"
         -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
         -o "APT::Get::Allow-Unauthenticated=false")
{
    apt-get "${apt_own[@]}" update -q
    # The build's own needs, from this machine's release.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        build-essential dpkg-dev pkg-config libssl-dev zlib1g-dev libbz2-dev liblzma-dev \
        libreadline-dev libsqlite3-dev libffi-dev libncurses-dev libgdbm-dev \
        libgdbm-compat-dev libzstd-dev uuid-dev tk-dev
    cd "$work"
    apt-get "${apt_own[@]}" source --download-only python3.13/trixie
    tar -xf python3.13_*.orig.tar.xz
    cd Python-3.13*/
    ./configure --disable-gil --prefix="$PREFIX" --with-ensurepip=install --quiet
    make -j"$(nproc)" --quiet
    make install --quiet
} >&2
free_threaded "$PREFIX/bin/python3.13t"
echo "$PREFIX/bin/python3.13t"
