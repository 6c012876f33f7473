//! Code and descriptors for the `grpc` exercise, from the exercise's own contract,
//! `exercises/grpc/shop.proto`, without `protoc`: protox compiles it into a FileDescriptorSet,
//! tonic-prost-build generates the messages and the `shop.v1.Shop` server trait from that set.
//!
//! Into `OUT_DIR`:
//! - `shop.v1.rs`: the generated code (`include!`d by `src/grpc.rs`);
//! - `shop_descriptor.bin`: the encoded FileDescriptorSet that server reflection serves;
//! - `shop_descriptor_drifted.bin`: the same contract with the message `GetOrderRequest` renamed
//!   `OrderLookup` (same fields), which reflection serves instead under the planted bug
//!   `grpc-contract-drift`: every call still works, only the contract is broken.

use std::path::{Path, PathBuf};

use prost::Message;

const PROTO_DIR: &str = "../../exercises/grpc";
const PROTO: &str = "shop.proto";
/// The name the drifted contract changes, in both places it appears.
const GET_ORDER_REQUEST: &str = "GetOrderRequest";
const DRIFTED_NAME: &str = "OrderLookup";

fn main() {
    let proto = Path::new(PROTO_DIR).join(PROTO);
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    let descriptors = compile(&[PROTO_DIR]);
    write(
        &out.join("shop_descriptor.bin"),
        &descriptors.encode_to_vec(),
    );

    // The drifted copy: the same file, one message renamed, compiled from a folder of its own so
    // that it keeps the name `shop.proto`.
    let source = std::fs::read_to_string(&proto)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", proto.display()));
    assert!(
        source.contains(GET_ORDER_REQUEST),
        "{} no longer has `{GET_ORDER_REQUEST}`: update the drifted contract in build.rs",
        proto.display()
    );
    let drifted_dir = out.join("drifted");
    std::fs::create_dir_all(&drifted_dir).expect("cannot create OUT_DIR/drifted");
    write(
        &drifted_dir.join(PROTO),
        source.replace(GET_ORDER_REQUEST, DRIFTED_NAME).as_bytes(),
    );
    let drifted = compile(&[drifted_dir.as_path()]);
    write(
        &out.join("shop_descriptor_drifted.bin"),
        &drifted.encode_to_vec(),
    );

    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("cannot generate the gRPC code of {}: {e}", proto.display()));
}

fn compile(includes: &[impl AsRef<Path>]) -> tonic_prost_build::FileDescriptorSet {
    protox::compile([PROTO], includes).unwrap_or_else(|e| panic!("cannot compile {PROTO}: {e}"))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
