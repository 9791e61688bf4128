#!/usr/bin/env bash
# The operator end-to-end scenario on a real cluster (kind), where one exists. CI here cannot run
# it: these machines have no container engine (tests/tests/operator_e2e.rs runs the same scenario
# on a real control plane whose Pods are processes). Needs: docker, kind, kubectl, helm,
# sipp, sox, espeak-ng, curl.
#
#   tests/e2e/run-kind.sh            # create cluster, install, record one call, check, tear down
#   KEEP=1 tests/e2e/run-kind.sh     # leave the cluster running
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-opname-e2e}
NS=acme

docker build -f images/Containerfile --target recorder -t opname-recorder:e2e .
docker build -f images/Containerfile --target operator -t opname-operator:e2e .
kind create cluster --name "$CLUSTER" --wait 120s
trap '[ -n "${KEEP:-}" ] || kind delete cluster --name "$CLUSTER"' EXIT
kind load docker-image --name "$CLUSTER" opname-recorder:e2e opname-operator:e2e

# An S3-protocol store inside the cluster (moto) keeps the scenario self-contained.
kubectl create namespace opname-system
kubectl -n opname-system run moto --image=motoserver/moto:latest --port=5000 --expose
kubectl -n opname-system wait --for=condition=Ready pod/moto --timeout=120s
kubectl -n opname-system run mkbucket --rm -i --restart=Never --image=curlimages/curl -- -sf -X PUT http://moto:5000/opname
helm install opname charts/opname --namespace opname-system --wait \
  --set operator.image.repository=opname-operator --set operator.image.tag=e2e \
  --set recorder.image.repository=opname-recorder --set recorder.image.tag=e2e \
  --set store.url=s3://opname --set store.credentialsSecret=opname-store \
  --set store.env.AWS_ENDPOINT=http://moto.opname-system:5000 --set store.env.AWS_ALLOW_HTTP=true \
  --set store.env.AWS_REGION=us-east-1 \
  --set capacity.minReplicas=1 --set capacity.maxReplicas=1 \
  --set export.minRetentionDays=0 --set recordings.replicas=1 --set recordings.secureCookie=false
kubectl apply -f examples/00-namespace.yaml -f examples/01-store-secret.yaml \
  -f examples/10-policy-alice-always.yaml -f examples/11-policy-bob-ondemand.yaml
kubectl -n "$NS" wait --for=condition=Ready rpol/alice --timeout=60s
kubectl -n "$NS" rollout status deploy/opname-recorder --timeout=180s

# Invalid policies are refused by the API server.
if kubectl -n "$NS" apply -f - <<'YAML' 2>/dev/null; then echo "invalid policy accepted" >&2; exit 1; fi
apiVersion: opname.dev/v1alpha1
kind: RecordingPolicy
metadata: {name: broken}
spec: {user: x, identities: ["1001"], retentionDays: 0}
YAML

# One SIPREC call from SIPp through a port-forward of the recorder Service (SIP over TCP; RTP goes
# to the pod IP, reachable from the host through kind's network).
work=$(mktemp -d)
espeak-ng -w "$work/c.wav" "This call is recorded for Alice."
sox "$work/c.wav" -r 8000 -c 1 -t raw -e mu-law -b 8 "$work/caller.ulaw" pad 0 3
cp "$work/caller.ulaw" "$work/callee.ulaw"
cp tests/sipp/rtp_send.py "$work/"
kubectl -n "$NS" port-forward svc/opname-recorder 15060:5060 >/dev/null & pf=$!
sleep 2
(cd "$work" && sipp -sf "$OLDPWD/tests/sipp/siprec_call.xml" -m 1 -t t1 \
  -key caller sip:+31612345678@sbc.example -key callee sip:+4930123456@carrier.example \
  -d 3000 127.0.0.1:15060 -nostdin -timeout 60s -timeout_error)
kill $pf
for _ in $(seq 30); do
  keys=$(kubectl -n opname-system run ls --rm -i --restart=Never --image=curlimages/curl -- -sf "http://moto:5000/opname?list-type=2" || true)
  echo "$keys" | grep -q "recordings/r365/acme/.*\.json" && break
  sleep 2
done
echo "$keys" | grep -q "recordings/r365/acme/.*\.json"
echo "kind end-to-end: the call was recorded under alice's policy (retention class r365)"

# The recordings service: 401 without a token, the call listed for a bound ServiceAccount.
kubectl -n "$NS" create serviceaccount auditor
kubectl -n "$NS" create rolebinding auditor --clusterrole=opname-recordings-viewer --serviceaccount="$NS:auditor"
token=$(kubectl -n "$NS" create token auditor)
kubectl -n opname-system port-forward svc/opname-recordings 18080:80 >/dev/null & pf=$!
sleep 2
test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:18080/api/v1/namespaces/$NS/recordings")" = 401
curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:18080/api/v1/namespaces/$NS/recordings" | grep -q '"user":"alice@acme.example"'
kill $pf
echo "kind end-to-end: the recordings service lists the call for a bound ServiceAccount only"

# This month's export runs as a Job and ends with one part.
month=$(date -u +%Y-%m)
kubectl -n "$NS" apply -f - <<YAML
apiVersion: opname.dev/v1alpha1
kind: BulkExport
metadata: {name: e2e}
spec: {month: "$month"}
YAML
kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded bulkexport/e2e --timeout=180s
test "$(kubectl -n "$NS" get bulkexport e2e -o jsonpath='{.status.parts[0].recordings}')" = 1
echo "kind end-to-end: the export Job wrote one part"
