//! `tempcreds-webhook`: the mutating admission webhook.

fn main() {
    println!("tempcreds-webhook {}", env!("CARGO_PKG_VERSION"));
}
