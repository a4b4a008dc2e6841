#!/usr/bin/env bash
# Fails when the C library carries what it must leave out: the host kernel emulator (feature `emu`), the
# hub client (feature `hub`: hf-hub, rustls, ring) or the CLI's parts (crate latentmas-cli: eval, bench, clap,
# indicatif). Build it alone for this (`cargo build --release -p latentmas-capi`): a build of the whole
# workspace unifies features and puts them all back. Prints the library's size.
#   usage: tools/check_capi_contents.sh target/release/liblatentmas.a
set -euo pipefail
lib="${1:?usage: tools/check_capi_contents.sh LIB}"
[[ -f "$lib" ]] || { echo "check_capi_contents: $lib: no such file" >&2; exit 1; }
symbols="$(nm --defined-only "$lib" 2>/dev/null)"
status=0
check() { # name, extended regex over the defined symbols
  local hits
  hits="$(grep -cE "$2" <<<"$symbols" || true)"
  if [[ "$hits" != 0 ]]; then
    echo "check_capi_contents: $lib contains $1 ($hits symbols matching '$2')" >&2
    status=1
  fi
}
check "the kernel emulator" ' lmas_emu_|lmas_emu[0-9]'
check "the hub client" '6hf_hub|6rustls|ring_core_'
check "the CLI's eval and bench" '12latentmas_cli|9latentmas4eval|9latentmas5bench|4clap|12clap_builder|9indicatif'
if ! grep -qE ' T lmas_plan_rmsnorm$' <<<"$symbols"; then
  echo "check_capi_contents: $lib lacks the kernels' launch planners (lmas_plan_*)" >&2
  status=1
fi
[[ $status == 0 ]] && echo "check_capi_contents: $lib ($(du -h "$lib" | cut -f1)) holds none of the emulator, the hub client, the CLI"
exit $status
