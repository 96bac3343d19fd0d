#!/usr/bin/env bash
# Unpack Triton's load generator, perf_analyzer, into DEST (default .cache/perf_analyzer) with
# the two shared libraries it needs, and write DEST/perf_analyzer, a wrapper that finds them.
#
# The binary ships as bin/perf_analyzer inside the tritonclient wheels 2.54-2.60 for linux
# x86_64 (later wheels are pure Python). 2.60 needs glibc 2.38; on an older glibc (Debian 12
# has 2.36) the 2.47 wheel runs, with libb64 from the distribution (package libb64-0d) and the
# CUDA runtime library from the nvidia-cuda-runtime-cu12 wheel (it starts without a GPU).
# Needs pip and, for libb64, apt-get and dpkg-deb (Debian or Ubuntu). Exits non-zero with the
# reason when any step cannot run here; nothing is left half-written in DEST.
set -euo pipefail

DEST=${1:-.cache/perf_analyzer}
PYTHON=${PYTHON:-.venv/bin/python}
TRITONCLIENT=${TRITONCLIENT:-2.47.0}

if [[ "$(uname -sm)" != "Linux x86_64" ]]; then
    echo "perf_analyzer: the tritonclient wheels ship it for Linux x86_64 only" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lib"

"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux1_x86_64 --python-version 3.11 \
    "tritonclient==$TRITONCLIENT" -d "$work/wheels"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --python-version 3.11 \
    "nvidia-cuda-runtime-cu12" -d "$work/wheels"
"$PYTHON" - "$work" <<'EOF'
import sys, zipfile, pathlib
work = pathlib.Path(sys.argv[1])
for wheel in (work / "wheels").glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = name.rsplit("/", 1)[-1]
            if name.endswith("/bin/perf_analyzer") or base.startswith("libcudart.so.12"):
                target = work / ("perf_analyzer.bin" if base == "perf_analyzer" else f"lib/{base}")
                target.write_bytes(z.read(name))
EOF

if ! ls /usr/lib/x86_64-linux-gnu/libb64.so.0d >/dev/null 2>&1; then
    (cd "$work" && { apt-get download libb64-0d 2>/dev/null \
        || { apt-get update -qq && apt-get download libb64-0d; }; })
    dpkg-deb -x "$work"/libb64-0d_*.deb "$work/deb"
    cp "$work"/deb/usr/lib/x86_64-linux-gnu/libb64.so.0d* "$work/lib/"
fi

chmod +x "$work/perf_analyzer.bin"
cat > "$work/perf_analyzer" <<'EOF'
#!/usr/bin/env bash
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/perf_analyzer.bin" "$@"
EOF
chmod +x "$work/perf_analyzer"
"$work/perf_analyzer" --version >/dev/null 2>&1 || {
    echo "perf_analyzer: the unpacked binary does not start here:" >&2
    LD_LIBRARY_PATH="$work/lib" ldd "$work/perf_analyzer.bin" | grep "not found" >&2 || true
    exit 1
}

rm -rf "$DEST.new"
mkdir -p "$(dirname "$DEST")"
mkdir "$DEST.new"
mv "$work/perf_analyzer.bin" "$work/perf_analyzer" "$work/lib" "$DEST.new/"
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
echo "perf_analyzer (tritonclient $TRITONCLIENT) in $DEST"
