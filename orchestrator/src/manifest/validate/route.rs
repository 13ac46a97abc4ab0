//! Egress routes: host and ports, the credential cred-proxy injects
//! (`auth`), path and method matches, and DLP detectors.

use super::super::raw;
use super::super::{
    did_you_mean, parse, Auth, Detector, Dlp, HostPattern, Match, Origin, PathMatch, Route,
    SchemeName,
};
use super::{host_pattern, is_env_name, names, METHODS};
use crate::error::Problem;

pub(super) fn route(o: Origin, r: raw::RawRoute, problems: &mut Vec<Problem>) -> Option<Route> {
    let before = problems.len();
    let host = host_pattern(&r.host)
        .map_err(|m| problems.push(o.problem("host", m)))
        .ok();
    let ports = ports(&o, r.ports, problems);
    let tunnel = r.tunnel.unwrap_or(false);
    let auth = r.auth.and_then(|a| auth(&o, a, problems));
    check_exposure(&o, host.as_ref(), tunnel, auth.is_some(), problems);
    let mut matches = Vec::new();
    for (j, m) in r.matches.unwrap_or_default().into_iter().enumerate() {
        matches.push(route_match(&o, j, m, problems));
    }
    if tunnel && !matches.is_empty() {
        problems.push(o.problem("matches", "a tunnel route is not intercepted: paths and methods cannot be checked, remove `matches`"));
    }
    let mut dlp = Dlp::default();
    if let Some(d) = r.dlp {
        if tunnel {
            problems.push(o.problem(
                "dlp",
                "a tunnel route is not intercepted: no DLP can run on it, remove `dlp`",
            ));
        }
        dlp_settings(&o, d, &mut dlp, problems);
    }
    if problems.len() != before {
        return None;
    }
    Some(Route {
        host: host?,
        ports,
        auth,
        matches,
        dlp,
        tunnel,
        upgrade: r.upgrade.unwrap_or(false),
        template: None,
        origin: o,
    })
}

fn ports(o: &Origin, ports: Option<Vec<i64>>, problems: &mut Vec<Problem>) -> Vec<u16> {
    match ports {
        None => vec![443],
        Some(v) if v.is_empty() => {
            problems.push(o.problem(
                "ports",
                "expected a list of ports 1-65535, found an empty list (omit it for [443])",
            ));
            vec![]
        }
        Some(v) => v
            .iter()
            .enumerate()
            .filter_map(|(j, p)| match u16::try_from(*p) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    problems.push(o.problem(
                        &format!("ports[{j}]"),
                        format!("expected a port 1-65535, found {p}"),
                    ));
                    None
                }
            })
            .collect(),
    }
}

fn auth(o: &Origin, a: raw::RawAuth, problems: &mut Vec<Problem>) -> Option<Auth> {
    let before = problems.len();
    // cred-proxy's own parser decides which schemes exist.
    let scheme = SchemeName::parse(&a.scheme);
    if scheme.is_none() {
        let all = names(&SchemeName::ALL, SchemeName::as_str);
        let hint = did_you_mean(&a.scheme, &all)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        problems.push(o.problem(
            "auth.scheme",
            format!(
                "expected one of {}, found {:?}{hint}",
                all.join(", "),
                a.scheme
            ),
        ));
    }
    if !is_env_name(&a.token_ref) {
        problems.push(o.problem(
            "auth.token_ref",
            format!(
                "expected the NAME of a host environment variable, found {:?}",
                a.token_ref
            ),
        ));
    }
    match (&a.header, a.scheme.as_str()) {
        (None, "header") => problems.push(o.problem(
            "auth.header",
            "required key is missing: `scheme: header` needs the header name",
        )),
        (Some(h), "header")
            if !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') || h.is_empty() =>
        {
            problems.push(o.problem(
                "auth.header",
                format!("expected an HTTP header name, found {h:?}"),
            ))
        }
        (Some(_), s) if s != "header" => problems.push(o.problem(
            "auth.header",
            format!("`header` is only used with `scheme: header`, found scheme {s:?}"),
        )),
        _ => {}
    }
    match (&a.template, a.scheme.as_str()) {
        (None, "header") => problems.push(o.problem(
            "auth.template",
            "required key is missing: `scheme: header` needs a value template containing `{token}`",
        )),
        (Some(t), "header") if !t.contains("{token}") || t.chars().any(|c| c.is_control()) => {
            problems.push(o.problem(
                "auth.template",
                format!("expected a header value containing `{{token}}`, found {t:?}"),
            ))
        }
        (Some(_), s) if s != "header" => problems.push(o.problem(
            "auth.template",
            format!("`template` is only used with `scheme: header`, found scheme {s:?}"),
        )),
        _ => {}
    }
    scheme
        .filter(|_| problems.len() == before)
        .map(|scheme| Auth {
            scheme,
            token_ref: a.token_ref,
            header: a.header,
            template: a.template,
        })
}

