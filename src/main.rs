use std::process::ExitCode;

/// mimalloc instead of the system allocator: a request allocates and frees
/// many small objects (headers, JSON, cached answers cloned out), which
/// glibc's malloc serves markedly slower under load (see the README's
/// performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Exactly one TLS crypto provider in the tree (ring); make it the
    // process default before anything opens a TLS connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    authgate::cli::main()
}
