#!/usr/bin/env bash
# The GPU bundle's glibc handling (scripts/glibc_compat.py, scripts/gpu_bundle.sh), without building the bundle
# (xz takes minutes):
#   1. `tessera` (and the GPU test binaries next to it, if built) need no glibc newer than 2.35 except the
#      symbols the bundle provides;
#   2. the mechanism, end to end with this machine's dynamic loader, on stand-in libraries: a program bound to
#      a symbol version its library lacks (as Debian 12's libevent is bound to arc4random@GLIBC_2.36 on glibc
#      2.35) fails to start; after `glibc_compat.py weaken` it starts, and with the replacement preloaded (as
#      gpu_check.sh preloads arc4random.c's library) its call binds to the replacement;
#   3. the checker fails, naming the symbol, on an object needing a newer version of a symbol nobody provides.
# Usage: glibc_compat_test.sh SOURCE_DIR BINARY_DIR
set -euo pipefail
source_dir=$1
binary_dir=$2
compat="python3 $source_dir/scripts/glibc_compat.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

binaries=("$binary_dir/tessera")
for test_binary in cuda_backend_test cuda_device_test nccl_process_group_test; do
  [[ -x $binary_dir/tests/$test_binary ]] && binaries+=("$binary_dir/tests/$test_binary")
done
echo "--- 1. symbol versions of ${binaries[*]}"
$compat check --max 2.35 "${binaries[@]}"
# The replacement library itself must load on glibc 2.35.
cc -O2 -shared -fPIC -o "$work/libarc4random.so" "$source_dir/scripts/glibc_compat/arc4random.c"
$compat check --max 2.35 --provided "" "$work/libarc4random.so"

echo "--- 2. the mechanism on stand-in libraries"
cd "$work"
cat >old.map <<'EOF'
V_1 { global: old_function; local: *; };
EOF
cat >new.map <<'EOF'
V_1 { global: old_function; local: *; };
V_2 { global: new_function; } V_1;
EOF
cat >lib.c <<'EOF'
int old_function(void) { return 1; }
#ifdef NEW
int new_function(void) { return 2; }
#endif
EOF
cat >replacement.c <<'EOF'
int new_function(void) { return 42; }
EOF
cat >app.c <<'EOF'
#include <stdio.h>
int old_function(void);
int new_function(void);
int main(void) { printf("%d %d\n", old_function(), new_function()); return 0; }
EOF
mkdir new old
cc -shared -fPIC -DNEW -Wl,--version-script=new.map -Wl,-soname,libv.so -o new/libv.so lib.c
cc -shared -fPIC -Wl,--version-script=old.map -Wl,-soname,libv.so -o old/libv.so lib.c
cc -shared -fPIC -o libreplacement.so replacement.c
cc -o app app.c -Lnew -lv
[[ $(LD_LIBRARY_PATH=new ./app) == "1 2" ]] || { echo "FAIL: the stand-in program does not run"; exit 1; }
if LD_LIBRARY_PATH=old ./app >out.txt 2>&1; then
  echo "FAIL: a program bound to V_2 started with a library without it"
  exit 1
fi
grep -q "V_2' not found" out.txt || { echo "FAIL: unexpected loader error: $(cat out.txt)"; exit 1; }
$compat check --library libv.so --prefix V_ --max 1 --provided new_function app
$compat weaken --library libv.so --prefix V_ --max 1 --provided new_function app
[[ $(LD_LIBRARY_PATH=old LD_PRELOAD=$work/libreplacement.so ./app) == "1 42" ]] ||
  { echo "FAIL: the weakened program does not bind to the preloaded replacement"; exit 1; }
[[ $(LD_LIBRARY_PATH=new ./app) == "1 2" ]] ||
  { echo "FAIL: the weakened program no longer runs with the library that has V_2"; exit 1; }
echo "weakened program: starts without V_2 and binds the preloaded replacement; unchanged with V_2"

echo "--- 3. an unprovided newer symbol fails the check"
cc -o app2 app.c -Lnew -lv
if $compat check --library libv.so --prefix V_ --max 1 --provided "" app2 2>err.txt; then
  echo "FAIL: the checker passed an object needing new_function@V_2"
  exit 1
fi
grep -q "new_function" err.txt || { echo "FAIL: the checker did not name the symbol: $(cat err.txt)"; exit 1; }
before=$(sha256sum <app2)
if $compat weaken --library libv.so --prefix V_ --max 1 --provided "" app2 2>/dev/null; then
  echo "FAIL: weaken accepted an unprovided symbol"
  exit 1
fi
[[ $(sha256sum <app2) == "$before" ]] || { echo "FAIL: a refused weaken changed the file"; exit 1; }
echo "PASS"
