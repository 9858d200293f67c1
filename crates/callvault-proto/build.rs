//! Compiles `proto/callvault/v1/*.proto` with protox (pure Rust), so no system `protoc` is needed,
//! and writes the encoded descriptor set that tonic-reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTO_FILES: &[&str] = &[
    "callvault/v1/ingest.proto",
    "callvault/v1/query.proto",
    "callvault/v1/admin.proto",
    "callvault/v1/content.proto",
    "callvault/v1/audit.proto",
    "callvault/v1/cluster.proto",
    "callvault/v1/raft.proto",
    "callvault/v1/blob.proto",
    "callvault/v1/meta.proto",
    "callvault/v1/keys.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let descriptors = protox::compile(PROTO_FILES, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("callvault_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
