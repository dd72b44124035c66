//! Compiles `proto/*.proto` with protox (pure Rust: no `protoc` to install).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/raft.proto", "proto/admin.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
