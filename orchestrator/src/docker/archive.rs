//! Tar archives built in memory for `upload_to_container`: every entry is
//! owned by the receiving component's user, so a non-root sidecar can read
//! its 0600 secrets (a bind mount of the operator's file would be unreadable).

use std::io::Read;

use crate::backend::FileSpec;

/// A tar holding `files` (and their parent directories, `dir_mode`) owned by `uid`.
/// Parent directories are entries too: upload into an existing directory whose
/// mode must not change (`/`, `/etc`), never through one.
pub fn tar_of(files: &[FileSpec], uid: u32, dir_mode: u32) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for f in files {
        let path = f.path.trim_start_matches('/');
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(dir_mode);
                h.set_uid(u64::from(uid));
                h.set_gid(u64::from(uid));
                h.set_size(0);
                h.set_mtime(0);
                builder.append_data(&mut h, format!("{acc}/"), std::io::empty())?;
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(f.mode);
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(uid));
        h.set_size(f.contents.len() as u64);
        h.set_mtime(0);
        builder.append_data(&mut h, path, f.contents.as_slice())?;
    }
    builder.into_inner()
}

/// The contents of the first regular file in a tar (what `download_from_container` returns).
pub fn first_file(tar_bytes: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut out = Vec::new();
            entry.read_to_end(&mut out)?;
            return Ok(Some(out));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_belong_to_the_component_user() {
        let files = vec![FileSpec {
            path: "keys/ca-key.pem".into(),
            contents: b"k".to_vec(),
            mode: 0o600,
        }];
        let tar_bytes = tar_of(&files, 10001, 0o700).unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.uid().unwrap(), 10001);
            seen.push((e.path().unwrap().display().to_string(), h.mode().unwrap()));
        }
        assert_eq!(
            seen,
            vec![
                ("keys/".to_string(), 0o700),
                ("keys/ca-key.pem".to_string(), 0o600)
            ]
        );
        assert_eq!(first_file(&tar_bytes).unwrap().unwrap(), b"k");
    }
}
