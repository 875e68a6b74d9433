#!/bin/bash
# Fetch URLs through fanoutd with curl and jq, handling each result as it arrives.
#
#   fanout_example.sh URL...     one batch document of these URLs
#   fanout_example.sh < urls     a streamed batch: each line of stdin is sent as it is read
#
# The daemon is $FANOUTD (unix:/path or HOST:PORT), by default unix:/run/fanoutd/fanoutd.sock.
# Prints "INDEX STATUS URL" (or "INDEX ERROR-KIND URL") per result, then the summary;
# exits 1 if any request got an error instead of a response, 2 if the batch was refused.
set -euo pipefail

addr=${FANOUTD:-unix:/run/fanoutd/fanoutd.sock}
case $addr in
unix:*) daemon=(--unix-socket "${addr#unix:}" http://localhost/v1/batch) ;;
*) daemon=("http://$addr/v1/batch") ;;
esac
options='{"concurrency": 64, "body": "none"}' # results without bodies: just the outcome

# POSTs stdin as it comes (-T ., chunked: "." reads it without blocking, so results are
# read meanwhile; "-" would wait for more input first) and writes each result as it
# arrives (-N). --no-progress-meter rather than -s, which "-T ." ignores in curl 7.88.
post() {
	curl --no-progress-meter -N -X POST -T . -H "Content-Type: $1" -H 'Accept: application/x-ndjson' \
		"${daemon[@]}"
}

if [ $# -gt 0 ]; then
	# One document: {"requests": [URL, ...], "options": {...}}
	jq -n --argjson options "$options" '{requests: $ARGS.positional, $options}' --args "$@" |
		post application/json
else
	# A streamed batch: an options line, then each line of stdin as a JSON string.
	{ echo "{\"options\": $options}"; jq -cR --unbuffered 'select(length > 0)'; } |
		post application/x-ndjson
fi | jq -rj --unbuffered '
	if .index then "\(.index) \(.status // .error.kind) \(.url // "-")\n"
	elif .summary then "summary: \(.summary.total) total, \(.summary.responses) responses, \(.summary.errors) errors\n",
		(select(.summary.errors > 0) | "" | halt_error(1))
	else "fanoutd: \(.error.kind): \(.error.message)\n" | halt_error(2)  # the batch was refused
	end'
