#!/usr/bin/env bash
# The Kubernetes tests, against a real single-node Kubernetes 1.20 cluster
# built and started by ../shared/kube (see its README): builds the cluster's
# binaries once per machine (about 15 minutes, then cached), starts the
# cluster in a state directory, runs every Kubernetes test with
# BERTH_REQUIRE_KUBERNETES=1 (so they fail instead of skipping), and stops
# the cluster again, also when the tests fail.
#
#   npm run test:kubernetes
#
# BERTH_KUBE_SCRIPTS: where build.sh/start.sh/stop.sh are (default: the
# shared/kube folder beside this checkout, else /work/shared/kube).
# BERTH_KUBE_STATE: the cluster's state directory (default /tmp/berth-kube).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts=${BERTH_KUBE_SCRIPTS:-}
if [ -z "$scripts" ]; then
  for candidate in ../shared/kube /work/shared/kube; do
    if [ -x "$candidate/start.sh" ]; then scripts=$candidate; break; fi
  done
fi
if [ -z "$scripts" ] || [ ! -x "$scripts/start.sh" ]; then
  echo "test-kubernetes: no cluster scripts found (looked in ../shared/kube and /work/shared/kube); set BERTH_KUBE_SCRIPTS" >&2
  exit 1
fi
scripts=$(cd "$scripts" && pwd)
state=${BERTH_KUBE_STATE:-/tmp/berth-kube}

echo "--- kubernetes: build (cached after the first time)"
"$scripts/build.sh"

echo "--- kubernetes: start a cluster in $state"
kubeconfig=$("$scripts/start.sh" "$state" | tail -n 1)
trap '"$scripts/stop.sh" "$state" >/dev/null 2>&1 || true' EXIT
echo "kubeconfig: $kubeconfig"

export BERTH_TEST_KUBECONFIG=$kubeconfig BERTH_REQUIRE_KUBERNETES=1
# The Docker test images are used as service images too: Kubernetes runs pods on the same engine.
export BERTH_REQUIRE_DOCKER=${BERTH_REQUIRE_DOCKER:-1}

echo "--- kubernetes: tests"
npm run build:all --silent
node scripts/test.js kubernetes
