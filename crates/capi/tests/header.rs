//! ffi/latentmas.h is what cbindgen generates from crates/capi/src (crates/capi/cbindgen.toml): this test
//! fails when the committed header differs. `LATENTMAS_BLESS_HEADER=1` writes the generated header instead.

use std::path::Path;

#[test]
fn the_committed_header_is_the_generated_one() {
    let krate = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(krate.join("cbindgen.toml")).expect("crates/capi/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(krate)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header from crates/capi/src");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = krate.join("../../ffi/latentmas.h");
    if std::env::var_os("LATENTMAS_BLESS_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed.lines().zip(generated.lines()).position(|(a, b)| a != b);
        panic!(
            "ffi/latentmas.h is not what crates/capi/src generates (first difference at line {}); regenerate it \
             with `LATENTMAS_BLESS_HEADER=1 cargo test --release -p latentmas-capi --test header` and commit it",
            line.map_or(committed.lines().count().min(generated.lines().count()) + 1, |l| l + 1)
        );
    }
    assert!(generated.contains("LM_API int lm_run("), "every prototype carries LM_API");
}
