//! Generates the gRPC code with a vendored `protoc`: build machines have none.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/ephemera.proto", "proto/raft.proto"], &["proto"])?;
    Ok(())
}
