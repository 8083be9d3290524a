//! Compiles `proto/` without a system `protoc`: protox parses the files into a file
//! descriptor set, tonic-prost-build generates code from it, and the encoded set is
//! written to OUT_DIR for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with `env!`: cargo shares one build-script binary
    // between checkouts of the workspace in different directories (worktrees
    // with a copied target directory), and a path baked in at compile time
    // would make every checkout compile the first one's `.proto` files.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "chatmemory/v1/memory.proto",
        "chatmemory/jobs/v1/job.proto",
        "chatmemory/store/v1/store.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds ignores the descriptor-set path option, so write it ourselves.
    std::fs::write(out.join("chatmemory_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
