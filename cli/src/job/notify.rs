//! The summary of a run, sent by webhook (an HTTP POST of JSON, through
//! ureq: small, blocking, kept up) and/or email (the local sendmail, as
//! cron mails and every MTA accept), on failure only or always.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::config::{Notify, NotifyOn};

/// One job's line in the summary (also `arc run --json`).
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub job: String,
    pub kind: String,
    /// ok | failed | skipped
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_s: f64,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub snapshots: Vec<String>,
    /// Took more than twice the duration its history predicts.
    pub slow: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub host: String,
    pub config: String,
    pub start: chrono::DateTime<chrono::Utc>,
    pub end: chrono::DateTime<chrono::Utc>,
    pub ok: usize,
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
    pub jobs: Vec<JobReport>,
}

impl Summary {
    pub fn line(&self) -> String {
        let mut s = format!("{} ok, {} failed, {} skipped", self.ok, self.failed.len(), self.skipped.len());
        if !self.failed.is_empty() {
            s.push_str(&format!(" (failed: {})", self.failed.join(", ")));
        }
        s
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `summary` where `n` says, if its `on` matches. Errors are the
/// caller's to log: a notification that fails must not fail the backups.
pub fn send(n: &Notify, summary: &Summary) -> Vec<String> {
    let failed = !summary.failed.is_empty();
    if n.on == NotifyOn::Failure && !failed {
        return Vec::new();
    }
    let mut errors = Vec::new();
    if let Some(url) = &n.webhook {
        if let Err(e) = webhook(url, summary) {
            errors.push(format!("webhook {url}: {e:#}"));
        }
    }
    if let Some(to) = &n.email {
        if let Err(e) = email(to, summary) {
            errors.push(format!("email to {to}: {e:#}"));
        }
    }
    errors
}

fn webhook(url: &str, summary: &Summary) -> Result<()> {
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    let body = serde_json::to_string(summary)?;
    match agent.post(url).set("Content-Type", "application/json").send_string(&body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => bail!("the server answered HTTP {code}"),
        Err(e) => Err(anyhow!("{e}")),
    }
}

fn email(to: &str, summary: &Summary) -> Result<()> {
    let sendmail = ["/usr/sbin/sendmail", "/usr/lib/sendmail"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| anyhow!("no sendmail (install an MTA, e.g. postfix or msmtp-mta)"))?;
    let subject = format!(
        "arc on {}: {}",
        summary.host,
        if summary.failed.is_empty() {
            "all jobs ok".to_string()
        } else {
            format!("FAILED {}", summary.failed.join(", "))
        }
    );
    let mut body = format!("{}\n\n", summary.line());
    for j in &summary.jobs {
        body.push_str(&format!(
            "{:<24} {:<8} {:>8.1}s  {}\n",
            j.job,
            j.result,
            j.duration_s,
            j.error.as_deref().unwrap_or("")
        ));
    }
    let mut child = Command::new(sendmail)
        .args(["-t", "-oi"])
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {sendmail}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        write!(stdin, "To: {to}\nSubject: {subject}\nContent-Type: text/plain; charset=utf-8\n\n{body}")?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{sendmail} failed ({status})");
    }
    Ok(())
}
