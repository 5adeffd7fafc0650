//! Repository strings (`--repo`, `ARC_REPOSITORY`): which storage a string
//! names. This module owns the URL forms and nothing else; connecting is
//! [`super::remote`]'s job.
//!
//! ```text
//! /srv/arc, ./s3:odd, relative/dir     a local directory
//! s3:http(s)://host[:port]/bucket[/prefix]   S3, path-style (restic's form)
//! sftp://[user@]host[:port]/path       SFTP (absolute path; `/~/dir` for the home directory)
//! webdav:http(s)://[user@]host[:port]/path   WebDAV
//! ```
//!
//! A string that starts with a scheme (`letters:` followed by `//` or a
//! known scheme's form) is never a local path: `s3:http://host/bucket`
//! used to create a directory named `s3:http:`. An unknown scheme is an
//! error naming the known ones; a local path with a colon is written with
//! a leading `./`. Passwords never go in a URL (they would show in `ps`
//! and shell history): a URL with one is refused, and every shown form of
//! a location leaves credentials out.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The schemes arc knows, for error messages.
pub const KNOWN_SCHEMES: &str = "s3:http(s)://host[:port]/bucket[/prefix], sftp://[user@]host[:port]/path, webdav:http(s)://host[:port]/path, or a local path";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 {
        /// `http(s)://host[:port]`
        endpoint: String,
        bucket: String,
        /// Without leading or trailing slashes; empty for the bucket's root.
        prefix: String,
    },
    Sftp {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        /// The directory on the server, as given (absolute, or relative to
        /// the login directory when it started with `/~/`).
        path: String,
    },
    WebDav {
        /// `http(s)://host[:port]`
        endpoint: String,
        user: Option<String>,
        /// Without leading or trailing slashes.
        path: String,
    },
}

fn bad(reason: impl Into<String>) -> Error {
    Error::InvalidArgument { what: "repository", reason: reason.into() }
}

/// `scheme:` at the start of `s`, if it has the shape of one: a letter,
/// then letters, digits, `+`, `-` or `.` (RFC 3986), then a colon. A
/// single letter is not taken for a scheme on its own (`c:` is no URL
/// scheme arc could know either, but the rule stays simple: any scheme
/// shape is a URL).
fn scheme_of(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic() || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return None;
    }
    Some((scheme, rest))
}

/// `host[:port]` and the path after it, from `//authority/path`.
struct Authority<'a> {
    user: Option<&'a str>,
    host: &'a str,
    port: Option<u16>,
    path: &'a str,
}

fn authority<'a>(url: &str, rest: &'a str) -> Result<Authority<'a>> {
    let rest = rest.strip_prefix("//").ok_or_else(|| bad(format!("{url}: expected // after the scheme")))?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (user, hostport) = match auth.rsplit_once('@') {
        Some((u, h)) => {
            if u.contains(':') {
                return Err(bad(format!(
                    "{}: a password does not go in the URL (it would show in the process list and shell history); {}",
                    redact(url),
                    where_secrets_go(url)
                )));
            }
            (Some(u).filter(|u| !u.is_empty()), h)
        }
        None => (None, auth),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad(format!("{url}: unclosed [ in the host")))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad(format!("{}: no host", redact(url))));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(format!("{}: port {p:?} is not a number between 1 and 65535", redact(url))))?,
        ),
    };
    Ok(Authority { user, host, port, path })
}

/// Where the secret of `url`'s kind of repository goes instead of the URL
/// (the variables [`super::remote`] reads).
fn where_secrets_go(url: &str) -> &'static str {
    match url.split_once(':').map(|(scheme, _)| scheme) {
        Some("s3") => "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use an AWS credentials file (AWS_PROFILE)",
        Some("webdav") => "set ARC_WEBDAV_PASSWORD",
        Some("sftp") => "SFTP logs in with an ssh key: ARC_SFTP_KEY names its file (or use ssh-agent, ~/.ssh/config)",
        _ => "use the environment variable or key file the backend documents",
    }
}

/// `url` with any `user:password@` reduced to `user@`, for messages about
/// a URL that failed to parse.
fn redact(url: &str) -> String {
    let Some(i) = url.find("//") else { return url.to_string() };
    let after = &url[i + 2..];
    let auth_end = after.find('/').unwrap_or(after.len());
    match after[..auth_end].rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}@{host}{}", &url[..i + 2], &after[auth_end..])
        }
        None => url.to_string(),
    }
}

