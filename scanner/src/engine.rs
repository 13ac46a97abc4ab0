//! The scanning engine: keyword prefilter, rule regexes around keyword hits,
//! entropy, allowlists; known secrets; optional decoding of encoded blobs.

use std::io::Read;

use crate::decode;
use crate::finding::{fingerprint, redact, shannon_entropy, Finding};
use crate::known::{self, KnownSecrets};
use crate::rules::{Candidate, Rule, Rules};
use crate::text;

/// Inputs longer than this are scanned in overlapping windows so the
/// per-scan working memory stays bounded.
pub const WINDOW: usize = 8 << 20;
/// Overlap between windows: the longest secret that is still found when it
/// straddles a window boundary.
pub const OVERLAP: usize = 256 << 10;
/// Nesting depth of encodings that are decoded (base64 of hex of …).
const MAX_DECODE_DEPTH: u8 = 3;
/// Extra bytes around a keyword window, so context just outside a rule's
/// longest possible match (a preceding key name) still counts.
const WINDOW_SLACK: usize = 64;

#[derive(Clone, Copy, Debug, Default)]
pub struct ScanOptions {
    /// Also look inside base64, base64url, hex and percent-encoded blobs,
    /// and through JSON string escapes, HTML character references and UTF-16,
    /// nested up to a bounded depth.
    pub decode: bool,
}

/// A rule set, known secrets and options. Send + Sync; share via Arc.
#[derive(Clone, Debug)]
pub struct Scanner {
    rules: Rules,
    known: KnownSecrets,
    opts: ScanOptions,
}

/// Where the scanned bytes come from, for path rules and allowlists.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ctx<'a> {
    pub path: Option<&'a str>,
    pub commit: Option<&'a str>,
}

