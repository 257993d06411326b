use std::process::ExitCode;

fn main() -> ExitCode {
    // Exactly one TLS crypto provider in the tree (ring); make it the
    // process default before anything opens a TLS connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    authgate::cli::main()
}