/// `form` is the URL form of the scheme, named when the part after the
/// scheme is not an http(s) URL (`s3://host/bucket`, `s3:host/bucket`).
fn http_endpoint(url: &str, inner: &str, form: &str) -> Result<(String, Option<String>, String)> {
    let (scheme, rest) = scheme_of(inner)
        .ok_or_else(|| bad(format!("{}: expected http:// or https:// after the scheme ({form})", redact(url))))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad(format!("{}: expected http:// or https://, not {scheme}: ({form})", redact(url))));
    }
    let a = authority(url, rest)?;
    // HTTP would take these for a query string or a fragment, not part of
    // the bucket, prefix or path: `bucket?x` sent requests for the bucket's
    // listing ("corrupt config"), and a WebDAV `dav?x=1` made a directory of
    // that name before failing. What follows `?` may be a token: not shown
    // (a password, which may hold these characters, was refused above).
    if let Some(i) = url.find(['?', '#']) {
        return Err(bad(format!(
            "{}…: a query (?…) or fragment (#…) has no place in a repository URL ({form})",
            redact(&url[..i])
        )));
    }
    let host = if a.host.contains(':') { format!("[{}]", a.host) } else { a.host.to_string() };
    let endpoint = match a.port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    };
    Ok((endpoint, a.user.map(str::to_string), a.path.trim_matches('/').to_string()))
}

impl Location {
    /// What `s` names. `s` comes from the user; every error says what is
    /// wrong with it.
    pub fn parse(s: &str) -> Result<Location> {
        if s.is_empty() {
            return Err(bad("the repository string is empty"));
        }
        let Some((scheme, rest)) = scheme_of(s) else {
            return Ok(Location::Local(PathBuf::from(s)));
        };
        match scheme {
            "s3" => {
                let (endpoint, user, path) = http_endpoint(s, rest, "s3:http(s)://host[:port]/bucket[/prefix]")?;
                if user.is_some() {
                    return Err(bad(format!(
                        "{}: S3 credentials do not go in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or use an AWS credentials file",
                        redact(s)
                    )));
                }
                let (bucket, prefix) = match path.split_once('/') {
                    Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
                    None => (path.clone(), String::new()),
                };
                if bucket.is_empty() {
                    return Err(bad(format!("{s}: no bucket (expected s3:http(s)://host[:port]/bucket[/prefix])")));
                }
                Ok(Location::S3 { endpoint, bucket, prefix })
            }
            "sftp" => {
                let a = authority(s, rest)?;
                let path = a.path.trim_end_matches('/');
                if path.is_empty() {
                    return Err(bad(format!("{}: no directory (expected sftp://[user@]host[:port]/path)", redact(s))));
                }
                Ok(Location::Sftp {
                    user: a.user.map(str::to_string),
                    host: a.host.to_string(),
                    port: a.port,
                    path: path.to_string(),
                })
            }
            "webdav" => {
                let (endpoint, user, path) = http_endpoint(s, rest, "webdav:http(s)://[user@]host[:port]/path")?;
                Ok(Location::WebDav { endpoint, user, path })
            }
            "file" => match rest.strip_prefix("//") {
                Some(p) if p.starts_with('/') => Ok(Location::Local(PathBuf::from(p))),
                _ => Err(bad(format!("{s}: expected file:///absolute/path"))),
            },
            // Windows-style drive letters do not occur on the platforms
            // arc runs on; any other scheme is a mistake to point out.
            other => Err(bad(format!(
                "{s}: unknown scheme {other:?}; arc knows {KNOWN_SCHEMES} (write a local path with a colon as ./{s})"
            ))),
        }
    }

    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            _ => None,
        }
    }

    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }
}