impl Scanner {
    pub fn new(rules: Rules, known: KnownSecrets, opts: ScanOptions) -> Scanner {
        Scanner { rules, known, opts }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn options(&self) -> ScanOptions {
        self.opts
    }

    /// Scans bytes that have no file name.
    pub fn scan(&self, data: &[u8]) -> Vec<Finding> {
        self.scan_ctx(data, Ctx::default())
    }

    /// Scans the contents of file `path`: applies path rules and allowlists.
    pub fn scan_named(&self, path: &str, data: &[u8]) -> Vec<Finding> {
        self.scan_ctx(
            data,
            Ctx {
                path: Some(path),
                commit: None,
            },
        )
    }

    /// Scans a stream in overlapping windows: memory stays around
    /// `WINDOW + OVERLAP` bytes whatever the input size.
    pub fn scan_reader<R: Read>(
        &self,
        path: Option<&str>,
        mut reader: R,
    ) -> std::io::Result<Vec<Finding>> {
        let ctx = Ctx { path, commit: None };
        if path.is_some_and(|p| self.rules.path_allowed(p)) {
            return Ok(Vec::new());
        }
        let mut out = self.path_findings(ctx);
        let mut buf: Vec<u8> = Vec::with_capacity(WINDOW + OVERLAP);
        let mut base = 0usize; // absolute offset of buf[0]
        let mut lines = LineState::default();
        loop {
            let want = WINDOW + OVERLAP;
            let mut eof = false;
            while buf.len() < want {
                let old = buf.len();
                buf.resize(want, 0);
                let n = reader.read(&mut buf[old..])?;
                buf.truncate(old + n);
                if n == 0 {
                    eof = true;
                    break;
                }
            }
            let keep_before = if eof { usize::MAX } else { WINDOW };
            let mut found = self.scan_window(&buf, ctx, keep_before);
            lines.fill(&buf, base, &mut found);
            out.extend(found);
            if eof {
                break;
            }
            lines.advance(&buf[..WINDOW], base);
            buf.drain(..WINDOW);
            base += WINDOW;
        }
        self.dedup(&mut out);
        Ok(out)
    }

    pub(crate) fn scan_ctx(&self, data: &[u8], ctx: Ctx<'_>) -> Vec<Finding> {
        if ctx.path.is_some_and(|p| self.rules.path_allowed(p)) {
            return Vec::new();
        }
        let mut out = self.path_findings(ctx);
        let mut lines = LineState::default();
        let mut base = 0;
        loop {
            let end = (base + WINDOW + OVERLAP).min(data.len());
            let last = end == data.len();
            let window = &data[base..end];
            let mut found = self.scan_window(window, ctx, if last { usize::MAX } else { WINDOW });
            lines.fill(window, base, &mut found);
            out.extend(found);
            if last {
                break;
            }
            lines.advance(&data[base..base + WINDOW], base);
            base += WINDOW;
        }
        self.dedup(&mut out);
        out
    }

    /// Sorts by position, drops duplicates from overlapping windows, and
    /// drops a catch-all rule's finding where a specific rule found the same bytes.
    fn dedup(&self, out: &mut Vec<Finding>) {
        out.sort_by(|a, b| {
            (a.start, a.end, &a.rule_id, &a.fingerprint).cmp(&(
                b.start,
                b.end,
                &b.rule_id,
                &b.fingerprint,
            ))
        });
        out.dedup_by(|a, b| {
            a.start == b.start
                && a.end == b.end
                && a.rule_id == b.rule_id
                && a.fingerprint == b.fingerprint
        });
        let generic = &self.rules.inner.generic_ids;
        if generic.is_empty() || out.len() < 2 {
            return;
        }
        let specific: Vec<(usize, usize)> = out
            .iter()
            .filter(|f| !generic.contains(&f.rule_id))
            .map(|f| (f.start, f.end))
            .collect();
        out.retain(|f| {
            !generic.contains(&f.rule_id)
                || !specific
                    .iter()
                    .any(|&(s, e)| s < f.end.max(f.start + 1) && f.start < e.max(s + 1))
        });
    }

    /// Findings of rules that match the file name alone.
    fn path_findings(&self, ctx: Ctx<'_>) -> Vec<Finding> {
        let Some(path) = ctx.path else {
            return Vec::new();
        };
        let inner = &self.rules.inner;
        inner
            .path_only
            .iter()
            .map(|&i| &inner.rules[i as usize])
            .filter(|r| {
                !r.skip_report && r.path.as_ref().is_some_and(|p| p.is_match(path.as_bytes()))
            })
            .filter(|r| {
                let cand = Candidate {
                    secret: b"",
                    matched: path.as_bytes(),
                    data: b"",
                    range: (0, 0),
                    path: Some(path),
                    commit: ctx.commit,
                };
                !inner
                    .allowlists
                    .iter()
                    .chain(&r.allowlists)
                    .any(|a| a.allows(&cand))
            })
            .map(|r| Finding {
                rule_id: r.id.clone(),
                description: r.description.clone(),
                start: 0,
                end: 0,
                line: 1,
                column: 1,
                redacted: String::new(),
                fingerprint: fingerprint(&r.id, path.as_bytes()),
            })
            .collect()
    }

    /// Findings in one window with offsets relative to it (lines not filled),
    /// keeping only those that start before `keep_before`.
    fn scan_window(&self, window: &[u8], ctx: Ctx<'_>, keep_before: usize) -> Vec<Finding> {
        let mut out = Vec::new();
        self.scan_fragment(window, ctx, 0, &mut out);
        out.retain(|f| f.start < keep_before);
        out
    }

    fn scan_fragment(&self, data: &[u8], ctx: Ctx<'_>, depth: u8, out: &mut Vec<Finding>) {
        self.scan_rules(data, ctx, out);
        self.scan_known(data, out);
        if self.opts.decode && depth < MAX_DECODE_DEPTH {
            for blob in decode::blobs(data) {
                let mut inner = Vec::new();
                self.scan_fragment(&blob.decoded, ctx, depth + 1, &mut inner);
                for mut f in inner {
                    f.start = blob.start;
                    f.end = blob.end;
                    if !f.description.contains("(found ") {
                        f.description =
                            format!("{} (found {}-encoded)", f.description, blob.encoding.name());
                    }
                    out.push(f);
                }
            }
            for view in text::views(data) {
                let mut inner = Vec::new();
                self.scan_fragment(&view.text, ctx, depth + 1, &mut inner);
                for mut f in inner {
                    (f.start, f.end) = view.original(f.start, f.end);
                    if !f.description.contains("(found ") {
                        f.description =
                            format!("{} (found {})", f.description, view.encoding.name());
                    }
                    out.push(f);
                }
            }
        }
    }

    fn scan_known(&self, data: &[u8], out: &mut Vec<Finding>) {
        let inner = &self.known.inner;
        let Some(ac) = &inner.ac else { return };
        for m in ac.find_iter(data) {
            let (idx, enc) = inner.variants[m.pattern().as_usize()];
            let k = &inner.secrets[idx];
            out.push(Finding {
                rule_id: known::RULE_ID.to_string(),
                description: if enc == "raw" {
                    "Known secret of this bottle (token or canary)".to_string()
                } else {
                    format!("Known secret of this bottle (token or canary), {enc}-encoded")
                },
                start: m.start(),
                end: m.end(),
                line: 0,
                column: 0,
                redacted: k.redacted.clone(),
                fingerprint: k.fingerprint.clone(),
            });
        }
    }

    fn scan_rules(&self, data: &[u8], ctx: Ctx<'_>, out: &mut Vec<Finding>) {
        let inner = &self.rules.inner;
        let applies = |r: &Rule| match &r.path {
            None => true,
            Some(p) => ctx.path.is_some_and(|path| p.is_match(path.as_bytes())),
        };
        // Per rule: the window being grown, then the closed windows.
        let mut current: Vec<Option<(usize, usize)>> = vec![None; inner.rules.len()];
        let mut windows: Vec<(u32, usize, usize)> = Vec::new();
        if let Some(ac) = &inner.keywords {
            for m in ac.find_overlapping_iter(data) {
                for &ri in &inner.keyword_rules[m.pattern().as_usize()] {
                    let rule = &inner.rules[ri as usize];
                    let (s, e) = match rule.window {
                        Some(len) => (
                            m.end().saturating_sub(len + WINDOW_SLACK),
                            (m.start() + len + WINDOW_SLACK).min(data.len()),
                        ),
                        None => (0, data.len()),
                    };
                    let cur = &mut current[ri as usize];
                    match cur {
                        Some((cs, ce)) if s <= *ce => {
                            *cs = (*cs).min(s);
                            *ce = (*ce).max(e);
                        }
                        Some((cs, ce)) => {
                            windows.push((ri, *cs, *ce));
                            *cur = Some((s, e));
                        }
                        None => *cur = Some((s, e)),
                    }
                }
            }
        }
        for (ri, cur) in current.into_iter().enumerate() {
            if let Some((s, e)) = cur {
                windows.push((ri as u32, s, e));
            }
        }
        for &ri in &inner.always {
            windows.push((ri, 0, data.len()));
        }
        windows.sort_unstable();
        for (ri, s, e) in windows {
            let rule = &inner.rules[ri as usize];
            if rule.skip_report || !applies(rule) {
                continue;
            }
            self.run_rule(rule, data, s, e, ctx, out);
        }
    }

    fn run_rule(
        &self,
        rule: &Rule,
        data: &[u8],
        start: usize,
        end: usize,
        ctx: Ctx<'_>,
        out: &mut Vec<Finding>,
    ) {
        let Some(re) = rule.regex.as_ref().map(|r| r.get()) else {
            return;
        };
        let hay = &data[..end];
        let mut pos = start;
        let mut locs = re.capture_locations();
        while pos <= hay.len() {
            let Some(m) = re.captures_read_at(&mut locs, hay, pos) else {
                break;
            };
            pos = if m.end() > m.start() {
                m.end()
            } else {
                m.end() + 1
            };
            let (ss, se) = secret_span(rule, &locs).unwrap_or((m.start(), m.end()));
            let secret = &data[ss..se];
            if secret.is_empty() {
                continue;
            }
            if rule.entropy > 0.0 && shannon_entropy(secret) <= rule.entropy {
                continue;
            }
            let cand = Candidate {
                secret,
                matched: m.as_bytes(),
                data,
                range: (m.start(), m.end()),
                path: ctx.path,
                commit: ctx.commit,
            };
            let inner = &self.rules.inner;
            if inner
                .allowlists
                .iter()
                .chain(&rule.allowlists)
                .any(|a| a.allows(&cand))
            {
                continue;
            }
            out.push(Finding {
                rule_id: rule.id.clone(),
                description: rule.description.clone(),
                start: ss,
                end: se,
                line: 0,
                column: 0,
                redacted: redact(secret),
                fingerprint: fingerprint(&rule.id, secret),
            });
        }
    }
}

/// gitleaks' choice of the secret: `secretGroup` when set, else the first
/// non-empty capture group, else the whole match.
fn secret_span(rule: &Rule, locs: &regex::bytes::CaptureLocations) -> Option<(usize, usize)> {
    if rule.secret_group > 0 {
        return locs.get(rule.secret_group);
    }
    (1..locs.len())
        .filter_map(|g| locs.get(g))
        .find(|(s, e)| e > s)
}

/// Line numbers across windows: the line number and line start offset at
/// the beginning of the current window.
#[derive(Default)]
struct LineState {
    newlines_before: usize,
    line_start: usize,
}

impl LineState {
    /// Converts window-relative offsets to absolute ones and fills line/column.
    fn fill(&self, window: &[u8], base: usize, found: &mut [Finding]) {
        found.sort_by_key(|f| f.start);
        let mut pos = 0;
        let mut newlines = self.newlines_before;
        let mut line_start = self.line_start;
        for f in found.iter_mut() {
            let at = f.start.min(window.len());
            for (i, &b) in window[pos..at].iter().enumerate() {
                if b == b'\n' {
                    newlines += 1;
                    line_start = base + pos + i + 1;
                }
            }
            pos = pos.max(at);
            f.start += base;
            f.end += base;
            f.line = newlines + 1;
            f.column = f.start - line_start + 1;
        }
    }

    fn advance(&mut self, consumed: &[u8], base: usize) {
        for (i, &b) in consumed.iter().enumerate() {
            if b == b'\n' {
                self.newlines_before += 1;
                self.line_start = base + i + 1;
            }
        }
    }
}
