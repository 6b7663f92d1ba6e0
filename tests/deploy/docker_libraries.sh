#!/usr/bin/env bash
# Every shared library the binary needs (its NEEDED entries) comes from a package the Dockerfile's runtime stage
# installs by name; the libraries those load in turn come with those packages' dependencies. Besides the C and
# C++ runtimes of the base image, and the sanitizer runtimes of instrumented (test) builds.
#   tests/deploy/docker_libraries.sh BINARY DOCKERFILE
set -euo pipefail
binary=$1 dockerfile=$2
base="libc6 libgcc-s1 libstdc++6"
sanitizers="libasan8 libubsan1 libtsan2"
# The runtime stage: from the last FROM on, continuation lines joined; the words of its `apt-get install`s.
installed=$(awk '/^FROM /{stage=""} {stage = stage "\n" $0} END {print stage}' "$dockerfile" |
    sed -e ':a' -e '/\\$/N; s/\\\n//; ta' |
    grep -o 'apt-get install[^&;]*' | sed 's/apt-get install//' | tr ' ' '\n' | grep -v '^-' | grep -v '^$' || true)
[[ -n "$installed" ]] || { echo "no apt-get install in the runtime stage of $dockerfile" >&2; exit 1; }
missing=()
while read -r lib; do
    path=$(ldd "$binary" | awk -v l="$lib" '$1 == l { print $3 }')
    [[ -n "$path" ]] || { echo "ldd does not resolve $lib" >&2; exit 1; }
    real=$(realpath "$path")
    # (With merged /usr a package may have installed it as /lib/... or as /usr/lib/...)
    package=$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || true)
    package=$(head -1 <<<"$package" | cut -d: -f1)
    [[ -n "$package" ]] || { echo "no package owns $real ($lib)" >&2; exit 1; }
    if grep -qw -- "$package" <<<"$base $sanitizers" || grep -qx -- "$package" <<<"$installed"; then
        echo "$lib: $package"
    else
        missing+=("$package ($lib)")
    fi
done < <(readelf -d "$binary" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "the runtime stage of $dockerfile does not install: ${missing[*]}" >&2
    exit 1
fi
