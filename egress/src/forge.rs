//! Routes to the forge of a git remote (`forge = true` in the route): the
//! forge's API and web hosts reach the same repositories git-gate guards, so
//! such a route is read-only unless it says `allow_writes = true`, and git's
//! push service is refused on it whatever it says.
//!
//! - Read-only (`forge = true`): `GET`, `HEAD`, `OPTIONS`, and the one `POST`
//!   `git clone` and `git fetch` send over smart HTTP: a path whose last
//!   segment is `git-upload-pack`, no query, `Content-Type:
//!   application/x-git-upload-pack-request`.
//! - `allow_writes = true`: the route's listed methods on its listed paths.
//! - Always refused: git's receive-pack (`POST …/git-receive-pack`, `GET
//!   …/info/refs?service=git-receive-pack`, a receive-pack request body):
//!   pushes go through git-gate only.

use http::Method;

use crate::path::percent_decode;

/// What a forge route may do without `allow_writes`.
pub const READ_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

const UPLOAD_PACK: &str = "git-upload-pack";
const RECEIVE_PACK: &str = "git-receive-pack";
const UPLOAD_PACK_REQUEST: &str = "application/x-git-upload-pack-request";
const RECEIVE_PACK_MIME: &str = "application/x-git-receive-pack";

/// What egress needs to know of a request on a forge route.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// The path without its query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

impl Request<'_> {
    /// A read method (`GET`, `HEAD`, `OPTIONS`).
    pub fn is_read(&self) -> bool {
        READ_METHODS.contains(&self.method.as_str())
    }

    /// Any part of git's push service (refused on every forge route): a path
    /// segment `git-receive-pack`, the service named in the query, or a
    /// receive-pack request body; in any case, raw or percent-encoded.
    pub fn is_receive_pack(&self) -> bool {
        let path = percent_decode(self.path.as_bytes());
        let in_path = path
            .split(|b| *b == b'/')
            .any(|seg| seg.eq_ignore_ascii_case(RECEIVE_PACK.as_bytes()));
        let in_query = self.query.is_some_and(|q| {
            String::from_utf8_lossy(&percent_decode(q.as_bytes()))
                .to_ascii_lowercase()
                .contains(RECEIVE_PACK)
        });
        let body = self
            .content_type
            .is_some_and(|c| c.trim().to_ascii_lowercase().starts_with(RECEIVE_PACK_MIME));
        in_path || in_query || body
    }

    /// The `POST` of `git clone` / `git fetch` over smart HTTP.
    pub fn is_upload_pack_post(&self) -> bool {
        let mime = self
            .content_type
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        self.method == Method::POST
            && self.query.is_none()
            && self.path.rsplit('/').next() == Some(UPLOAD_PACK)
            && mime.as_deref() == Some(UPLOAD_PACK_REQUEST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        ct: Option<&'a str>,
    ) -> Request<'a> {
        Request {
            method,
            path,
            query,
            content_type: ct,
        }
    }

    #[test]
    fn receive_pack_in_every_spelling() {
        let post = Method::POST;
        let get = Method::GET;
        for (m, p, q, ct) in [
            (&post, "/me/app.git/git-receive-pack", None, None),
            (&post, "/me/app.git/GIT-RECEIVE-PACK", None, None),
            (&post, "/me/app.git/git-receive-pack/", None, None),
            (&post, "/me/app.git/git%2Dreceive-pack", None, None),
            (
                &get,
                "/me/app.git/info/refs",
                Some("service=git-receive-pack"),
                None,
            ),
            (
                &get,
                "/me/app.git/info/refs",
                Some("service=git%2dreceive%2Dpack"),
                None,
            ),
            (
                &post,
                "/me/app.git/x",
                None,
                Some("application/x-git-receive-pack-request"),
            ),
        ] {
            assert!(req(m, p, q, ct).is_receive_pack(), "{m} {p} {q:?} {ct:?}");
        }
        assert!(!req(
            &get,
            "/me/app.git/info/refs",
            Some("service=git-upload-pack"),
            None
        )
        .is_receive_pack());
    }

    #[test]
    fn upload_pack_post_is_exactly_what_git_sends() {
        let post = Method::POST;
        let ct = Some("application/x-git-upload-pack-request");
        assert!(req(&post, "/me/app.git/git-upload-pack", None, ct).is_upload_pack_post());
        assert!(req(&post, "/me/app/git-upload-pack", None, ct).is_upload_pack_post());
        // Not git's request: another method, a query, another body, another path.
        assert!(!req(&Method::PUT, "/me/app.git/git-upload-pack", None, ct).is_upload_pack_post());
        assert!(!req(&post, "/me/app.git/git-upload-pack", Some("a=b"), ct).is_upload_pack_post());
        assert!(!req(&post, "/me/app.git/git-upload-pack", None, None).is_upload_pack_post());
        assert!(!req(
            &post,
            "/me/app.git/git-upload-pack",
            None,
            Some("application/json")
        )
        .is_upload_pack_post());
        assert!(!req(&post, "/me/app.git/git-upload-pack/x", None, ct).is_upload_pack_post());
        assert!(!req(&post, "/me/app.git/issues", None, ct).is_upload_pack_post());
    }
}
