//! Env files: one repository's storage variables (S3 keys and region, the
//! SFTP identity, the WebDAV password) read from a file instead of the
//! environment, for `copy --from-env-file` and `env-file` in a job file's
//! `[repositories.NAME]`. With two providers in one command the
//! environment can hold only one of them.
//!
//! The format is the usual `.env` one (`NAME=value` lines, `#` comments,
//! an optional `export`, quotes), read with the dotenvy crate rather than
//! by hand so that quoting follows what other tools accept.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{anyhow, Result};
use arc_engine::storage::{variables_for, Location, StorageSettings};

/// Reads `path` as the storage variables of the repository at `location`.
/// `what` names where the file was given, for errors (`--from-env-file`,
/// `env-file of [repositories.offsite]`).
pub fn read(path: &Path, location: &Location, what: &str) -> Result<StorageSettings> {
    let shown = path.display();
    let allowed = variables_for(location);
    if allowed.is_empty() {
        return Err(anyhow!("{what} {shown}: {location} is a local repository, which reads no storage variables"));
    }
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("{what} {shown}: {e}"))?;
    // It holds secret keys: as ssh does for an identity file, refuse one
    // that every user of the machine can read or change.
    if meta.mode() & 0o006 != 0 {
        return Err(anyhow!(
            "{what} {shown} can be read or written by every user, and it holds secrets (chmod o-rwx {shown})"
        ));
    }
    let iter = dotenvy::from_path_iter(path).map_err(|e| anyhow!("{what} {shown}: {}", describe(&e)))?;
    let mut vars = BTreeMap::new();
    for item in iter {
        let (name, value) = item.map_err(|e| anyhow!("{what} {shown}: {}", describe(&e)))?;
        if !allowed.contains(&name.as_str()) {
            return Err(anyhow!(
                "{what} {shown}: {name} is not a variable arc reads for {location} (it reads {})",
                allowed.join(", ")
            ));
        }
        vars.insert(name, value);
    }
    let settings = StorageSettings::new(vars);
    if let Location::S3 { .. } = location {
        let has = |n: &str| settings.get(n).is_some();
        let keys = has("AWS_ACCESS_KEY_ID") && has("AWS_SECRET_ACCESS_KEY");
        if !keys && !has("AWS_PROFILE") {
            return Err(anyhow!(
                "{what} {shown} gives no S3 credentials: it needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                 AWS_PROFILE (the environment's are not used for this repository)"
            ));
        }
        if has("AWS_ACCESS_KEY_ID") != has("AWS_SECRET_ACCESS_KEY") {
            return Err(anyhow!("{what} {shown}: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together"));
        }
    }
    Ok(settings)
}

/// dotenvy's errors, without the value of a line it could not parse
/// (which may be a secret): its line-parse error carries the line.
fn describe(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(_, at) => format!("cannot parse the line at character {at}"),
        dotenvy::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn s3() -> Location {
        Location::parse("s3:http://127.0.0.1:9000/bucket").unwrap()
    }

    fn file(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join("repo.env");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn reads_the_usual_env_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(
            dir.path(),
            "# offsite\nexport AWS_ACCESS_KEY_ID=GKabc\nAWS_SECRET_ACCESS_KEY='s3cr$t#x'\n\nAWS_DEFAULT_REGION=\"garage\"\n",
            0o600,
        );
        let s = read(&p, &s3(), "--from-env-file").unwrap();
        assert_eq!(s.get("AWS_ACCESS_KEY_ID"), Some("GKabc"));
        assert_eq!(s.get("AWS_SECRET_ACCESS_KEY"), Some("s3cr$t#x"));
        assert_eq!(s.get("AWS_DEFAULT_REGION"), Some("garage"));
    }

    #[test]
    fn refuses_what_would_go_wrong_later() {
        let dir = tempfile::tempdir().unwrap();
        let err = |text: &str, mode: u32, loc: &Location| {
            let p = file(dir.path(), text, mode);
            format!("{:#}", read(&p, loc, "--from-env-file").unwrap_err())
        };
        let e = err("AWS_ACCESS_KEY_ID=a\nAWS_SECRET_KEY=b\n", 0o600, &s3());
        assert!(e.contains("AWS_SECRET_KEY is not a variable") && e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        let e = err("AWS_DEFAULT_REGION=x\n", 0o600, &s3());
        assert!(e.contains("gives no S3 credentials"), "{e}");
        let e = err("AWS_ACCESS_KEY_ID=a\nAWS_PROFILE=p\n", 0o600, &s3());
        assert!(e.contains("go together"), "{e}");
        let e = err("AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\n", 0o644, &s3());
        assert!(e.contains("every user") && e.contains("chmod o-rwx"), "{e}");
        let e = err("AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY='hunter2\n", 0o600, &s3());
        assert!(e.contains("cannot parse") && !e.contains("hunter2"), "{e}");
        let local = Location::parse("/var/backups/arc").unwrap();
        let e = err("ARC_SFTP_KEY=/k\n", 0o600, &local);
        assert!(e.contains("local repository"), "{e}");
        let sftp = Location::parse("sftp://backup@127.0.0.1/srv/arc").unwrap();
        let e = err("AWS_ACCESS_KEY_ID=a\n", 0o600, &sftp);
        assert!(e.contains("ARC_SFTP_KEY, ARC_SSH_CONFIG"), "{e}");
    }
}
