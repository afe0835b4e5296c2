//! Manifest parsing and signature checking must never panic; a manifest
//! that parses must survive a serialize/parse round trip unchanged.
#![no_main]

use std::sync::OnceLock;

use backstop_core::crypto::{self, KeyAlgorithm, VerifyingKey};
use backstop_core::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let k =
            crypto::generate_signing_key("fuzz <fuzz@example.invalid>", KeyAlgorithm::Curve25519)
                .unwrap();
        VerifyingKey::from_armored(&k.public_armored).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        let again = Manifest::parse(&m.to_bytes()).expect("a parsed manifest re-parses");
        assert_eq!(again, m);
    }
    // The same bytes as a detached signature over a fixed manifest.
    let _ = crypto::verify_manifest(b"{}", data, std::slice::from_ref(key()));
});
