//! Generates the gRPC code of `proto/dspex/v1/dspex.proto` without a system `protoc`: protox
//! compiles the .proto in pure Rust and tonic-prost-build turns the descriptors into code. The
//! file descriptor set is also written for the reflection service.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    // The proto lives at the workspace root; a packaged crate carries a copy beside it.
    let root = [manifest.join("../../proto"), manifest.join("proto")]
        .into_iter()
        .find(|p| p.join("dspex/v1/dspex.proto").exists())
        .ok_or("proto/dspex/v1/dspex.proto not found")?;
    let file = root.join("dspex/v1/dspex.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("dspex_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
