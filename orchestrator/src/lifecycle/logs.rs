//! `logs`: the audit trail from the state dir, and log lines made readable.

use std::io::Write;

use contract::audit::AuditRecord;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::backend::Role;
use crate::home::Home;
use crate::state::StateDir;

/// One log line made readable: JSON records become "time level message k=v".
pub fn humanize(line: &str) -> String {
    // Audit records (one per request, egress's contract type) first.
    if let Ok(record) = serde_json::from_str::<AuditRecord>(line) {
        return audit_line(&record);
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let mut fields: Vec<(String, serde_json::Value)> = Vec::new();
    let mut head = String::new();
    for key in ["timestamp", "time", "ts"] {
        if let Some(t) = map.get(key).and_then(|v| v.as_str()) {
            head.push_str(t);
            head.push(' ');
            break;
        }
    }
    if let Some(l) = map.get("level").and_then(|v| v.as_str()) {
        head.push_str(&format!("{l:<5} "));
    }
    let mut flat = serde_json::Map::new();
    for (k, v) in &map {
        if let (true, serde_json::Value::Object(inner)) = (k == "fields" || k == "span", v) {
            for (ik, iv) in inner {
                flat.insert(ik.clone(), iv.clone());
            }
        } else {
            flat.insert(k.clone(), v.clone());
        }
    }
    if let Some(m) = flat.get("message").and_then(|v| v.as_str()) {
        head.push_str(m);
    }
    for (k, v) in flat {
        if [
            "timestamp",
            "time",
            "ts",
            "level",
            "message",
            "target",
            "spans",
            "threadId",
        ]
        .contains(&k.as_str())
        {
            continue;
        }
        fields.push((k, v));
    }
    for (k, v) in fields {
        let v = match v {
            serde_json::Value::String(s) => s,
            v => v.to_string(),
        };
        head.push_str(&format!(" {k}={v}"));
    }
    head
}

/// One egress audit record as a sentence:
/// `TIME DENY  GET http://host:80/path -> 403 kind=route (0 B up, 0 B down, 1 ms)`.
pub(super) fn audit_line(r: &AuditRecord) -> String {
    let status = r.status.map(|s| s.to_string()).unwrap_or_default();
    let mut line = format!(
        "{} {:<5} {} {}://{}:{}{} -> {status}",
        r.time,
        r.decision.as_str().to_ascii_uppercase(),
        r.method,
        r.scheme,
        r.host,
        r.port,
        r.path,
    );
    if let Some(route) = &r.route {
        line.push_str(&format!(" route={route}"));
    }
    if let Some(kind) = r.kind {
        line.push_str(&format!(" kind={}", kind.as_str()));
    }
    if let Some(rule) = &r.rule {
        line.push_str(&format!(" rule={rule}"));
    }
    line.push_str(&format!(
        " ({} B up, {} B down, {} ms)",
        r.bytes_up, r.bytes_down, r.duration_ms
    ));
    line
}

/// `logs ID [--sidecar ROLE] [--follow]`: the audit trail by default, read
/// from the bottle's state dir (so also after `stop` and after the bottle
/// is removed); a sidecar's container log with `--sidecar`. Bottle-written
/// text is printed escaped.
pub async fn logs(
    home: &Home,
    id: &str,
    sidecar: Option<&str>,
    follow: bool,
) -> Result<i32, Error> {
    let role = match sidecar {
        None => None,
        Some(s) => Some(Role::parse(s).ok_or_else(|| Error::Invalid {
            what: format!("unknown role `{s}` (agent, egress, cred-proxy, git-gate, supervise)"),
        })?),
    };
    let state = StateDir::open(&home.root, id);
    if let (None, Ok(state)) = (role, &state) {
        // A bottle created before the audit log moved to the state dir has
        // it only in egress's container log.
        if state.path.join(crate::state::AUDIT_DIR).is_dir() {
            return audit_log(home, state, id, follow).await;
        }
    }
    let role = role.unwrap_or(Role::Egress);
    let backend = connect(home).await?;
    if backend.container_running(id, role).await?.is_none() {
        return Err(match state {
            Ok(_) => Error::NotRunning { id: id.to_string() },
            Err(e) => e,
        });
    }
    let mut stdout = std::io::stdout();
    backend
        .stream_logs(id, role, follow, |l| {
            let _ = writeln!(stdout, "{}", crate::terminal::escape(&humanize(l)));
        })
        .await?;
    Ok(0)
}

/// Prints the audit log's files, oldest first; with `follow`, then what is
/// appended (across rotations) until egress stops or Ctrl-C.
pub(super) async fn audit_log(
    home: &Home,
    state: &StateDir,
    id: &str,
    follow: bool,
) -> Result<i32, Error> {
    use std::os::unix::fs::MetadataExt;
    let mut stdout = std::io::stdout();
    let mut print = |text: &str| {
        for l in text.lines().filter(|l| !l.is_empty()) {
            let _ = writeln!(stdout, "{}", crate::terminal::escape(&humanize(l)));
        }
        let _ = stdout.flush();
    };
    let files = state.audit_files();
    let current = state
        .path
        .join(crate::state::AUDIT_DIR)
        .join(crate::plan::AUDIT_FILE);
    let mut offset = 0u64;
    for f in &files {
        let bytes = read_audit_file(f)?;
        if *f == current {
            offset = bytes.len() as u64;
        }
        print(&String::from_utf8_lossy(&bytes));
    }
    if !follow {
        return Ok(0);
    }
    let backend = connect(home).await?;
    let cancel = CancellationToken::new();
    let _signals = cancel_on_signals(cancel.clone());
    let mut partial = Vec::new();
    let mut ino = std::fs::symlink_metadata(&current).map(|m| m.ino()).ok();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(0),
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
        let now_ino = std::fs::symlink_metadata(&current).map(|m| m.ino()).ok();
        let bytes = read_audit_file(&current).unwrap_or_default();
        if now_ino != ino || (bytes.len() as u64) < offset {
            // Rotated: the file holds only what came after.
            offset = 0;
            ino = now_ino;
        }
        partial.extend_from_slice(&bytes[offset as usize..]);
        offset = bytes.len() as u64;
        // Only whole lines; the rest waits for its newline.
        if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
            let whole: Vec<u8> = partial.drain(..=end).collect();
            print(&String::from_utf8_lossy(&whole));
        }
        if backend.container_running(id, Role::Egress).await? != Some(true) {
            return Ok(0);
        }
    }
}

/// One audit file, never through a symlink (egress writes that directory).
pub(super) fn read_audit_file(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).map_err(io)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_logs_read_like_sentences() {
        let l = r#"{"timestamp":"T","level":"INFO","fields":{"message":"request","host":"api.example.test","decision":"allow"},"target":"egress"}"#;
        assert_eq!(
            humanize(l),
            "T INFO  request decision=allow host=api.example.test"
        );
        assert_eq!(humanize("plain"), "plain");
        let audit = r#"{"time":"T","bottle":"b","decision":"deny","kind":"route","method":"GET","scheme":"http","host":"x.test","port":80,"path":"/","status":403,"bytes_up":0,"bytes_down":0,"duration_ms":1}"#;
        assert_eq!(
            humanize(audit),
            "T DENY  GET http://x.test:80/ -> 403 kind=route (0 B up, 0 B down, 1 ms)"
        );
    }
}
