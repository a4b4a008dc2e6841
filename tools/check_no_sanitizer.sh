#!/usr/bin/env bash
# Fails when any given binary or shared library links a sanitizer runtime (a ThreadSanitizer build left in
# target/release runs 10-25x slower and makes every later bench wrong).
#   usage: tools/check_no_sanitizer.sh FILE...
set -euo pipefail
status=0
for f in "$@"; do
  if [[ ! -f "$f" ]]; then
    echo "check_no_sanitizer: $f: no such file" >&2
    status=1
  elif grep -aqE '__(tsan|asan|msan)_init|lib(tsan|asan|msan)\.so' "$f"; then
    echo "check_no_sanitizer: $f links a sanitizer runtime" >&2
    status=1
  fi
done
[[ $status == 0 ]] && echo "check_no_sanitizer: no sanitizer runtime in $*"
exit $status