/// A credential goes only to a host named exactly and intercepted; a tunnel
/// needs one exact host to point at.
fn check_exposure(
    o: &Origin,
    host: Option<&HostPattern>,
    tunnel: bool,
    has_auth: bool,
    problems: &mut Vec<Problem>,
) {
    if let Some(h) = host {
        if h.is_wildcard() && has_auth {
            problems.push(o.problem(
                "auth",
                format!("a wildcard host ({h}) can never carry `auth`: name each host exactly"),
            ));
        }
        if h.is_wildcard() && tunnel {
            problems.push(o.problem(
                "tunnel",
                format!("a wildcard host ({h}) can never be a tunnel: name the host exactly"),
            ));
        }
    }
    if tunnel && has_auth {
        problems.push(o.problem(
            "tunnel",
            "a tunnel route is not intercepted, so it cannot carry `auth`",
        ));
    }
}

fn route_match(o: &Origin, j: usize, m: raw::RawMatch, problems: &mut Vec<Problem>) -> Match {
    let mo = format!("matches[{j}]");
    let mut paths = Vec::new();
    for (k, p) in m.paths.unwrap_or_default().into_iter().enumerate() {
        if let Some(p) = path_match(o, &mo, k, p, problems) {
            paths.push(p);
        }
    }
    let mut methods = Vec::new();
    for (k, mm) in m.methods.unwrap_or_default().into_iter().enumerate() {
        let up = mm.to_ascii_uppercase();
        if METHODS.contains(&up.as_str()) {
            if !methods.contains(&up) {
                methods.push(up);
            }
        } else {
            let hint = did_you_mean(&up, &METHODS)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            problems.push(o.problem(
                &format!("{mo}.methods[{k}]"),
                format!("expected one of {}, found {mm:?}{hint}", METHODS.join(", ")),
            ));
        }
    }
    Match {
        paths,
        methods,
        allow_writes: m.allow_writes.unwrap_or(false),
    }
}

fn path_match(
    o: &Origin,
    mo: &str,
    k: usize,
    p: raw::RawPath,
    problems: &mut Vec<Problem>,
) -> Option<PathMatch> {
    if p.kind == raw::PathKind::Exact {
        problems.push(o.problem(
            &format!("{mo}.paths[{k}].type"),
            "`exact` is not supported yet (egress matches path prefixes); use `type: prefix`",
        ));
    } else if !p.value.starts_with('/')
        || p.value.contains(['?', '#'])
        || p.value.contains(char::is_whitespace)
    {
        problems.push(o.problem(
            &format!("{mo}.paths[{k}].value"),
            format!(
                "expected a URL path starting with `/` (no query, no spaces), found {:?}",
                p.value
            ),
        ));
    } else if let Err(why) = contract::path::check_prefix(&p.value) {
        // The same check egress runs on its config: one rule, one place.
        problems.push(o.problem(
            &format!("{mo}.paths[{k}].value"),
            format!(
                "expected a URL path prefix egress can match, found {:?}: {why}",
                p.value
            ),
        ));
    } else {
        return Some(PathMatch {
            kind: p.kind,
            value: p.value,
        });
    }
    None
}

fn dlp_settings(o: &Origin, d: raw::RawDlp, dlp: &mut Dlp, problems: &mut Vec<Problem>) {
    let detector_names = names(&Detector::ALL, Detector::as_str);
    match d.outbound_detectors {
        None => {}
        Some(serde_yaml::Value::Bool(false)) => dlp.outbound_detectors.clear(),
        Some(serde_yaml::Value::Sequence(list)) => {
            dlp.outbound_detectors.clear();
            for (k, v) in list.iter().enumerate() {
                match v.as_str().and_then(Detector::parse) {
                    Some(d) => dlp.outbound_detectors.push(d),
                    _ => {
                        let found = v
                            .as_str()
                            .map(|s| format!("{s:?}"))
                            .unwrap_or_else(|| parse::describe(v));
                        let hint = v
                            .as_str()
                            .and_then(|s| did_you_mean(s, &detector_names))
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default();
                        problems.push(o.problem(
                            &format!("dlp.outbound_detectors[{k}]"),
                            format!(
                                "expected one of {}, found {found}{hint}",
                                detector_names.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        Some(other) => problems.push(o.problem(
            "dlp.outbound_detectors",
            format!(
                "expected a list of detectors ({}) or false, found {}",
                detector_names.join(", "),
                parse::describe(&other)
            ),
        )),
    }
    if let Some(m) = d.outbound_on_match {
        dlp.outbound_on_match = m;
    }
    match d.inbound_detectors {
        None | Some(serde_yaml::Value::Bool(false)) => {}
        Some(other) => problems.push(o.problem(
            "dlp.inbound_detectors",
            format!(
                "not supported yet: response scanning has not landed; expected `false`, found {}",
                parse::describe(&other)
            ),
        )),
    }
}
