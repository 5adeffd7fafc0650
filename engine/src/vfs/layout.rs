//! The mount's top level: how snapshots are named and grouped into the
//! views (`snapshots/`, `time/Y/M/D/`, `tags/`, `hosts/`, `latest`, `at/`).
//! Everything here is derived from the snapshot files alone; no tree is
//! read. Names are computed once per snapshot list and never change while a
//! snapshot exists, so the inode numbers derived from them are stable.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

use crate::id::Id;
use crate::repo::Snapshot;

/// Which clock names and `at/` times are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// The local time zone (`TZ`, else `/etc/localtime`): what users type.
    #[default]
    Local,
    Utc,
}

impl Zone {
    fn naive(self, t: &DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Local => t.with_timezone(&chrono::Local).naive_local(),
            Zone::Utc => t.naive_utc(),
        }
    }

    /// The latest instant with this local wall-clock time (the later one
    /// when a DST change repeats it; shifted past a DST gap).
    fn instant(self, t: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            Zone::Utc => Some(t.and_utc()),
            Zone::Local => match chrono::Local.from_local_datetime(&t) {
                LocalResult::Single(x) => Some(x.with_timezone(&Utc)),
                LocalResult::Ambiguous(_, later) => Some(later.with_timezone(&Utc)),
                LocalResult::None => chrono::Local
                    .from_local_datetime(&(t + Duration::hours(1)))
                    .earliest()
                    .map(|x| x.with_timezone(&Utc)),
            },
        }
    }
}

/// One snapshot as the mount shows it.
#[derive(Debug)]
pub struct SnapRef {
    pub id: Id,
    pub tree: Id,
    pub time: DateTime<Utc>,
    pub uid: u32,
    pub gid: u32,
    pub host: String,
    pub tags: Vec<String>,
    /// Name under `snapshots/`, `tags/T/` and `hosts/H/`:
    /// `2026-07-24T12:00:00-1a2b3c4d`, so that `ls` sorts by time.
    pub name: String,
    /// Calendar day (in the mount's zone) and the name within that day's
    /// directory: `12:00:00` or `12:00:00-daily,db`.
    pub day: (i32, u32, u32),
    pub day_name: String,
}

impl PartialEq for SnapRef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for SnapRef {}
impl std::hash::Hash for SnapRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

/// Makes a tag or host usable as one path component.
pub fn component(s: &str) -> String {
    let c: String = s.chars().map(|c| if c == '/' || c == '\0' { '_' } else { c }).collect();
    match c.as_str() {
        "" => "_".into(),
        "." | ".." => c.replace('.', "_"),
        _ => c,
    }
}

/// Which snapshots a `latest` link or a listing covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    /// Snapshots with this tag (as a path component).
    Tag(Arc<str>),
    /// Snapshots of this host (as a path component).
    Host(Arc<str>),
}

impl Scope {
    pub fn matches(&self, s: &SnapRef) -> bool {
        match self {
            Scope::All => true,
            Scope::Tag(t) => s.tags.iter().any(|x| component(x) == **t),
            Scope::Host(h) => component(&s.host) == **h,
        }
    }
}

/// Every snapshot of the repository, oldest first, with its names.
#[derive(Debug, Default)]
pub struct SnapshotList {
    pub snaps: Vec<Arc<SnapRef>>,
    by_name: HashMap<String, usize>,
    /// When this list was built, i.e. when the set of snapshots last
    /// changed: the modification time of every virtual directory, so that
    /// caches keyed on a directory's mtime (the kernel's readdir cache)
    /// drop a listing exactly when it changes.
    pub built: DateTime<Utc>,
}

