/**
 * Shell scripts berth runs in the job container, for what the exec API cannot
 * do itself. Each runs as `sh -c SCRIPT NAME ARG...`: NAME is its $0 (what
 * sh's own errors name), the ARGs are $1, $2, ….
 */

/** Appends 127.0.0.1 lines for the names $@ to /etc/hosts (the pod's services share its network). */
export const addHostsScript = `for n; do printf '127.0.0.1\t%s\n' "$n"; done >>/etc/hosts`;

/**
 * Runs a command after setting up what the exec API cannot: env, working
 * directory (created when missing, as Docker creates a container's
 * WorkingDir), a user check and a clear failure when the program is missing.
 * Arguments: failure prefix, workdir, user, count of exported NAME=value,
 * those, count of env(1) NAME=value (names sh cannot export), those, argv.
 */
export const execWrapper = `p=$1 d=$2 u=$3 n=$4; shift 4
fail() { printf '%s%s\\n' "$p" "$1" >&2; exit 127; }
while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n-1)); done
n=$1; shift
if [ -n "$u" ]; then
  me=$(id -u 2>/dev/null); name=$(id -un 2>/dev/null)
  [ "$u" = "$me" ] || [ "$u" = "$name" ] || fail "cannot run as user $u: the Kubernetes exec API runs commands as the container's user (\${name:-$me}); set runAsUser in the pod template instead"
fi
if [ -n "$d" ]; then
  [ -d "$d" ] || mkdir -p -- "$d" 2>/dev/null
  cd -- "$d" 2>/dev/null || fail "cannot create or enter the working directory $d in the job container (as \${name:-$(id -u)})"
fi
eval "c=\\\${$((n+1))}"
case $c in
  */*) [ -f "$c" ] && [ -x "$c" ] || fail "$c: no such executable file in the job container" ;;
  *) command -v -- "$c" >/dev/null 2>&1 || fail "executable file \\"$c\\" not found in \\$PATH of the job container" ;;
esac
if [ "$n" -gt 0 ]; then exec env "$@"; fi
exec "$@"`;

/** Extracts stdin under $1, writing tar's exit status to $2 (and its errors to $2.err). */
export const copyInScript = `d=$1 s=$2
{ mkdir -p -- "$d" && tar -x -f - -C "$d"; } 2>"$s.err"; echo $? >"$s.tmp"; mv -f "$s.tmp" "$s"`;

/** Waits for copyInScript's status file $1, then reports and removes it. */
export const copyInStatusScript = `s=$1
while [ ! -e "$s" ]; do sleep 0.05 2>/dev/null || sleep 1; done
cat "$s.err" >&2; rc=$(cat "$s"); rm -f -- "$s" "$s.err"; exit "$rc"`;

/** A tar of $2 inside $1 on stdout; exit 44 when the path does not exist. */
export const copyOutScript = `[ -e "$1/$2" ] || [ -L "$1/$2" ] || exit 44
cd -- "$1" && exec tar -c -f - -- "$2"`;
export const copyOutMissing = 44;
