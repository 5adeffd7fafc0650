//! Path patterns (backup excludes, restore includes and excludes) in one
//! documented syntax, gitignore-style, matched on the absolute path:
//!
//! - `*` matches within one path component, `**` across components, `?`
//!   one character, `[...]` a class (`[!...]` negated);
//! - a pattern with a `/` at its start or in its middle is anchored at the
//!   root (`/var/www/*/cache`, `var/log/*.gz`); one without a `/`, or with
//!   only a trailing one, matches a name at any depth (`*.tmp`, `cache/`);
//! - a trailing `/` matches directories only;
//! - a leading `!` re-includes what an earlier pattern excluded; the last
//!   pattern that matches decides. (As with git, nothing below an excluded
//!   directory is looked at, so `!` cannot bring back an entry inside one.)
//! - `\` escapes the next character (`\!important`, `\#file`).
//!
//! Matching is done by `globset` (compiled into one automaton for the whole
//! list, so thousands of patterns cost about as much as a few); this module
//! only translates the gitignore rules above into its globs.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// One pattern as the user gave it, with where it came from, for errors
/// (`--exclude`, `/etc/arc/www.exclude:12`).
#[derive(Debug, Clone)]
pub struct PatternSpec {
    pub pattern: String,
    pub origin: String,
    pub case_insensitive: bool,
}

#[derive(Debug, Clone)]
struct Rule {
    negate: bool,
    dir_only: bool,
    anchored: bool,
}

/// A compiled list of patterns; see the module documentation for the syntax.
#[derive(Debug, Clone)]
pub struct PatternSet {
    specs: Vec<PatternSpec>,
    rules: Vec<Rule>,
    set: GlobSet,
}

impl Default for PatternSet {
    fn default() -> Self {
        PatternSet { specs: Vec::new(), rules: Vec::new(), set: GlobSet::empty() }
    }
}

impl PatternSet {
    /// Compiles `specs`; the first bad pattern is an error naming its origin.
    pub fn new(specs: Vec<PatternSpec>) -> Result<PatternSet> {
        let mut builder = GlobSetBuilder::new();
        let mut rules = Vec::with_capacity(specs.len());
        for spec in &specs {
            let bad = |reason: String| Error::BadPattern {
                origin: spec.origin.clone(),
                pattern: spec.pattern.clone(),
                reason,
            };
            let (rule, glob) = translate(&spec.pattern).map_err(bad)?;
            let glob = GlobBuilder::new(&glob)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(spec.case_insensitive)
                .build()
                .map_err(|e| bad(e.kind().to_string()))?;
            builder.add(glob);
            rules.push(rule);
        }
        let set = builder.build().map_err(|e| Error::BadPattern {
            origin: "patterns".into(),
            pattern: String::new(),
            reason: e.to_string(),
        })?;
        Ok(PatternSet { specs, rules, set })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn specs(&self) -> &[PatternSpec] {
        &self.specs
    }

    /// Whether the last pattern matching `path` (absolute, `/`-separated)
    /// is a plain one (`Some(true)`), a `!` one (`Some(false)`), or none
    /// matches (`None`). `scratch` is reused between calls to save an
    /// allocation per entry.
    pub fn decide(&self, path: &[u8], is_dir: bool, scratch: &mut Vec<usize>) -> Option<bool> {
        if self.rules.is_empty() {
            return None;
        }
        // Paths that are not UTF-8 are matched on their lossy form: a
        // pattern can only be written in UTF-8 anyway.
        let text = String::from_utf8_lossy(path);
        self.set.matches_into(text.as_ref(), scratch);
        scratch.iter().rev().map(|&i| &self.rules[i]).find(|r| is_dir || !r.dir_only).map(|r| !r.negate)
    }

    /// True when no pattern is anchored: whether a path matches then
    /// depends on its last component alone (`*.tmp`, `cache/`), so an entry
    /// matches alike wherever its directory is. `find` uses it to remember
    /// a tree's matches once per tree instead of once per place.
    pub fn matches_names_only(&self) -> bool {
        self.rules.iter().all(|r| !r.anchored)
    }

    /// True when `path` is excluded (matched last by a plain pattern).
    pub fn matches(&self, path: &[u8], is_dir: bool, scratch: &mut Vec<usize>) -> bool {
        self.decide(path, is_dir, scratch) == Some(true)
    }
}

/// gitignore rules to a glob over the absolute path.
fn translate(pattern: &str) -> std::result::Result<(Rule, String), String> {
    let mut p = pattern;
    let negate = p.starts_with('!');
    if negate {
        p = &p[1..];
    }
    let dir_only = p.ends_with('/') && !p.ends_with("\\/");
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        return Err("the pattern is empty".into());
    }
    // Anchored when a separator is at the start or in the middle.
    let anchored = p.contains('/');
    let body = p.trim_start_matches('/');
    if body.is_empty() {
        return Err("the pattern matches only the root".into());
    }
    let glob = if anchored { format!("/{body}") } else { format!("**/{body}") };
    Ok((Rule { negate, dir_only, anchored }, glob))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> PatternSet {
        PatternSet::new(
            patterns
                .iter()
                .map(|p| PatternSpec { pattern: p.to_string(), origin: "test".into(), case_insensitive: false })
                .collect(),
        )
        .unwrap()
    }

    fn m(s: &PatternSet, path: &str, dir: bool) -> bool {
        s.matches(path.as_bytes(), dir, &mut Vec::new())
    }

    #[test]
    fn gitignore_rules() {
        let s = set(&["*.tmp", "/var/www/*/cache/", "logs/", "var/lib/**/*.pid", "!keep.tmp", "a?c", "[xy]z"]);
        assert!(m(&s, "/var/www/site1/x.tmp", false));
        assert!(!m(&s, "/var/www/site1/keep.tmp", false));
        assert!(m(&s, "/var/www/site1/cache", true));
        assert!(!m(&s, "/var/www/site1/cache", false), "trailing / is directories only");
        assert!(!m(&s, "/var/www/a/b/cache", true), "* does not cross /");
        assert!(m(&s, "/srv/logs", true));
        assert!(m(&s, "/var/lib/a/b/c.pid", false));
        assert!(!m(&s, "/x/var/lib/a/c.pid", false), "a / in the middle anchors at the root");
        assert!(m(&s, "/abc", false) && m(&s, "/q/xz", false) && !m(&s, "/q/zz", false));
    }

    #[test]
    fn names_only_sets_have_no_anchored_pattern() {
        assert!(set(&["*.tmp", "cache/", "!keep.tmp", "wp-config.php"]).matches_names_only());
        assert!(!set(&["*.tmp", "/var/www"]).matches_names_only());
        assert!(!set(&["var/lib/*.pid"]).matches_names_only(), "a / in the middle anchors");
    }

    #[test]
    fn case_insensitive_and_errors() {
        let s =
            PatternSet::new(vec![PatternSpec { pattern: "*.LOG".into(), origin: "x".into(), case_insensitive: true }])
                .unwrap();
        assert!(m(&s, "/a/b.log", false));
        let e = PatternSet::new(vec![PatternSpec {
            pattern: "a[b".into(),
            origin: "/etc/arc/www.exclude:3".into(),
            case_insensitive: false,
        }])
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/etc/arc/www.exclude:3") && msg.contains("a[b"), "{msg}");
    }
}