impl SnapshotList {
    pub fn build(mut snapshots: Vec<Snapshot>, zone: Zone) -> SnapshotList {
        snapshots.sort_by(|a, b| a.file.time.cmp(&b.file.time).then(a.id.cmp(&b.id)));
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut day_names: HashMap<((i32, u32, u32), String), ()> = HashMap::new();
        let mut snaps = Vec::with_capacity(snapshots.len());
        for s in snapshots {
            let local = zone.naive(&s.file.time);
            let stamp = local.format("%Y-%m-%dT%H:%M:%S").to_string();
            // Short ids collide only by accident; lengthen until unique.
            let hex = s.id.to_hex();
            let mut name = format!("{stamp}-{}", &hex[..8]);
            let mut len = 8;
            while names.contains_key(&name) && len < hex.len() {
                len += 4;
                name = format!("{stamp}-{}", &hex[..len]);
            }
            let day = (local.year(), local.month(), local.day());
            let mut day_name = format!("{:02}:{:02}:{:02}", local.hour(), local.minute(), local.second());
            if !s.file.tags.is_empty() {
                let tags: Vec<String> = s.file.tags.iter().map(|t| component(t)).collect();
                day_name.push('-');
                day_name.push_str(&tags.join(","));
            }
            // Two snapshots in the same second with the same tags: the
            // later one carries its id.
            if day_names.contains_key(&(day, day_name.clone())) {
                day_name = format!("{day_name}-{}", &hex[..len]);
            }
            day_names.insert((day, day_name.clone()), ());
            names.insert(name.clone(), snaps.len());
            snaps.push(Arc::new(SnapRef {
                id: s.id,
                tree: s.file.tree,
                time: s.file.time,
                uid: s.file.uid,
                gid: s.file.gid,
                host: s.file.host,
                tags: s.file.tags,
                name,
                day,
                day_name,
            }));
        }
        // Strictly increasing, even for two lists built within one clock
        // tick.
        static LAST: std::sync::Mutex<Option<DateTime<Utc>>> = std::sync::Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let mut built = Utc::now();
        if let Some(prev) = *last {
            if built <= prev {
                built = prev + Duration::nanoseconds(1);
            }
        }
        *last = Some(built);
        SnapshotList { snaps, by_name: names, built }
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<SnapRef>> {
        self.by_name.get(name).map(|&i| &self.snaps[i])
    }

    pub fn latest(&self, scope: &Scope) -> Option<&Arc<SnapRef>> {
        self.snaps.iter().rev().find(|s| scope.matches(s))
    }

    /// The newest snapshot taken at or before `bound`.
    pub fn at(&self, bound: DateTime<Utc>) -> Option<&Arc<SnapRef>> {
        let n = self.snaps.partition_point(|s| s.time <= bound);
        n.checked_sub(1).map(|i| &self.snaps[i])
    }

    pub fn tags(&self) -> BTreeSet<String> {
        self.snaps.iter().flat_map(|s| s.tags.iter().map(|t| component(t))).collect()
    }

    pub fn hosts(&self) -> BTreeSet<String> {
        self.snaps.iter().map(|s| component(&s.host)).collect()
    }

    /// Distinct calendar components below a `time/` prefix: years, months
    /// of a year, or days of a month.
    pub fn calendar(&self, year: Option<i32>, month: Option<u32>) -> BTreeSet<u32> {
        self.snaps
            .iter()
            .filter(|s| year.is_none_or(|y| s.day.0 == y) && month.is_none_or(|m| s.day.1 == m))
            .map(|s| match (year, month) {
                (None, _) => s.day.0.max(0) as u32,
                (Some(_), None) => s.day.1,
                (Some(_), Some(_)) => s.day.2,
            })
            .collect()
    }

    pub fn on_day(&self, day: (i32, u32, u32)) -> impl Iterator<Item = &Arc<SnapRef>> {
        self.snaps.iter().filter(move |s| s.day == day)
    }
}

/// Parses an `at/` name into the last instant it denotes. A name covers
/// its whole precision: `2026-07-24` is all of that day, `2026-07-24T12:00`
/// all of that minute, so a snapshot taken at 12:00:30 is "at 12:00".
/// Accepted: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, then optionally `T`, a space
/// or `_` and `HH`, `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction`, then
/// optionally `Z` or an offset `±HH:MM` (else the mount's zone applies).
pub fn parse_at(name: &str, zone: Zone) -> Option<DateTime<Utc>> {
    let name = name.trim();
    let (date, time) = match name.find(['T', ' ', '_']) {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    };
    let mut parts = date.split('-');
    let year: i32 = digits(parts.next()?, 4)?;
    let month: Option<u32> = match parts.next() {
        Some(m) => Some(digits(m, 2)?),
        None => None,
    };
    let day: Option<u32> = match parts.next() {
        Some(d) => Some(digits(d, 2)?),
        None => None,
    };
    if parts.next().is_some() || (day.is_some() && month.is_none()) {
        return None;
    }
    if time.is_some() && day.is_none() {
        return None;
    }
    // Offset suffix on the time part.
    let (clock, offset) = match time {
        None => (None, None),
        Some(t) => {
            if let Some(t) = t.strip_suffix('Z').or_else(|| t.strip_suffix('z')) {
                (Some(t), Some(0i32))
            } else if let Some(i) = t.rfind(['+', '-']) {
                (Some(&t[..i]), Some(parse_offset(&t[i..])?))
            } else {
                (Some(t), None)
            }
        }
    };
    let start_date = NaiveDate::from_ymd_opt(year, month.unwrap_or(1), day.unwrap_or(1))?;
    // The first instant after the named period.
    let end: NaiveDateTime = match clock {
        None => {
            let start = start_date.and_hms_opt(0, 0, 0)?;
            match (month, day) {
                (None, _) => NaiveDate::from_ymd_opt(year + 1, 1, 1)?.and_hms_opt(0, 0, 0)?,
                (Some(m), None) => {
                    let (y, m) = if m == 12 { (year + 1, 1) } else { (year, m + 1) };
                    NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?
                }
                (Some(_), Some(_)) => start + Duration::days(1),
            }
        }
        Some(c) => {
            let (hms, frac) = match c.split_once(['.', ',']) {
                Some((a, b)) => (a, Some(b)),
                None => (c, None),
            };
            let mut f = hms.split(':');
            let h: u32 = digits(f.next()?, 2)?;
            let m: Option<u32> = match f.next() {
                Some(m) => Some(digits(m, 2)?),
                None => None,
            };
            let s: Option<u32> = match f.next() {
                Some(s) => Some(digits(s, 2)?),
                None => None,
            };
            if f.next().is_some() || (frac.is_some() && s.is_none()) {
                return None;
            }
            let nanos = match frac {
                Some(fr) if !fr.is_empty() && fr.len() <= 9 && fr.bytes().all(|b| b.is_ascii_digit()) => {
                    fr.parse::<u32>().ok()? * 10u32.pow(9 - fr.len() as u32)
                }
                Some(_) => return None,
                None => 0,
            };
            let start = start_date.and_hms_nano_opt(h, m.unwrap_or(0), s.unwrap_or(0), nanos)?;
            let span = match (m, s, frac) {
                (None, _, _) => Duration::hours(1),
                (Some(_), None, _) => Duration::minutes(1),
                (Some(_), Some(_), None) => Duration::seconds(1),
                (Some(_), Some(_), Some(_)) => Duration::nanoseconds(1),
            };
            start + span
        }
    };
    let last = end - Duration::nanoseconds(1);
    match offset {
        Some(minutes) => Some((last - Duration::minutes(i64::from(minutes))).and_utc()),
        None => zone.instant(last),
    }
}

/// Exactly `n` ASCII digits.
fn digits<T: std::str::FromStr>(s: &str, n: usize) -> Option<T> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// `+HH:MM`, `+HHMM` or `+HH` to minutes east of UTC.
fn parse_offset(s: &str) -> Option<i32> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let rest = &s[1..];
    let (h, m) = match rest.len() {
        2 => (rest, "00"),
        4 => (&rest[..2], &rest[2..]),
        5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
        _ => return None,
    };
    let (h, m): (i32, i32) = (digits(h, 2)?, digits(m, 2)?);
    (h < 24 && m < 60).then_some(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::{SnapshotFile, Summary};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn at_names_cover_their_precision() {
        let z = Zone::Utc;
        assert_eq!(parse_at("2026", z), Some(utc("2026-12-31T23:59:59.999999999Z")));
        assert_eq!(parse_at("2026-02", z), Some(utc("2026-02-28T23:59:59.999999999Z")));
        assert_eq!(parse_at("2026-12", z), Some(utc("2026-12-31T23:59:59.999999999Z")));
        assert_eq!(parse_at("2026-07-24", z), Some(utc("2026-07-24T23:59:59.999999999Z")));
        assert_eq!(parse_at("2026-07-24T12", z), Some(utc("2026-07-24T12:59:59.999999999Z")));
        assert_eq!(parse_at("2026-07-24T12:00", z), Some(utc("2026-07-24T12:00:59.999999999Z")));
        assert_eq!(parse_at("2026-07-24 12:00:05", z), Some(utc("2026-07-24T12:00:05.999999999Z")));
        assert_eq!(parse_at("2026-07-24_12:00:05.5", z), Some(utc("2026-07-24T12:00:05.5Z")));
        assert_eq!(parse_at("2026-07-24T12:00:05Z", Zone::Local), Some(utc("2026-07-24T12:00:05.999999999Z")));
        assert_eq!(parse_at("2026-07-24T14:00+02:00", Zone::Local), Some(utc("2026-07-24T12:00:59.999999999Z")));
        assert_eq!(parse_at("2026-07-24T10:00-0200", Zone::Local), Some(utc("2026-07-24T12:00:59.999999999Z")));
        for bad in
            ["", "26", "2026-7-24", "2026-13", "2026-02-30", "2026-07-24T25:00", "x", "2026-07-24T12:00:05.", "latest"]
        {
            assert_eq!(parse_at(bad, z), None, "{bad:?}");
        }
    }

    fn snap(id: u8, time: &str, tags: &[&str], host: &str) -> Snapshot {
        Snapshot {
            id: Id([id; 32]),
            file: SnapshotFile {
                time: utc(time),
                host: host.into(),
                username: "u".into(),
                uid: 1,
                gid: 2,
                paths: vec!["/x".into()],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                tree: Id([id ^ 0xff; 32]),
                parent: None,
                program_version: "test".into(),
                summary: Summary::default(),
                excludes: Vec::new(),
                original: None,
            },
        }
    }

    #[test]
    fn names_views_and_at() {
        let list = SnapshotList::build(
            vec![
                snap(3, "2026-07-24T12:00:00Z", &[], "web/1"),
                snap(1, "2025-01-02T03:04:05Z", &["daily", "db"], "db"),
                snap(2, "2026-07-24T12:00:00Z", &[], "db"),
            ],
            Zone::Utc,
        );
        let names: Vec<&str> = list.snaps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["2025-01-02T03:04:05-01010101", "2026-07-24T12:00:00-02020202", "2026-07-24T12:00:00-03030303"]
        );
        let day: Vec<&str> = list.on_day((2026, 7, 24)).map(|s| s.day_name.as_str()).collect();
        assert_eq!(day, ["12:00:00", "12:00:00-03030303"]);
        assert_eq!(list.snaps[0].day_name, "03:04:05-daily,db");
        assert_eq!(list.calendar(None, None).into_iter().collect::<Vec<_>>(), [2025, 2026]);
        assert_eq!(list.calendar(Some(2026), None).into_iter().collect::<Vec<_>>(), [7]);
        assert_eq!(list.calendar(Some(2026), Some(7)).into_iter().collect::<Vec<_>>(), [24]);
        assert_eq!(list.hosts().into_iter().collect::<Vec<_>>(), ["db", "web_1"]);
        assert_eq!(list.latest(&Scope::Host("db".into())).unwrap().id, Id([2; 32]));
        assert_eq!(list.latest(&Scope::Tag("daily".into())).unwrap().id, Id([1; 32]));
        assert_eq!(list.at(parse_at("2026-07-24T11", Zone::Utc).unwrap()).unwrap().id, Id([1; 32]));
        assert_eq!(list.at(parse_at("2026-07-24", Zone::Utc).unwrap()).unwrap().id, Id([3; 32]));
        assert!(list.at(parse_at("2024", Zone::Utc).unwrap()).is_none());
        assert_eq!(list.by_name("2025-01-02T03:04:05-01010101").unwrap().id, Id([1; 32]));
    }
}
