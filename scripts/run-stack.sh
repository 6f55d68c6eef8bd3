#!/usr/bin/env bash
# run-stack.sh: start devauth, authz and mcp-gateway from bin/ (`make run` builds
# them first), wait until every /healthz answers, print how to connect, and stop
# everything on Ctrl-C or SIGTERM.
#
# Configuration: the environment, then .env (RUN_ENV_FILE) for what the environment
# does not set; .env.example documents every variable. Demo mode (the default) runs
# devauth with seeded users. PropelAuth mode (PROPELAUTH_AUTH_URL set to a URL that
# is not on this machine) starts no devauth. Redis is used when REDIS_URL is set;
# otherwise authz keeps its cache in process.
#
# Every service listens on 127.0.0.1 unless its *_LISTEN says otherwise: devauth's
# passwords are public and authz's gRPC is plaintext, so nothing is reachable from
# the network by default. The banner names every address and warns about any that
# is not loopback, and says when devauth's test API (DEVAUTH_TEST_API) is on.
#
# Upstreams: with UPSTREAMS_FILE set (`make run UPSTREAMS_FILE=examples/upstreams.yaml`)
# the gateway fronts the MCP servers that file lists; the banner says what each
# one offers, from the gateway's log. When the file names ${IDENTITY_UPSTREAM_URL},
# the script also starts the example upstream bin/identity-upstream on
# IDENTITY_UPSTREAM_LISTEN (default 127.0.0.1:8081) and sets IDENTITY_UPSTREAM_URL
# to its /mcp URL.
#
# Variables of this script only: MCPAUTHZ_BIN_DIR (bin), RUN_LOG_DIR (run-logs),
# RUN_TIMEOUT (30, seconds to wait for health), RUN_ENV_FILE (.env),
# IDENTITY_UPSTREAM_LISTEN (127.0.0.1:8081).
#
# A bad or busy port, or any other setup problem, is one line on stderr naming the
# variable, and exit status 1.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prog=run-stack
# Messages go to err_fd: once the stack runs, stderr itself is silenced so that
# bash's own job reports ("Killed") do not clutter the one-line errors.
err_fd=2

die() {
	printf '%s: %s\n' "$prog" "$*" >&"$err_fd"
	exit 1
}

