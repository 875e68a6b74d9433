#!/bin/sh
# Installs the Debian packages fanoutd needs, and only those missing, so it is
# cheap to run before every build. POSIX sh on purpose: it is the first thing a
# bare Debian 12 (no make, no compiler, no python3) runs.
#   sh scripts/deps.sh          build and run
#   sh scripts/deps.sh test     also what the tests need (the package set too; nodejs,
#                               golang-go and jq run the examples/, built offline)
#   sh scripts/deps.sh package  also what `make package` and scripts/package-test
#                               need (build-essential: dpkg-checkbuilddeps wants it;
#                               procps: /bin/kill, which systemd-analyze verify checks)
#   sh scripts/deps.sh bench    also what scripts/bench needs
set -eu

build="make gcc libc6-dev pkg-config libevent-dev libjansson-dev libssl-dev libsystemd-dev zlib1g-dev libnghttp2-dev ca-certificates"
test="python3 python3-pytest python3-h2 nghttp2-client nginx dnsmasq curl openssl clang libclang-rt-14-dev nodejs golang-go jq"
package="build-essential dpkg-dev debhelper lintian man-db groff-base mandoc systemd procps"
bench="nginx libnginx-mod-http-echo wrk curl python3-aiohttp time valgrind tcpdump"

want=$build
for extra in "$@"; do
	case $extra in
	test) want="$want $test $package" ;;
	package) want="$want $package" ;;
	bench) want="$want $test $bench" ;;
	*) echo "deps.sh: unknown set '$extra' (test, package, bench)" >&2; exit 2 ;;
	esac
done

missing=
for p in $want; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "deps.sh: installing$missing" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
