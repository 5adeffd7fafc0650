//! Where a remote repository's storage settings come from: the variables
//! arc reads for S3, SFTP and WebDAV (credentials, region, ssh identity),
//! either the process environment or a set given for this one repository.
//!
//! A set of its own per repository is what lets one process reach two
//! providers with different credentials (`copy` from one to the other, a
//! job file whose repositories live with two providers): the environment
//! holds one `AWS_ACCESS_KEY_ID`. When a set is given, it is the only
//! source of these variables for that repository; falling back to the
//! environment variable by variable could sign one provider's requests
//! with the other's secret key.

use std::collections::BTreeMap;

use super::Location;

/// The variables arc reads for an S3 repository.
pub const S3_VARIABLES: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
];

/// The variables arc reads for an SFTP repository.
pub const SFTP_VARIABLES: &[&str] = &["ARC_SFTP_KEY", "ARC_SSH_CONFIG"];

/// The variables arc reads for a WebDAV repository.
pub const WEBDAV_VARIABLES: &[&str] = &["ARC_WEBDAV_PASSWORD"];

/// The storage variables that count for a repository at `location`
/// (none for a local directory).
pub fn variables_for(location: &Location) -> &'static [&'static str] {
    match location {
        Location::S3 { .. } => S3_VARIABLES,
        Location::Sftp { .. } => SFTP_VARIABLES,
        Location::WebDav { .. } => WEBDAV_VARIABLES,
        Location::Local(_) => &[],
    }
}

/// Storage variables given for one repository instead of the environment.
/// Its `Debug` shows the names only: the values are secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageSettings(BTreeMap<String, String>);

impl StorageSettings {
    pub fn new(vars: BTreeMap<String, String>) -> StorageSettings {
        StorageSettings(vars)
    }

    /// A variable's value; an empty one counts as unset, as in the
    /// environment.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Reads storage variables from the given set, or else the environment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Vars<'a>(pub(super) Option<&'a StorageSettings>);

impl Vars<'_> {
    pub(super) fn get(&self, name: &str) -> Option<String> {
        match self.0 {
            Some(s) => s.get(name).map(str::to_string),
            None => std::env::var(name).ok().filter(|v| !v.is_empty()),
        }
    }

    pub(super) fn given(&self) -> bool {
        self.0.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_names_never_values() {
        let s = StorageSettings::new(BTreeMap::from([("AWS_SECRET_ACCESS_KEY".to_string(), "hunter2".to_string())]));
        let shown = format!("{s:?}");
        assert!(shown.contains("AWS_SECRET_ACCESS_KEY") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_given_set_never_falls_back_to_the_environment() {
        std::env::set_var("ARC_SETTINGS_TEST_ONLY_VAR", "from-env");
        let s = StorageSettings::default();
        assert_eq!(Vars(Some(&s)).get("ARC_SETTINGS_TEST_ONLY_VAR"), None);
        assert_eq!(Vars(None).get("ARC_SETTINGS_TEST_ONLY_VAR").as_deref(), Some("from-env"));
        std::env::remove_var("ARC_SETTINGS_TEST_ONLY_VAR");
    }
}