# load_env_file sets KEY=VALUE lines of a dotenv file that the environment does not
# already set. It does not source the file: values with spaces need no shell
# quoting, and nothing in it is executed.
load_env_file() {
	local file=$1 line key value n=0
	[[ -f $file ]] || return 0
	while IFS= read -r line || [[ -n $line ]]; do
		n=$((n + 1))
		line=${line%$'\r'}
		[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
		if [[ ! $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]]; then
			die "$file:$n: not a KEY=VALUE line"
		fi
		key=${BASH_REMATCH[2]}
		value=${BASH_REMATCH[3]}
		if [[ $value =~ ^\"(.*)\"[[:space:]]*$ || $value =~ ^\'(.*)\'[[:space:]]*$ ]]; then
			value=${BASH_REMATCH[1]}
		else
			value=${value%%[[:space:]]#*}
			value=${value%"${value##*[![:space:]]}"}
		fi
		if [[ -z ${!key+set} ]]; then
			export "$key=$value"
		fi
	done <"$file"
}

# port_of VAR prints the port of the listen address in $VAR, or dies naming VAR.
port_of() {
	local var=$1 addr=${!1} port
	if [[ ! $addr =~ ^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):([0-9]+)$ ]]; then
		die "$var=$addr: not a listen address such as :8000 or 127.0.0.1:8000"
	fi
	port=${BASH_REMATCH[2]}
	if ((10#$port < 1 || 10#$port > 65535)); then
		die "$var=$addr: port $port is out of range 1-65535"
	fi
	echo $((10#$port))
}

# host_of VAR prints the host to dial for the listen address in $VAR: loopback
# for a wildcard address.
host_of() {
	local addr=${!1} host
	host=${addr%:*}
	host=${host#[}
	host=${host%]}
	case $host in
	"" | 0.0.0.0 | "::") echo 127.0.0.1 ;;
	*) echo "$host" ;;
	esac
}

# answers HOST PORT succeeds when something accepts TCP connections there.
answers() {
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# is_wildcard VAR succeeds when $VAR listens on every interface (:8000,
# 0.0.0.0:8000, [::]:8000).
is_wildcard() {
	local host=${!1%:*}
	case $host in
	"" | 0.0.0.0 | "[::]" | "::") return 0 ;;
	*) return 1 ;;
	esac
}

# is_loopback VAR succeeds when $VAR listens on a loopback address only.
is_loopback() {
	local host=${!1%:*}
	[[ $host =~ ^(127\.[0-9.]+|localhost|\[::1\])$ ]]
}

# listening_on PORT succeeds when a socket listens on PORT on any address, from
# the kernel's tables; it fails with status 2 when they cannot be read.
listening_on() {
	local want found=2 f sl laddr st rest
	printf -v want '%04X' "$1"
	for f in /proc/net/tcp /proc/net/tcp6; do
		[[ -r $f ]] || continue
		found=1
		while read -r sl laddr _ st rest; do
			[[ $st == 0A && ${laddr##*:} == "$want" ]] && return 0
		done <"$f"
	done
	return $found
}

# in_use VAR PORT succeeds when something already listens where $VAR would bind,
# so that binding it would fail. A specific address is probed by connecting to
# it: a listener on that address or on the wildcard answers. A wildcard address
# also conflicts with a listener on any one address (another loopback address, a
# LAN address), which no single connection finds, so the kernel's table of
# listening sockets is read instead (where it cannot be, loopback is probed).
in_use() {
	local var=$1 port=$2 st=0
	if is_wildcard "$var"; then
		listening_on "$port" || st=$?
		((st == 2)) || return $st
	fi
	answers "$(host_of "$var")" "$port"
}

# healthy URL succeeds when GET URL answers 200.
healthy() {
	local url=$1 hostport path host port
	hostport=${url#http://}
	path=/${hostport#*/}
	hostport=${hostport%%/*}
	host=${hostport%:*}
	port=${hostport##*:}
	host=${host#[}
	host=${host%]}
	timeout 2 bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$3" "$1:$2" >&3
		IFS= read -r status <&3 || exit 1
		[[ $status =~ ^HTTP/[0-9.]+\ 200 ]]
	' _ "$host" "$port" "$path" 2>/dev/null
}

is_local_url() {
	[[ $1 =~ ^https?://(localhost|127\.[0-9.]+|\[::1\])(:[0-9]+)?(/|$) ]]
}

load_env_file "${RUN_ENV_FILE:-$root/.env}"

bin_dir=${MCPAUTHZ_BIN_DIR:-$root/bin}
log_dir=${RUN_LOG_DIR:-$root/run-logs}
timeout_s=${RUN_TIMEOUT:-30}
[[ $timeout_s =~ ^[0-9]+$ ]] && ((timeout_s > 0)) || die "RUN_TIMEOUT=$timeout_s: not a positive number of seconds"

# Demo mode unless PROPELAUTH_AUTH_URL names a server elsewhere.
demo=true
if [[ -n ${PROPELAUTH_AUTH_URL:-} ]] && ! is_local_url "$PROPELAUTH_AUTH_URL"; then
	demo=false
fi

# Loopback by default (see the top of this file). MCP_METRICS_LISTEN is the
# gateway's operations listener (metrics, off the port of /mcp).
export MCP_LISTEN=${MCP_LISTEN:-127.0.0.1:8000}
export AUTHZ_LISTEN=${AUTHZ_LISTEN:-127.0.0.1:50051}
export AUTHZ_METRICS_LISTEN=${AUTHZ_METRICS_LISTEN:-127.0.0.1:9091}
export MCP_METRICS_LISTEN=${MCP_METRICS_LISTEN:-127.0.0.1:9092}
vars=(MCP_LISTEN AUTHZ_LISTEN AUTHZ_METRICS_LISTEN MCP_METRICS_LISTEN)
if $demo; then
	export DEVAUTH_LISTEN=${DEVAUTH_LISTEN:-127.0.0.1:9000}
	vars+=(DEVAUTH_LISTEN)
fi

# The upstreams file: a readable file, named by an absolute path (the gateway
# resolves the paths in it against its directory). The example upstream runs
# when the file asks for it.
example_upstream=false
if [[ -n ${UPSTREAMS_FILE:-} ]]; then
	[[ -f $UPSTREAMS_FILE && -r $UPSTREAMS_FILE ]] || die "UPSTREAMS_FILE=$UPSTREAMS_FILE: not a readable file"
	UPSTREAMS_FILE=$(cd "$(dirname "$UPSTREAMS_FILE")" && pwd)/$(basename "$UPSTREAMS_FILE")
	export UPSTREAMS_FILE
	if grep -qF '${IDENTITY_UPSTREAM_URL}' "$UPSTREAMS_FILE"; then
		example_upstream=true
		export IDENTITY_UPSTREAM_LISTEN=${IDENTITY_UPSTREAM_LISTEN:-127.0.0.1:8081}
		vars+=(IDENTITY_UPSTREAM_LISTEN)
	fi
fi

# Every address valid, no two alike, none taken: otherwise one line naming it.
declare -A port_owner=()
for var in "${vars[@]}"; do
	port=$(port_of "$var") || exit 1
	if [[ -n ${port_owner[$port]:-} ]]; then
		die "$var=${!var}: port $port is also the port of ${port_owner[$port]}"
	fi
	port_owner[$port]=$var
	if in_use "$var" "$port"; then
		die "$var=${!var}: port $port is already in use (set $var to a free address)"
	fi
done

if [[ -n ${REDIS_URL:-} ]]; then
	if [[ ! $REDIS_URL =~ ^rediss?://([^@/]*@)?(\[[0-9A-Fa-f:.]+\]|[^:/]+)(:([0-9]+))?(/.*)?$ ]]; then
		die "REDIS_URL=$REDIS_URL: not a redis://host:port/db URL"
	fi
	redis_host=${BASH_REMATCH[2]}
	redis_host=${redis_host#[}
	redis_host=${redis_host%]}
	if ! answers "$redis_host" "${BASH_REMATCH[4]:-6379}"; then
		die "REDIS_URL: nothing answers at $redis_host:${BASH_REMATCH[4]:-6379} (start redis-server, or unset REDIS_URL for the in-process cache)"
	fi
fi

mcp_port=$(port_of MCP_LISTEN)
authz_port=$(port_of AUTHZ_LISTEN)
export MCP_SERVER_URL=${MCP_SERVER_URL:-http://localhost:$mcp_port}
export AUTHZ_ADDR=${AUTHZ_ADDR:-$(host_of AUTHZ_LISTEN):$authz_port}
if $example_upstream; then
	export IDENTITY_UPSTREAM_URL=http://$(host_of IDENTITY_UPSTREAM_LISTEN):$(port_of IDENTITY_UPSTREAM_LISTEN)/mcp
fi
if $demo; then
	devauth_port=$(port_of DEVAUTH_LISTEN)
	export PROPELAUTH_AUTH_URL=${PROPELAUTH_AUTH_URL:-http://localhost:$devauth_port}
	if [[ ! $PROPELAUTH_AUTH_URL =~ :$devauth_port/?$ ]]; then
		die "PROPELAUTH_AUTH_URL=$PROPELAUTH_AUTH_URL: devauth listens on port $devauth_port (DEVAUTH_LISTEN); use http://localhost:$devauth_port"
	fi
	export REQUEST_VALIDATION_CLIENT_ID=${REQUEST_VALIDATION_CLIENT_ID:-demo-introspection-client}
	export REQUEST_VALIDATION_CLIENT_SECRET=${REQUEST_VALIDATION_CLIENT_SECRET:-demo-introspection-secret}
	export PROPELAUTH_API_KEY=${PROPELAUTH_API_KEY:-demo-api-key}
fi

for name in devauth authz mcp-gateway identity-upstream; do
	[[ $name == devauth && $demo == false ]] && continue
	[[ $name == identity-upstream && $example_upstream == false ]] && continue
	[[ -x $bin_dir/$name ]] || die "MCPAUTHZ_BIN_DIR=$bin_dir: $name is missing (run make build)"
done

mkdir -p "$log_dir" || die "RUN_LOG_DIR=$log_dir: cannot create it"
# The directory ignores itself, so logs never end up in a commit.
[[ -f $log_dir/.gitignore ]] || echo '*' >"$log_dir/.gitignore"

declare -A pids=()
stopping=false

# stop_all sends SIGTERM to every service still running, waits for them (SIGKILL
# after 10 s) and returns.
stop_all() {
	local name pid deadline
	stopping=true
	for name in "${!pids[@]}"; do
		kill -TERM "${pids[$name]}" 2>/dev/null || true
	done
	deadline=$((SECONDS + 10))
	for name in "${!pids[@]}"; do
		pid=${pids[$name]}
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		unset "pids[$name]"
	done
}

on_signal() {
	local sig=$1
	trap - INT TERM
	if ! $stopping; then
		echo >&"$err_fd"
		echo "$prog: stopping..." >&"$err_fd"
		stop_all
		echo "$prog: stopped; logs are in $log_dir" >&"$err_fd"
	fi
	trap - EXIT
	# Die of the same signal, so a calling make or shell sees the interrupt.
	kill -"$sig" $$
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'stop_all' EXIT

start() {
	local name=$1
	shift
	"$bin_dir/$name" "$@" >"$log_dir/$name.log" 2>&1 &
	pids[$name]=$!
}

# last_log_line prints the last line a service wrote, for a one-line failure.
last_log_line() {
	tail -n 1 "$log_dir/$1.log" 2>/dev/null || true
}

declare -A health=()
if $demo; then
	start devauth
	health[devauth]="http://$(host_of DEVAUTH_LISTEN):$devauth_port/healthz"
fi
if $example_upstream; then
	# It fetches the gateway's JWKS when the first assertion arrives, so it
	# can start before the gateway, which lists its tools at start.
	start identity-upstream -listen "$IDENTITY_UPSTREAM_LISTEN" \
		-jwks "$MCP_SERVER_URL/.well-known/jwks.json" \
		-issuer "$MCP_SERVER_URL" -audience "$IDENTITY_UPSTREAM_URL"
	health[identity-upstream]="http://$(host_of IDENTITY_UPSTREAM_LISTEN):$(port_of IDENTITY_UPSTREAM_LISTEN)/healthz"
fi
start authz
health[authz]="http://$(host_of AUTHZ_METRICS_LISTEN):$(port_of AUTHZ_METRICS_LISTEN)/healthz"
start mcp-gateway
# /readyz (on the metrics listener), not /healthz: it answers 200 only once the gateway's connection to
# authz works, so a request sent right after "ready:" is not a 503.
health[mcp-gateway]="http://$(host_of MCP_METRICS_LISTEN):$(port_of MCP_METRICS_LISTEN)/readyz"

# upstream_summary prints one line per upstream the gateway fronts, in the
# order it logged them, from the latest catalog line of each: what it offers,
# or that it did not answer.
upstream_summary() {
	local line name what
	local re_name='"upstream":"([^"]+)"' re_ok='"msg":"upstream catalog".*"entries":"([^"]*)"' re_down='"msg":"upstream catalog unavailable' re_err='"error":"(([^"\\]|\\.)*)"'
	local -a order=()
	local -A state=()
	while IFS= read -r line; do
		[[ $line =~ $re_name ]] || continue
		name=${BASH_REMATCH[1]}
		if [[ $line =~ $re_ok ]]; then
			what=${BASH_REMATCH[1]}
		elif [[ $line =~ $re_down ]]; then
			what="unavailable"
			[[ $line =~ $re_err ]] && what+=" (${BASH_REMATCH[1]//\\\"/\"})"
			what+="; its tools appear once it answers"
		else
			continue
		fi
		[[ -n ${state[$name]:-} ]] || order+=("$name")
		state[$name]=$what
	done <"$log_dir/mcp-gateway.log"
	if ((${#order[@]} == 0)); then
		echo "(the gateway logged no upstream catalog; see its log)"
	fi
	for name in "${order[@]}"; do
		echo "$name: ${state[$name]}"
	done
}

deadline=$((SECONDS + timeout_s))
for name in devauth identity-upstream authz mcp-gateway; do
	[[ -n ${health[$name]:-} ]] || continue
	until healthy "${health[$name]}"; do
		if ! kill -0 "${pids[$name]}" 2>/dev/null; then
			die "$name exited at start: $(last_log_line "$name") (log: $log_dir/$name.log)"
		fi
		if ((SECONDS >= deadline)); then
			die "RUN_TIMEOUT=$timeout_s: $name not healthy at ${health[$name]} (log: $log_dir/$name.log)"
		fi
		sleep 0.1
	done
done

# Upstreams that did not answer the gateway's first catalog request (one
# still starting) are retried with backoff: wait for them too, within
# RUN_TIMEOUT, so the banner shows what they offer. One that verifies the
# identity assertions answers the first request: the gateway serves its JWKS
# while it fetches the catalogs.
if [[ -n ${UPSTREAMS_FILE:-} ]]; then
	# Not `| grep -q`: under pipefail, grep quitting early can fail the pipe.
	while [[ $(upstream_summary) == *": unavailable"* ]] && ((SECONDS < deadline)); do
		sleep 0.2
	done
fi

mcp_url=$MCP_SERVER_URL/mcp

# The pre-registered client devauth serves (its configuration's first one), as
# the mcp.json of PropelAuth's MCP guide: devauth prints it from the same
# configuration it runs with. No client configured: nothing to show.
guide_json=""
if $demo; then
	guide_json=$("$bin_dir/devauth" -print-mcp-json "$mcp_url" 2>/dev/null) || guide_json=""
fi

exec {err_fd}>&2 2>/dev/null

cat <<EOF

  mcpauthz is running.   MCP server: $mcp_url

EOF
if $demo; then
	cat <<EOF
  Authorization server: devauth at $PROPELAUTH_AUTH_URL (demo)
  Log in as alice@example.com / alice-password   (or bob@example.com / bob-password)
  devauth's MCP settings (PropelAuth's MCP dashboard page): ${DEVAUTH_CONFIG_FILE:-the defaults (DEVAUTH_CONFIG_FILE unset; devauth.example.yaml spells them out)}
EOF
	case ${DEVAUTH_TEST_API:-} in
	1 | t | T | true | TRUE | True)
		cat <<EOF
  devauth test API is ON (DEVAUTH_TEST_API): anyone who reaches $PROPELAUTH_AUTH_URL/dev/
    with PROPELAUTH_API_KEY can mint tokens for any user
EOF
		;;
	esac
else
	cat <<EOF
  Authorization server: PropelAuth at $PROPELAUTH_AUTH_URL
EOF
fi
listening="gateway $MCP_LISTEN (ops $MCP_METRICS_LISTEN), authz $AUTHZ_LISTEN (metrics $AUTHZ_METRICS_LISTEN)"
$demo && listening+=", devauth $DEVAUTH_LISTEN"
$example_upstream && listening+=", identity-upstream $IDENTITY_UPSTREAM_LISTEN"
exposed=()
for var in "${vars[@]}"; do
	is_loopback "$var" || exposed+=("$var")
done
if ((${#exposed[@]} == 0)); then
	echo "  Listening on loopback only: $listening"
else
	echo "  Listening on: $listening"
	for var in "${exposed[@]}"; do
		where="on ${!var%:*}"
		is_wildcard "$var" && where="on every interface"
		case $var in
		DEVAUTH_LISTEN) why="devauth's demo passwords are public" ;;
		AUTHZ_LISTEN) why="authz's gRPC answers anyone who reaches it (plaintext unless AUTHZ_TLS_* is set)" ;;
		IDENTITY_UPSTREAM_LISTEN) why="the example upstream is a demo server" ;;
		*) why="reachable from the network" ;;
		esac
		echo "  WARNING: $var=${!var} listens $where: $why"
	done
fi
cat <<EOF
  Cache: $([[ -n ${REDIS_URL:-} ]] && echo "Redis (REDIS_URL) behind the in-process cache" || echo "in-process (set REDIS_URL to share it)")
  Logs:  $log_dir/{$($demo && echo "devauth,")authz,mcp-gateway$($example_upstream && echo ",identity-upstream")}.log
EOF
if [[ -n ${UPSTREAMS_FILE:-} ]]; then
	echo "  Upstreams (UPSTREAMS_FILE=$UPSTREAMS_FILE), behind the same login:"
	upstream_summary | sed 's/^/    /'
fi
cat <<EOF

  MCP Inspector (Node 22.19+):
    npx @modelcontextprotocol/inspector --transport http --server-url $mcp_url
    (or in its web UI: Transport "Streamable HTTP", URL $mcp_url, Connect)

  Claude Code (then /mcp in Claude Code to log in):
    claude mcp add --transport http mcpauthz $mcp_url

  Cursor (~/.cursor/mcp.json or .cursor/mcp.json; it registers itself):
    { "mcpServers": { "mcpauthz": { "url": "$mcp_url" } } }

  Claude Desktop (claude_desktop_config.json; mcp-remote bridges its stdio to HTTP):
    { "mcpServers": { "mcpauthz": { "command": "npx", "args": ["-y", "mcp-remote", "$mcp_url"] } } }
EOF
if [[ -n $guide_json ]]; then
	client_id=$(sed -n 's/^ *"CLIENT_ID": "\(.*\)",\{0,1\}$/\1/p' <<<"$guide_json")
	client_secret=$(sed -n 's/^ *"CLIENT_SECRET": "\(.*\)",\{0,1\}$/\1/p' <<<"$guide_json")
	cat <<EOF

  Pre-registered OAuth client (PropelAuth: MCP → OAuth Clients; devauth: mcp.clients):
    Client ID:     $client_id
EOF
	if [[ -n $client_secret ]]; then
		echo "    Client secret: $client_secret   (confidential: client_secret_basic or client_secret_post)"
	else
		echo "    No secret (public client: PKCE only)"
	fi
	echo "  Cursor with that client, as PropelAuth's MCP guide sets it up (~/.cursor/mcp.json):"
	sed 's/^/    /' <<<"$guide_json"
fi
cat <<EOF

  Ctrl-C stops everything.
ready: $mcp_url
EOF

# Wait for a signal, or for a service to die on its own (then stop the others).
# Polling, because `wait -n` misses a child that died before it was called; the
# short sleep runs in the background because a trap runs only once a foreground
# command ends, and `wait` returns at once on a signal.
while true; do
	for name in "${!pids[@]}"; do
		if ! kill -0 "${pids[$name]}" 2>/dev/null; then
			wait "${pids[$name]}" && status=0 || status=$?
			unset "pids[$name]"
			stop_all
			die "$name exited with status $status: $(last_log_line "$name") (log: $log_dir/$name.log)"
		fi
	done
	sleep 0.5 &
	wait $! || true
done
