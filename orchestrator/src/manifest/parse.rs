//! Markdown + YAML front matter into the raw types, with errors that name the
//! file, the key path, what was expected and what was found, and a "did you
//! mean" for misspelt keys.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::Problem;

/// Split `---\n<yaml>\n---\n<body>`. Returns (yaml, body, line of the yaml's
/// first line) or a problem when the file has no front matter.
pub fn split_front_matter(file: &Path, text: &str) -> Result<(String, String), Problem> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    if first.trim_end() != "---" {
        return Err(Problem {
            file: file.to_path_buf(),
            key: String::new(),
            message: "expected YAML front matter: the file must start with a `---` line, \
                      the settings, then a closing `---` line"
                .into(),
        });
    }
    let mut yaml = String::new();
    let mut closed = false;
    for line in lines.by_ref() {
        let t = line.trim_end();
        if t == "---" || t == "..." {
            closed = true;
            break;
        }
        yaml.push_str(line);
    }
    if !closed {
        return Err(Problem {
            file: file.to_path_buf(),
            key: String::new(),
            message: "front matter is not closed: expected a `---` line after the settings".into(),
        });
    }
    let body: String = lines.collect();
    Ok((yaml, body.trim().to_string()))
}

/// Deserialize front matter into `T`, mapping serde's errors to a [`Problem`].
pub fn parse_yaml<T: DeserializeOwned + Default>(file: &Path, yaml: &str) -> Result<T, Problem> {
    if yaml.trim().is_empty() {
        return Ok(T::default());
    }
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| Problem {
        file: file.to_path_buf(),
        key: e
            .location()
            // +1: the opening `---` line.
            .map(|l| format!("line {}", l.line() + 1))
            .unwrap_or_default(),
        message: format!("not valid YAML: {}", strip_location(&e.to_string())),
    })?;
    if value.is_null() {
        return Ok(T::default());
    }
    if !value.is_mapping() {
        return Err(Problem {
            file: file.to_path_buf(),
            key: String::new(),
            message: format!("expected a mapping of settings, found {}", describe(&value)),
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let (key, message) = explain(&path, &inner);
        Problem {
            file: file.to_path_buf(),
            key,
            message,
        }
    })
}

fn strip_location(s: &str) -> String {
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// A short description of a YAML value for "found ..." messages.
pub fn describe(v: &serde_yaml::Value) -> String {
    use serde_yaml::Value;
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

/// Turn serde's message into (key path, human message).
fn explain(path: &str, msg: &str) -> (String, String) {
    let path = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    if let Some(unknown) = between(msg, "unknown field `", "`") {
        let expected = expected_names(msg);
        let key = if path.is_empty() {
            unknown.to_string()
        } else {
            format!("{path}.{unknown}")
        };
        // serde_path_to_error may already have put the unknown key at the end.
        let key = if path.ends_with(unknown) {
            path.clone()
        } else {
            key
        };
        let mut m = format!("unknown key `{unknown}`");
        if let Some(best) = did_you_mean(unknown, &expected) {
            m.push_str(&format!("; did you mean `{best}`?"));
        }
        if !expected.is_empty() {
            m.push_str(&format!(" (expected one of: {})", expected.join(", ")));
        }
        return (key, m);
    }
    if let Some(unknown) = between(msg, "unknown variant `", "`") {
        let expected = expected_names(msg);
        let mut m = format!("unknown value `{unknown}`");
        if let Some(best) = did_you_mean(unknown, &expected) {
            m.push_str(&format!("; did you mean `{best}`?"));
        }
        m.push_str(&format!(" (expected one of: {})", expected.join(", ")));
        return (path, m);
    }
    if let Some(field) = between(msg, "missing field `", "`") {
        let key = if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return (key, "required key is missing".to_string());
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        // "string \"x\", expected a sequence"
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return (path, format!("expected {}, found {}", expected, found));
        }
    }
    (path, strip_location(msg))
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

fn expected_names(msg: &str) -> Vec<String> {
    let Some(i) = msg.find("expected ") else {
        return vec![];
    };
    let tail = &msg[i..];
    tail.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.to_string())
        .collect()
}

/// The closest candidate to `word`, if one is close enough to be a typo.
pub fn did_you_mean<S: AsRef<str>>(word: &str, candidates: &[S]) -> Option<String> {
    let lw = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| {
            let c = c.as_ref();
            (strsim::jaro_winkler(&lw, &c.to_ascii_lowercase()), c)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        assert_eq!(
            did_you_mean("egres", &["egress", "env", "git"]).as_deref(),
            Some("egress")
        );
        assert_eq!(did_you_mean("zzz", &["egress", "env"]), None);
    }

    #[test]
    fn front_matter_split() {
        let (y, b) = split_front_matter(Path::new("x.md"), "---\na: 1\n---\nhello\n").unwrap();
        assert_eq!(y, "a: 1\n");
        assert_eq!(b, "hello");
        assert!(split_front_matter(Path::new("x.md"), "hello").is_err());
        assert!(split_front_matter(Path::new("x.md"), "---\na: 1\n").is_err());
    }
}