/// The location as the user should see it: never with a secret (there
/// is none in a parsed location), in the form it was given.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { endpoint, bucket, prefix } if prefix.is_empty() => write!(f, "s3:{endpoint}/{bucket}"),
            Location::S3 { endpoint, bucket, prefix } => write!(f, "s3:{endpoint}/{bucket}/{prefix}"),
            Location::Sftp { user, host, port, path } => {
                write!(f, "sftp://")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]")?;
                } else {
                    write!(f, "{host}")?;
                }
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                write!(f, "{path}")
            }
            Location::WebDav { endpoint, user, path } => {
                let (scheme, host) = endpoint.split_once("://").unwrap_or(("http", endpoint));
                write!(f, "webdav:{scheme}://")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                write!(f, "{host}/{path}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: &str, bucket: &str, prefix: &str) -> Location {
        Location::S3 { endpoint: endpoint.into(), bucket: bucket.into(), prefix: prefix.into() }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Location::parse("s3:http://127.0.0.1:3900/backups/web").unwrap(),
            s3("http://127.0.0.1:3900", "backups", "web")
        );
        assert_eq!(Location::parse("s3:https://s3.example.net/b").unwrap(), s3("https://s3.example.net", "b", ""));
        assert_eq!(Location::parse("s3:https://h/b/deep/pre/").unwrap(), s3("https://h", "b", "deep/pre"));
        assert_eq!(
            Location::parse("sftp://backup@vault.example.net/srv/arc").unwrap(),
            Location::Sftp {
                user: Some("backup".into()),
                host: "vault.example.net".into(),
                port: None,
                path: "/srv/arc".into()
            }
        );
        assert_eq!(
            Location::parse("sftp://h:2222/~/arc/").unwrap(),
            Location::Sftp { user: None, host: "h".into(), port: Some(2222), path: "/~/arc".into() }
        );
        assert_eq!(
            Location::parse("webdav:https://dav.example.net/arc").unwrap(),
            Location::WebDav { endpoint: "https://dav.example.net".into(), user: None, path: "arc".into() }
        );
        assert_eq!(Location::parse("/srv/arc").unwrap(), Location::Local("/srv/arc".into()));
        assert_eq!(Location::parse("./s3:odd").unwrap(), Location::Local("./s3:odd".into()));
        assert_eq!(Location::parse("rel/dir:x").unwrap(), Location::Local("rel/dir:x".into()));
        assert_eq!(Location::parse("file:///srv/arc").unwrap(), Location::Local("/srv/arc".into()));
        assert_eq!(
            Location::parse("sftp://u@[::1]:22/r").unwrap(),
            Location::Sftp { user: Some("u".into()), host: "::1".into(), port: Some(22), path: "/r".into() }
        );
    }

    #[test]
    fn shows_what_was_given() {
        for s in [
            "s3:http://127.0.0.1:3900/backups/web",
            "s3:https://h/b",
            "sftp://backup@vault.example.net:2222/srv/arc",
            "sftp://[::1]/srv",
            "webdav:https://u@dav.example.net/arc",
        ] {
            assert_eq!(Location::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_with_the_reason() {
        let err = |s: &str| Location::parse(s).unwrap_err().to_string();
        let e = err("s3:odd");
        assert!(e.contains("http://"), "{e}");
        // restic's `s3:host/bucket` and the aws-cli `s3://bucket` spelling:
        // the message shows the form arc takes.
        for s in ["s3:host/bucket", "s3://host/bucket"] {
            let e = err(s);
            assert!(e.contains("s3:http(s)://host[:port]/bucket[/prefix]"), "{e}");
        }
        assert!(err("webdav://host/x").contains("webdav:http(s)://[user@]host[:port]/path"));
        let e = err("gs://bucket/x");
        assert!(e.contains("unknown scheme \"gs\"") && e.contains("s3:http") && e.contains("./gs://bucket/x"), "{e}");
        assert!(err("s3:http://host").contains("no bucket"));
        assert!(err("s3:http://host:99999/b").contains("port"));
        assert!(err("sftp://host").contains("no directory"));
        let e = err("sftp://u:hunter2@host/x");
        assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
        let e = err("webdav:https://u:hunter2@host/x");
        assert!(!e.contains("hunter2"), "{e}");
        let e = err("s3:http://AKIA:secret@host/b");
        assert!(!e.contains("secret@"), "{e}");
        assert!(err("").contains("empty"));
    }

    #[test]
    fn a_password_in_a_url_is_refused_naming_where_it_goes() {
        let err = |s: &str| Location::parse(s).unwrap_err().to_string();
        let e = err("webdav:https://u:hunter2@host/x");
        assert!(e.contains("ARC_WEBDAV_PASSWORD") && !e.contains("hunter2"), "{e}");
        let e = err("s3:http://AKIA:secret@host/b");
        assert!(e.contains("AWS_SECRET_ACCESS_KEY") && !e.contains("secret@"), "{e}");
        let e = err("sftp://u:hunter2@host/x");
        assert!(e.contains("ARC_SFTP_KEY") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_query_or_fragment_in_an_http_url_is_refused_without_showing_it() {
        let err = |s: &str| Location::parse(s).unwrap_err().to_string();
        for s in [
            "s3:http://127.0.0.1:9000/bucket?token=hunter2",
            "s3:https://h/b/prefix#hunter2",
            "s3:http://h?hunter2",
            "webdav:http://127.0.0.1:8080/dav?x=hunter2",
            "webdav:https://u@h/dav#hunter2",
            "webdav:https://u:hun#ter2@h/dav",
        ] {
            let e = err(s);
            assert!(!e.contains("hunter2") && !e.contains("hun#ter2"), "{s}: {e}");
            assert!(e.contains("query (?…) or fragment (#…)") || e.contains("password"), "{s}: {e}");
        }
        // SFTP paths are file names on the server, where `?` and `#` are
        // ordinary characters.
        assert!(Location::parse("sftp://h/srv/a#b?c").is_ok());
    }
}
