#!/bin/sh
# Build step (grader.toml [service] build): generates the Python protobuf and gRPC code into
# build/ from shop.proto, our two google.rpc protos and Debian's grpc-proto copies of the health
# and reflection protos. Needs protoc (protobuf-compiler), /usr/bin/grpc_python_plugin
# (protobuf-compiler-grpc), the well-known types in /usr/include (libprotobuf-dev) and grpc-proto.
#
# Health and reflection are copied to grpc_health/... and grpc_reflection/... (the layout of the
# grpcio-health-checking and grpcio-reflection packages, which Debian lacks): generated under
# grpc/health/v1/ their Python modules would be "grpc.health.v1...", inside grpcio's own "grpc"
# package. The services' names (grpc.health.v1.Health, ...) come from the `package` line and stay.
set -eu
cd "$(dirname "$0")"
# Two runs of this service at once (`grader prove` grades two variants side by side) must not
# rebuild build/ under each other: one at a time, and nothing to do when build/ is newer than
# every input (a service already running has imported its modules; a starting one must not see
# build/ half made).
exec 9>.gen.lock
flock 9
if [ -f build/.complete ] && [ -z "$(find proto proto-variants gen.sh -newer build/.complete -print -quit)" ]; then
  echo "gen.sh: build/ is up to date"
  exit 0
fi
GRPC_PROTO=${GRPC_PROTO:-/usr/share/grpc-proto}
WKT=${WKT:-/usr/include}
PLUGIN=${GRPC_PYTHON_PLUGIN:-/usr/bin/grpc_python_plugin}
for need in "$GRPC_PROTO/grpc/health/v1/health.proto" "$WKT/google/protobuf/any.proto" "$PLUGIN"; do
  [ -e "$need" ] || { echo "gen.sh: $need is missing (apt-get install protobuf-compiler protobuf-compiler-grpc libprotobuf-dev grpc-proto)" >&2; exit 1; }
done
command -v protoc >/dev/null || { echo "gen.sh: protoc is missing (apt-get install protobuf-compiler)" >&2; exit 1; }

rm -rf build
mkdir -p build/protos/grpc_health/v1 build/protos/grpc_reflection/v1 build/protos/grpc_reflection/v1alpha build/gen
cp "$GRPC_PROTO/grpc/health/v1/health.proto" build/protos/grpc_health/v1/
cp "$GRPC_PROTO/grpc/reflection/v1/reflection.proto" build/protos/grpc_reflection/v1/
cp "$GRPC_PROTO/grpc/reflection/v1alpha/reflection.proto" build/protos/grpc_reflection/v1alpha/

gen() { # out_dir proto_root files...
  out=$1 root=$2; shift 2
  mkdir -p "$out"
  protoc -I "$root" -I build/protos -I proto -I "$WKT" \
    --plugin=protoc-gen-grpc_python="$PLUGIN" \
    --python_out="$out" --grpc_python_out="$out" "$@"
}
gen build/gen proto shop.proto google/rpc/status.proto google/rpc/error_details.proto
gen build/gen build/protos grpc_health/v1/health.proto grpc_reflection/v1/reflection.proto \
  grpc_reflection/v1alpha/reflection.proto
# the learner's other copies of shop.proto (INDEP_BUG=proto-int32-total, INDEP_STYLE=own-additions)
gen build/gen-int32 proto-variants/int32 shop.proto
gen build/gen-extended proto-variants/extended shop.proto
# regular packages, so that an installed grpcio-health-checking / grpcio-reflection /
# googleapis-common-protos cannot shadow ours (build/gen comes first on sys.path)
for d in grpc_health grpc_health/v1 grpc_reflection grpc_reflection/v1 grpc_reflection/v1alpha google/rpc; do
  : > "build/gen/$d/__init__.py"
done
touch build/.complete
echo "gen.sh: generated $(find build -name '*_pb2*.py' | wc -l) modules in build/"
