#!/usr/bin/env bash
# Brings the real parts that the tests and the benchmark drive (never mocked): Debian's Redis,
# Sentinel, HAProxy, Mosquitto and its clients, OpenSSL, nftables and iproute2 (the chaos
# tests' network namespaces: run as root), and pinned helm and
# kustomize built with `go install` into the git-ignored .tools/bin, which the tests look in
# first; and PyPI's scramp (an independent SCRAM client) in a venv at .tools/scramp. Run by `npm test` (pretest), .ci/run and `npm run bench`. Idempotent, and quick when
# everything is there. When it cannot install (not root, no Go), it stops before any test with
# one message naming exactly what to install and how.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools/bin"

# command -> Debian package
declare -A debian=([openssl]=openssl [redis-server]=redis-server [redis-sentinel]=redis-sentinel
  [haproxy]=haproxy [mosquitto]=mosquitto [mosquitto_pub]=mosquitto-clients
  [mosquitto_sub]=mosquitto-clients [nft]=nftables [ip]=iproute2)
# tool -> Go module at its pinned version
declare -A go_tools=([helm]=helm.sh/helm/v3/cmd/helm@v3.22.0
  [kustomize]=sigs.k8s.io/kustomize/kustomize/v5@v5.8.2)

has_command() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/sbin/$1" ]]; }
# A stamp per pinned version: a changed pin rebuilds the tool, an unchanged one costs nothing.
stamp() { echo "$tools/.${1}@${go_tools[$1]##*@}"; }

missing_packages=()
for command in "${!debian[@]}"; do
  has_command "$command" || missing_packages+=("${debian[$command]}")
done
mapfile -t missing_packages < <(printf '%s\n' "${missing_packages[@]}" | sort -u | sed '/^$/d')
missing_tools=()
for tool in "${!go_tools[@]}"; do
  [[ -x "$tools/$tool" && -e "$(stamp "$tool")" ]] || missing_tools+=("$tool")
done
# The SCRAM interoperability test's client (harness/scramp-client.py), pinned.
scramp_pin="scramp==1.5.0"
scramp_venv="$root/.tools/scramp"
need_scramp=0
[[ -x "$scramp_venv/bin/python" && -e "$scramp_venv/.$scramp_pin" ]] || need_scramp=1
((${#missing_packages[@]} + ${#missing_tools[@]} + need_scramp == 0)) && exit 0

problems=()
if ((${#missing_packages[@]} > 0)) && [[ $(id -u) -ne 0 ]]; then
  problems+=("Debian packages: sudo apt-get install ${missing_packages[*]}")
fi
if ((${#missing_tools[@]} > 0)) && ! command -v go >/dev/null 2>&1; then
  modules=()
  for tool in "${missing_tools[@]}"; do modules+=("${go_tools[$tool]}"); done
  problems+=("Go (https://go.dev/doc/install), then: GOBIN=$tools go install ${modules[*]}")
fi
if ((need_scramp)) && ! command -v python3 >/dev/null 2>&1; then
  problems+=("Python 3 with venv, then: python3 -m venv $scramp_venv && $scramp_venv/bin/pip install $scramp_pin")
fi
if ((${#problems[@]} > 0)); then
  {
    echo "The tests drive real Redis, HAProxy, Mosquitto, helm and kustomize; these are missing and"
    echo "cannot be installed from here. Install them, then run npm test again:"
    printf '  - %s\n' "${problems[@]}"
  } >&2
  exit 1
fi

if ((${#missing_packages[@]} > 0)); then
  echo "provision: installing Debian packages: ${missing_packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing_packages[@]}" >/dev/null
fi
mkdir -p "$tools"
for tool in "${missing_tools[@]}"; do
  started=$SECONDS
  echo "provision: go install ${go_tools[$tool]} (a few minutes the first time)"
  GOBIN="$tools" go install "${go_tools[$tool]}"
  rm -f "$tools/.${tool}@"*
  touch "$(stamp "$tool")"
  echo "provision: $tool ready in $((SECONDS - started)) s"
done
if ((need_scramp)); then
  echo "provision: $scramp_pin into $scramp_venv"
  rm -rf "$scramp_venv"
  python3 -m venv "$scramp_venv"
  "$scramp_venv/bin/python" -m pip install -q --disable-pip-version-check "$scramp_pin"
  touch "$scramp_venv/.$scramp_pin"
fi
