#!/usr/bin/env bash
# Installs the C++ libraries process_isolation builds against, from Debian's packages, when any
# is missing. Needs root (or sudo). Safe to run again: it does nothing when all are present.
set -euo pipefail

# pkgconf: Cap'n Proto's CMake package config needs pkg-config (a minimal Debian lacks it).
# clang and libclang-rt-dev (the distribution's default LLVM: 14 on Debian 12, 19 on Debian 13)
# are for `make fuzz`: libclang-rt-dev holds libFuzzer and the sanitizer runtimes
# (libclang_rt.fuzzer, .asan, .ubsan_standalone) that -fsanitize=fuzzer,address,undefined link.
packages=(capnproto libcapnp-dev libboost-dev libgtest-dev libgmock-dev libseccomp-dev
          libbenchmark-dev cmake ninja-build g++ python3-venv pkgconf clang libclang-rt-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing missing system packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
