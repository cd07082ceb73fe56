//! `tempcreds-sidecar`: the credential sidecar.

fn main() {
    println!("tempcreds-sidecar {}", env!("CARGO_PKG_VERSION"));
}
