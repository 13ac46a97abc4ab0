//! Embeds every `images/*.Dockerfile` present at build time, so the binary can
//! build images without the source tree (missing ones are reported at run time).
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let images = Path::new(&manifest_dir).join("..").join("images");
    println!("cargo:rerun-if-changed={}", images.display());
    let mut names: Vec<(String, String)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&images) {
        for ent in rd.flatten() {
            let p = ent.path();
            let Some(file) = p.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            if let Some(name) = file.strip_suffix(".Dockerfile") {
                println!("cargo:rerun-if-changed={}", p.display());
                let abs = p.canonicalize().unwrap_or(p.clone());
                names.push((name.to_string(), abs.display().to_string()));
            }
        }
    }
    names.sort();
    let mut out = String::from("/// (image name, Dockerfile text) for every images/*.Dockerfile at build time.\npub static EMBEDDED_DOCKERFILES: &[(&str, &str)] = &[\n");
    for (name, path) in &names {
        writeln!(out, "    ({name:?}, include_str!({path:?})),").unwrap();
    }
    out.push_str("];\n");
    let dest =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("dockerfiles.rs");
    std::fs::write(dest, out).expect("write dockerfiles.rs");
}
