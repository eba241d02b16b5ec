#!/usr/bin/env bash
# VNN-COMP: prepare one instance.  Usage: prepare_instance.sh v1 CATEGORY MODEL.onnx PROPERTY.vnnlib
# (MODEL.onnx may list several networks as name=path or (name path) pairs, as run_instance.sh takes.)
# Checks that the files exist and ends what an earlier run_instance.sh of ours left running (the
# process groups recorded in its pid files, nothing found by name).  Nothing is cached or converted.
set -uo pipefail
if [[ $# -ne 4 || "$1" != "v1" ]]; then
    echo "usage: $0 v1 CATEGORY MODEL.onnx PROPERTY.vnnlib" >&2
    exit 1
fi
onnx="$3"; vnnlib="$4"
files=("$vnnlib")
if [[ -f "$onnx" ]]; then
    files+=("$onnx")
else    # a VNN-LIB 2.0 query's networks: name=path or (name path) pairs; each path must exist
    paths=$(printf '%s\n' "$onnx" | grep -oE '=[^;[:space:]()]+|\([^()[:space:]]+[[:space:]]+[^()[:space:]]+\)' |
            sed -E 's/^=//; s/^\([^[:space:]]+[[:space:]]+//; s/\)$//')
    [[ -n "$paths" ]] || files+=("$onnx")
    while IFS= read -r f; do [[ -n "$f" ]] && files+=("$f"); done <<< "$paths"
fi
for f in "${files[@]}"; do
    if [[ ! -f "$f" ]]; then
        echo "prepare_instance.sh: no such file: $f" >&2
        exit 1
    fi
done

state="${TMPDIR:-/tmp}/verifier-vnncomp-$(id -u)"
shopt -s nullglob
for pidfile in "$state"/*.pid; do
    pgid="$(cat "$pidfile" 2>/dev/null || true)"
    # only a live process group whose leader is still our `timeout ... verifier vnncomp` command
    if [[ "$pgid" =~ ^[0-9]+$ ]] && tr '\0' ' ' < "/proc/$pgid/cmdline" 2>/dev/null | grep -q "verifier vnncomp"; then
        echo "prepare_instance.sh: ending leftover verifier run (process group $pgid)" >&2
        kill -TERM -- "-$pgid" 2>/dev/null || true
        sleep 1
        kill -KILL -- "-$pgid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
done
exit 0
