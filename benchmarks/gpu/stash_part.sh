#!/usr/bin/env bash
# Run ON THE GPU MACHINE by each ferry call: keeps the wheel parts this call carried in
# /tmp/edgeport-wheels, which outlives the call while the machine stays warm.
set -euo pipefail
cd "$(dirname "$0")/../.."
STASH=${STASH:-/tmp/edgeport-wheels}
mkdir -p "$STASH"
shopt -s nullglob
for f in .whl/parts/* .whl/small/*.whl; do
  if [ "${LINK:-0}" = 1 ]; then  # run.sh --dry-run: links, not 255 MB of copies
    ln -sf "$PWD/$f" "$STASH/"
  else
    cp -f "$f" "$STASH/"
  fi
done
echo "stash $STASH now holds:"
ls -l "$STASH"
