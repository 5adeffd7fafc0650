//! Retention policies: which snapshots a set of keep rules keeps, and why.
//!
//! Every arc snapshot is a full tree, so the classic yearly-full / monthly /
//! ten-day ("decade") / daily increment scheme becomes a policy over
//! snapshots. The rules follow restic and borg: snapshots are grouped (by
//! host and paths unless told otherwise), each group is walked newest first,
//! and a rule with count N keeps the newest snapshot of each of the last N
//! periods (hours, days, decades, ISO weeks, months, years) that have a
//! snapshot at all. Periods without a snapshot do not use up the count.
//!
//! | rule | period | label |
//! |---|---|---|
//! | `--keep-last N` | every snapshot | `L` |
//! | `--keep-hourly N` | clock hour | `H` |
//! | `--keep-daily N` | calendar day | `D` |
//! | `--keep-decades N` | 1st-10th, 11th-20th, 21st-end of a month | `D10` |
//! | `--keep-weekly N` | ISO 8601 week (Monday to Sunday) | `W` |
//! | `--keep-monthly N` | calendar month | `M` |
//! | `--keep-yearly N` | calendar year | `Y` |
//! | `--keep-within DUR` | everything newer than the group's newest snapshot minus DUR | `within` |
//! | `--keep-tag T[,T2]` | snapshots carrying all of these tags | `tag:T` |
//!
//! Periods are computed in the time zone the caller passes (UTC by default,
//! the local zone with `--local`). [`apply`] is a pure function of the
//! snapshots' times, hosts, paths and tags, so it can be tested on generated
//! calendars without a repository.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, Months, TimeZone, Timelike, Utc};

use crate::error::{Error, Result};

/// The keep rules; a count of 0 disables a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub decades: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Option<Within>,
    /// Each entry keeps the snapshots that carry all of its tags
    /// (`--keep-tag a,b`); a snapshot matching any entry is kept.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// True when no rule is set: such a policy would keep nothing, which
    /// callers refuse rather than forget every snapshot.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.decades == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// A calendar duration for `--keep-within`: `30d`, `2y5m`, `1y2m3w4d5h`.
/// `m` is months (there is no minutes unit: retention does not need it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Within {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
}

impl Within {
    /// `newest` minus this duration, computed in `tz` so that "1m" means one
    /// calendar month there. Month arithmetic clamps to the month's end
    /// (March 31 minus one month is February 28 or 29).
    pub fn cutoff<Tz: TimeZone>(&self, newest: DateTime<Utc>, tz: &Tz) -> DateTime<Utc> {
        let local = newest.with_timezone(tz);
        let months = self.years.saturating_mul(12).saturating_add(self.months);
        let days = u64::from(self.weeks) * 7 + u64::from(self.days);
        let t = local
            .checked_sub_months(Months::new(months))
            .and_then(|t| t.checked_sub_days(Days::new(days)))
            .and_then(|t| t.checked_sub_signed(chrono::Duration::hours(i64::from(self.hours))));
        // Out of chrono's range: everything is within.
        t.map(|t| t.with_timezone(&Utc)).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

impl FromStr for Within {
    type Err = Error;

    fn from_str(s: &str) -> Result<Within> {
        let bad = |reason: String| Error::InvalidArgument { what: "keep-within duration", reason };
        let mut w = Within::default();
        let mut digits = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            if digits.is_empty() {
                return Err(bad(format!("{s:?}: expected a number before {c:?} (e.g. 30d, 2y5m)")));
            }
            let n: u32 = digits.parse().map_err(|_| bad(format!("{s:?}: {digits} is too large")))?;
            digits.clear();
            let field = match c {
                'y' => &mut w.years,
                'm' => &mut w.months,
                'w' => &mut w.weeks,
                'd' => &mut w.days,
                'h' => &mut w.hours,
                _ => return Err(bad(format!("{s:?}: unknown unit {c:?} (use y, m, w, d, h)"))),
            };
            *field = field.saturating_add(n);
            any = true;
        }
        if !digits.is_empty() {
            return Err(bad(format!("{s:?}: the number {digits} has no unit (e.g. {digits}d)")));
        }
        if !any {
            return Err(bad(format!("{s:?} is empty (e.g. 30d, 2y5m)")));
        }
        Ok(w)
    }
}

impl fmt::Display for Within {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [(self.years, 'y'), (self.months, 'm'), (self.weeks, 'w'), (self.days, 'd'), (self.hours, 'h')];
        let mut wrote = false;
        for (n, unit) in parts {
            if n > 0 {
                write!(f, "{n}{unit}")?;
                wrote = true;
            }
        }
        if !wrote {
            f.write_str("0d")?;
        }
        Ok(())
    }
}

/// Which snapshot fields separate groups; each group gets the policy on its
/// own (the daily backups of two hosts never push each other out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy { host: true, paths: true, tags: false }
    }
}

impl FromStr for GroupBy {
    type Err = Error;

    /// `host,paths` (the default), `host`, `paths,tags`, ... or `` (one
    /// group for everything).
    fn from_str(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy { host: false, paths: false, tags: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" | "path" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                other => {
                    return Err(Error::InvalidArgument {
                        what: "group-by",
                        reason: format!("{other:?} is not one of host, paths, tags"),
                    })
                }
            }
        }
        Ok(g)
    }
}

/// Why a snapshot is kept. The declaration order is the display order:
/// longest period first, as in the "Kept by" column (`Y M D10 D`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Yearly,
    Monthly,
    Decade,
    Weekly,
    Daily,
    Hourly,
    Last,
    Within,
    /// The `--keep-tag` entry that matched, its tags joined by `,`.
    Tag(String),
}

impl Reason {
    /// Short label for tables: `Y`, `M`, `D10`, `W`, `D`, `H`, `L`,
    /// `within`, `tag:NAME`.
    pub fn label(&self) -> String {
        match self {
            Reason::Yearly => "Y".into(),
            Reason::Monthly => "M".into(),
            Reason::Decade => "D10".into(),
            Reason::Weekly => "W".into(),
            Reason::Daily => "D".into(),
            Reason::Hourly => "H".into(),
            Reason::Last => "L".into(),
            Reason::Within => "within".into(),
            Reason::Tag(t) => format!("tag:{t}"),
        }
    }

    /// Long name for JSON, after the flag that set the rule.
    pub fn name(&self) -> String {
        match self {
            Reason::Yearly => "yearly".into(),
            Reason::Monthly => "monthly".into(),
            Reason::Decade => "decades".into(),
            Reason::Weekly => "weekly".into(),
            Reason::Daily => "daily".into(),
            Reason::Hourly => "hourly".into(),
            Reason::Last => "last".into(),
            Reason::Within => "within".into(),
            Reason::Tag(t) => format!("tag:{t}"),
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// What the policy looks at in one snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub time: DateTime<Utc>,
    pub host: &'a str,
    pub paths: &'a [String],
    pub tags: &'a [String],
}

/// The fields that define a group; a field not grouped by is `None`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct GroupKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub key: GroupKey,
    /// Indices into the input, newest first.
    pub members: Vec<usize>,
}

/// The verdict on every input snapshot.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Groups in key order.
    pub groups: Vec<Group>,
    /// Per input index: the rules keeping it, in display order; empty means
    /// the policy does not keep it.
    pub reasons: Vec<Vec<Reason>>,
}

impl Outcome {
    pub fn keep(&self, i: usize) -> bool {
        !self.reasons[i].is_empty()
    }
}

/// One counting rule while a group is walked: how many more periods it may
/// keep and the period of the snapshot it kept last.
struct Bucket {
    reason: Reason,
    left: u32,
    last: Option<i64>,
    period: PeriodFn,
}

/// The period a snapshot falls in for one rule, from its calendar fields
/// and its position in the group (newest first).
type PeriodFn = fn(&NaiveParts, usize) -> i64;

/// The calendar fields of a snapshot time in the policy's zone.
struct NaiveParts {
    year: i64,
    month0: i64,
    day: u32,
    hour: i64,
    days_from_ce: i64,
    iso_year: i64,
    iso_week: i64,
}

impl NaiveParts {
    fn new<Tz: TimeZone>(t: DateTime<Utc>, tz: &Tz) -> NaiveParts {
        let l = t.with_timezone(tz);
        let iso = l.iso_week();
        NaiveParts {
            year: i64::from(l.year()),
            month0: i64::from(l.month0()),
            day: l.day(),
            hour: i64::from(l.hour()),
            days_from_ce: i64::from(l.num_days_from_ce()),
            iso_year: i64::from(iso.year()),
            iso_week: i64::from(iso.week()),
        }
    }
}

/// Decade of a day of the month: 0 for the 1st-10th, 1 for the 11th-20th,
/// 2 for the 21st to the month's end (8 to 11 days).
pub fn decade_of(day: u32) -> u32 {
    match day {
        0..=10 => 0,
        11..=20 => 1,
        _ => 2,
    }
}

/// Applies `policy` to `items` (in any order) grouped by `group_by`, with
/// calendar periods taken in `tz`.
///
/// Within a group, snapshots are walked newest first (equal times: the one
/// later in `items` counts as newer). A counting rule keeps a snapshot when
/// its period differs from the period of the snapshot the rule kept before
/// and the rule has count left; the newest snapshot of each period is
/// therefore the one kept. `within` is measured from the group's newest
/// snapshot, not from now, so a host that stopped backing up does not lose
/// its last snapshots to the clock.
pub fn apply<Tz: TimeZone>(items: &[Item<'_>], policy: &Policy, group_by: GroupBy, tz: &Tz) -> Outcome {
    let mut by_key: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        let key = GroupKey {
            host: group_by.host.then(|| it.host.to_string()),
            paths: group_by.paths.then(|| sorted(it.paths)),
            tags: group_by.tags.then(|| sorted(it.tags)),
        };
        by_key.entry(key).or_default().push(i);
    }
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); items.len()];
    let mut groups = Vec::with_capacity(by_key.len());
    for (key, mut members) in by_key {
        members.sort_by(|&a, &b| items[b].time.cmp(&items[a].time).then(b.cmp(&a)));
        apply_group(items, &members, policy, tz, &mut reasons);
        groups.push(Group { key, members });
    }
    for r in &mut reasons {
        r.sort();
    }
    Outcome { groups, reasons }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

fn apply_group<Tz: TimeZone>(
    items: &[Item<'_>],
    members: &[usize],
    policy: &Policy,
    tz: &Tz,
    reasons: &mut [Vec<Reason>],
) {
    let rules: [(u32, Reason, PeriodFn); 7] = [
        (policy.last, Reason::Last, |_, nth| nth as i64),
        (policy.hourly, Reason::Hourly, |p, _| p.days_from_ce * 24 + p.hour),
        (policy.daily, Reason::Daily, |p, _| p.days_from_ce),
        (policy.decades, Reason::Decade, |p, _| (p.year * 12 + p.month0) * 3 + i64::from(decade_of(p.day))),
        (policy.weekly, Reason::Weekly, |p, _| p.iso_year * 54 + p.iso_week),
        (policy.monthly, Reason::Monthly, |p, _| p.year * 12 + p.month0),
        (policy.yearly, Reason::Yearly, |p, _| p.year),
    ];
    let mut buckets: Vec<Bucket> = rules
        .into_iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(left, reason, period)| Bucket { reason, left, last: None, period })
        .collect();
    let cutoff = match (&policy.within, members.first()) {
        (Some(w), Some(&newest)) => Some(w.cutoff(items[newest].time, tz)),
        _ => None,
    };
    for (nth, &i) in members.iter().enumerate() {
        let it = &items[i];
        let out = &mut reasons[i];
        for want in &policy.tags {
            if !want.is_empty() && want.iter().all(|t| it.tags.contains(t)) {
                out.push(Reason::Tag(want.join(",")));
            }
        }
        if cutoff.is_some_and(|c| it.time > c) {
            out.push(Reason::Within);
        }
        let parts = NaiveParts::new(it.time, tz);
        for b in &mut buckets {
            if b.left == 0 {
                continue;
            }
            let p = (b.period)(&parts, nth);
            if b.last != Some(p) {
                b.last = Some(p);
                b.left -= 1;
                out.push(b.reason.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::{FixedOffset, NaiveDate};

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}")).with_timezone(&Utc)
    }

    fn show(d: &DateTime<Utc>) -> String {
        d.format("%Y-%m-%dT%H:%M:%S").to_string()
    }

    /// The generated calendar (UTC), oldest first:
    /// * every day from 2021-03-01 to 2024-03-10 at 06:00 and 18:00,
    /// * an extra one at 23:59:59 on the 10th, the 20th and the last day of
    ///   every month (so the newest of a decade is at its very end),
    /// * none from 2022-06-05 to 2022-08-14 (July 2022 is empty), from
    ///   2023-11-11 to 2023-11-20 (a whole decade is empty) and from
    ///   2024-02-21 to 2024-02-28 (the third decade of February 2024 holds
    ///   only the leap day),
    /// * 2024-03-01T00:00:00 (right after the leap day's 23:59:59) and two
    ///   more in the hour 18 of 2024-03-10, at 18:30 and 18:45.
    fn calendar() -> Vec<DateTime<Utc>> {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("date");
        let gaps =
            [(d(2022, 6, 5), d(2022, 8, 14)), (d(2023, 11, 11), d(2023, 11, 20)), (d(2024, 2, 21), d(2024, 2, 28))];
        let mut out = Vec::new();
        let mut day = d(2021, 3, 1);
        while day <= d(2024, 3, 10) {
            if !gaps.iter().any(|(a, b)| (*a..=*b).contains(&day)) {
                let at = |h, m, s| day.and_hms_opt(h, m, s).expect("time").and_utc();
                out.push(at(6, 0, 0));
                out.push(at(18, 0, 0));
                let month_end = day.succ_opt().is_some_and(|n| n.month() != day.month());
                if day.day() == 10 || day.day() == 20 || month_end {
                    out.push(at(23, 59, 59));
                }
            }
            day = day.succ_opt().expect("next day");
        }
        out.extend([t("2024-03-01T00:00:00Z"), t("2024-03-10T18:30:00Z"), t("2024-03-10T18:45:00Z")]);
        out.sort();
        out
    }

    fn items(times: &[DateTime<Utc>]) -> Vec<Item<'static>> {
        times.iter().map(|&time| Item { time, host: "web1", paths: &[], tags: &[] }).collect()
    }

    /// The kept snapshots' times, as `YYYY-MM-DDTHH:MM:SS`.
    fn kept(times: &[DateTime<Utc>], policy: &Policy) -> BTreeSet<String> {
        kept_in(times, policy, &Utc)
    }

    fn kept_in<Tz: TimeZone>(times: &[DateTime<Utc>], policy: &Policy, tz: &Tz) -> BTreeSet<String> {
        let out = apply(&items(times), policy, GroupBy::default(), tz);
        times.iter().enumerate().filter(|(i, _)| out.keep(*i)).map(|(_, t)| show(t)).collect()
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn calendar_shape() {
        let cal = calendar();
        assert!(cal.windows(2).all(|w| w[0] < w[1]));
        assert!(cal.contains(&t("2024-02-29T23:59:59Z")));
        assert!(!cal.iter().any(|x| show(x).starts_with("2022-07")));
        assert!(!cal.iter().any(|x| ("2023-11-11".."2023-11-21").contains(&show(x).as_str())));
        assert_eq!(show(cal.last().unwrap()), "2024-03-10T23:59:59");
    }

    #[test]
    fn keep_last_and_hourly() {
        let cal = calendar();
        let p = Policy { last: 3, ..Default::default() };
        assert_eq!(kept(&cal, &p), set(&["2024-03-10T23:59:59", "2024-03-10T18:45:00", "2024-03-10T18:30:00"]));
        // Three snapshots in hour 18: only its newest (18:45) is kept.
        let p = Policy { hourly: 3, ..Default::default() };
        assert_eq!(kept(&cal, &p), set(&["2024-03-10T23:59:59", "2024-03-10T18:45:00", "2024-03-10T06:00:00"]));
    }

    #[test]
    fn keep_daily_skips_days_without_snapshots() {
        let cal = calendar();
        let p = Policy { daily: 12, ..Default::default() };
        // March 10 back to March 1 (10 days, the 1st by its 18:00, not by
        // its 00:00), then the leap day, then nothing until the 20th.
        assert_eq!(
            kept(&cal, &p),
            set(&[
                "2024-03-10T23:59:59",
                "2024-03-09T18:00:00",
                "2024-03-08T18:00:00",
                "2024-03-07T18:00:00",
                "2024-03-06T18:00:00",
                "2024-03-05T18:00:00",
                "2024-03-04T18:00:00",
                "2024-03-03T18:00:00",
                "2024-03-02T18:00:00",
                "2024-03-01T18:00:00",
                "2024-02-29T23:59:59",
                "2024-02-20T23:59:59",
            ])
        );
    }

    #[test]
    fn keep_decades_across_boundaries_leap_day_and_an_empty_decade() {
        let cal = calendar();
        let p = Policy { decades: 12, ..Default::default() };
        assert_eq!(
            kept(&cal, &p),
            set(&[
                "2024-03-10T23:59:59", // March 1st-10th
                "2024-02-29T23:59:59", // February 21st-end: only the leap day has snapshots
                "2024-02-20T23:59:59", // the 20th closes the second decade
                "2024-02-10T23:59:59",
                "2024-01-31T23:59:59", // the 31st is in the third decade
                "2024-01-20T23:59:59",
                "2024-01-10T23:59:59",
                "2023-12-31T23:59:59",
                "2023-12-20T23:59:59",
                "2023-12-10T23:59:59",
                "2023-11-30T23:59:59",
                // 2023-11-11..20 has no snapshot and costs no count.
                "2023-11-10T23:59:59",
            ])
        );
        // The 10th/11th and 20th/21st boundaries, minute by minute.
        let edge = [
            t("2024-05-10T23:59:59Z"),
            t("2024-05-11T00:00:00Z"),
            t("2024-05-20T23:59:59Z"),
            t("2024-05-21T00:00:00Z"),
            t("2024-05-31T23:59:59Z"),
            t("2024-06-01T00:00:00Z"),
        ];
        let p = Policy { decades: 10, ..Default::default() };
        // The 11th belongs with the 20th, the 21st with the 31st: were the
        // 11th in the first decade, it (not the 10th) would be its newest.
        assert_eq!(
            kept(&edge, &p),
            set(&["2024-05-10T23:59:59", "2024-05-20T23:59:59", "2024-05-31T23:59:59", "2024-06-01T00:00:00"])
        );
        assert_eq!(decade_of(1), 0);
        assert_eq!(decade_of(10), 0);
        assert_eq!(decade_of(11), 1);
        assert_eq!(decade_of(20), 1);
        assert_eq!(decade_of(21), 2);
        assert_eq!(decade_of(31), 2);
    }

    #[test]
    fn keep_weekly_uses_iso_weeks() {
        let cal = calendar();
        let p = Policy { weekly: 4, ..Default::default() };
        // 2024-03-10 is a Sunday: week 10 is Mar 4-10, week 9 Feb 26-Mar 3,
        // week 8 Feb 19-25 (only the 19th and 20th have snapshots), week 7
        // Feb 12-18.
        assert_eq!(
            kept(&cal, &p),
            set(&["2024-03-10T23:59:59", "2024-03-03T18:00:00", "2024-02-20T23:59:59", "2024-02-18T18:00:00"])
        );
        // 2020-12-31 (Thursday) and 2021-01-03 (Sunday) are both in ISO week
        // 53 of 2020; 2021-01-04 starts week 1 of 2021.
        let new_year = [t("2020-12-31T12:00:00Z"), t("2021-01-03T12:00:00Z"), t("2021-01-04T12:00:00Z")];
        let p = Policy { weekly: 2, ..Default::default() };
        assert_eq!(kept(&new_year, &p), set(&["2021-01-03T12:00:00", "2021-01-04T12:00:00"]));
        let p = Policy { yearly: 2, ..Default::default() };
        assert_eq!(kept(&new_year, &p), set(&["2020-12-31T12:00:00", "2021-01-04T12:00:00"]));
    }

    #[test]
    fn keep_monthly_month_ends_and_an_empty_month() {
        let cal = calendar();
        let p = Policy { monthly: 6, ..Default::default() };
        assert_eq!(
            kept(&cal, &p),
            set(&[
                "2024-03-10T23:59:59",
                "2024-02-29T23:59:59",
                "2024-01-31T23:59:59",
                "2023-12-31T23:59:59",
                "2023-11-30T23:59:59",
                "2023-10-31T23:59:59",
            ])
        );
        let p = Policy { monthly: 24, ..Default::default() };
        assert_eq!(
            kept(&cal, &p),
            set(&[
                "2024-03-10T23:59:59",
                "2024-02-29T23:59:59",
                "2024-01-31T23:59:59",
                "2023-12-31T23:59:59",
                "2023-11-30T23:59:59",
                "2023-10-31T23:59:59",
                "2023-09-30T23:59:59",
                "2023-08-31T23:59:59",
                "2023-07-31T23:59:59",
                "2023-06-30T23:59:59",
                "2023-05-31T23:59:59",
                "2023-04-30T23:59:59",
                "2023-03-31T23:59:59",
                "2023-02-28T23:59:59",
                "2023-01-31T23:59:59",
                "2022-12-31T23:59:59",
                "2022-11-30T23:59:59",
                "2022-10-31T23:59:59",
                "2022-09-30T23:59:59",
                "2022-08-31T23:59:59",
                // July 2022 is empty; June 2022 ends on the 4th.
                "2022-06-04T18:00:00",
                "2022-05-31T23:59:59",
                "2022-04-30T23:59:59",
                "2022-03-31T23:59:59",
            ])
        );
    }

    #[test]
    fn keep_yearly_keeps_only_existing_years() {
        let cal = calendar();
        let p = Policy { yearly: 5, ..Default::default() };
        assert_eq!(
            kept(&cal, &p),
            set(&["2024-03-10T23:59:59", "2023-12-31T23:59:59", "2022-12-31T23:59:59", "2021-12-31T23:59:59"])
        );
    }

    #[test]
    fn keep_within_is_relative_to_the_newest_snapshot() {
        let cal = calendar();
        // Newest is 2024-03-10T23:59:59; 10 days earlier is the leap day's
        // 23:59:59, which is not newer than the cutoff and so not kept.
        let p = Policy { within: Some("10d".parse().unwrap()), ..Default::default() };
        let k = kept(&cal, &p);
        assert!(!k.contains("2024-02-29T23:59:59"));
        assert!(k.contains("2024-03-01T00:00:00"));
        // Mar 1 00:00, 2 a day on Mar 1-9, 5 on Mar 10.
        assert_eq!(k.len(), 1 + 18 + 5);

        let p = Policy { within: Some("1m".parse().unwrap()), ..Default::default() };
        let k = kept(&cal, &p);
        assert!(!k.contains("2024-02-10T23:59:59"));
        assert!(k.contains("2024-02-11T06:00:00"));
        // Feb 11-20 (21), the leap day (3), Mar 1 00:00 (1), Mar 1-9 (18), Mar 10 (5).
        assert_eq!(k.len(), 21 + 3 + 1 + 18 + 5);

        let p = Policy { within: Some("2y5m".parse().unwrap()), ..Default::default() };
        let k = kept(&cal, &p);
        assert_eq!(k.iter().next().map(String::as_str), Some("2021-10-11T06:00:00"));
        assert!(!k.contains("2021-10-10T23:59:59"));

        // Month arithmetic clamps: 2024-03-31 minus 1 month is 2024-02-29.
        let w: Within = "1m".parse().unwrap();
        assert_eq!(w.cutoff(t("2024-03-31T12:00:00Z"), &Utc), t("2024-02-29T12:00:00Z"));
        let w: Within = "1y".parse().unwrap();
        assert_eq!(w.cutoff(t("2024-02-29T12:00:00Z"), &Utc), t("2023-02-28T12:00:00Z"));
        let w: Within = "1w2d3h".parse().unwrap();
        assert_eq!(w.cutoff(t("2024-03-10T12:00:00Z"), &Utc), t("2024-03-01T09:00:00Z"));
    }

    #[test]
    fn within_parsing() {
        assert_eq!("30d".parse::<Within>().unwrap(), Within { days: 30, ..Default::default() });
        assert_eq!(
            "1y2m3w4d5h".parse::<Within>().unwrap(),
            Within { years: 1, months: 2, weeks: 3, days: 4, hours: 5 }
        );
        assert_eq!("2y5m".parse::<Within>().unwrap().to_string(), "2y5m");
        for bad in ["", "30", "d", "3x", "-1d", "1.5d", "99999999999d"] {
            assert!(bad.parse::<Within>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_year_month_decade_day_scheme_and_its_reasons() {
        let cal = calendar();
        let p = Policy { daily: 10, decades: 6, monthly: 12, yearly: 5, ..Default::default() };
        let it = items(&cal);
        let out = apply(&it, &p, GroupBy::default(), &Utc);
        let got: BTreeMap<String, String> = cal
            .iter()
            .enumerate()
            .filter(|(i, _)| out.keep(*i))
            .map(|(i, x)| (show(x), out.reasons[i].iter().map(Reason::label).collect::<Vec<_>>().join(" ")))
            .collect();
        let want: BTreeMap<String, String> = [
            ("2024-03-10T23:59:59", "Y M D10 D"),
            ("2024-03-09T18:00:00", "D"),
            ("2024-03-08T18:00:00", "D"),
            ("2024-03-07T18:00:00", "D"),
            ("2024-03-06T18:00:00", "D"),
            ("2024-03-05T18:00:00", "D"),
            ("2024-03-04T18:00:00", "D"),
            ("2024-03-03T18:00:00", "D"),
            ("2024-03-02T18:00:00", "D"),
            ("2024-03-01T18:00:00", "D"),
            ("2024-02-29T23:59:59", "M D10"),
            ("2024-02-20T23:59:59", "D10"),
            ("2024-02-10T23:59:59", "D10"),
            ("2024-01-31T23:59:59", "M D10"),
            ("2024-01-20T23:59:59", "D10"),
            ("2023-12-31T23:59:59", "Y M"),
            ("2023-11-30T23:59:59", "M"),
            ("2023-10-31T23:59:59", "M"),
            ("2023-09-30T23:59:59", "M"),
            ("2023-08-31T23:59:59", "M"),
            ("2023-07-31T23:59:59", "M"),
            ("2023-06-30T23:59:59", "M"),
            ("2023-05-31T23:59:59", "M"),
            ("2023-04-30T23:59:59", "M"),
            ("2022-12-31T23:59:59", "Y"),
            ("2021-12-31T23:59:59", "Y"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
        assert_eq!(out.reasons.iter().filter(|r| r.is_empty()).count(), cal.len() - 26);
    }

    #[test]
    fn local_time_zones_move_period_boundaries() {
        let times = [t("2024-01-31T21:00:00Z"), t("2024-01-31T23:00:00Z"), t("2024-02-01T03:00:00Z")];
        let p = Policy { monthly: 2, ..Default::default() };
        assert_eq!(kept_in(&times, &p, &Utc), set(&["2024-01-31T23:00:00", "2024-02-01T03:00:00"]));
        // UTC+2: the 23:00 snapshot is already February 1st there.
        let east = FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(kept_in(&times, &p, &east), set(&["2024-01-31T21:00:00", "2024-02-01T03:00:00"]));
        // UTC-5: all three are still January 31st.
        let west = FixedOffset::west_opt(5 * 3600).unwrap();
        assert_eq!(kept_in(&times, &p, &west), set(&["2024-02-01T03:00:00"]));

        let times = [t("2024-01-10T23:30:00Z"), t("2024-01-11T00:30:00Z")];
        let p = Policy { decades: 2, ..Default::default() };
        assert_eq!(kept_in(&times, &p, &Utc).len(), 2);
        let west1 = FixedOffset::west_opt(3600).unwrap();
        assert_eq!(kept_in(&times, &p, &west1), set(&["2024-01-11T00:30:00"]));
        // The leap day at 23:30 UTC is March 1st in UTC+1.
        let times = [t("2024-02-29T23:30:00Z"), t("2024-03-01T06:00:00Z")];
        let p = Policy { monthly: 5, ..Default::default() };
        assert_eq!(kept_in(&times, &p, &Utc).len(), 2);
        assert_eq!(kept_in(&times, &p, &FixedOffset::east_opt(3600).unwrap()), set(&["2024-03-01T06:00:00"]));
    }

    #[test]
    fn groups_are_independent_and_tags_keep() {
        fn mk<'a>(time: &str, host: &'a str, paths: &'a [String], tags: &'a [String]) -> Item<'a> {
            Item { time: t(time), host, paths, tags }
        }
        let web: &[String] = &["/var/www".into()];
        let mail: &[String] = &["/var/mail".into()];
        let keep: &[String] = &["keep".into(), "monthly".into()];
        let none: &[String] = &[];
        let items = [
            mk("2024-01-01T00:00:00Z", "a", web, keep),
            mk("2024-01-02T00:00:00Z", "a", web, none),
            mk("2024-01-03T00:00:00Z", "a", web, none),
            mk("2024-01-01T00:00:00Z", "a", mail, none),
            mk("2024-01-02T00:00:00Z", "a", mail, none),
            mk("2024-01-01T00:00:00Z", "b", web, none),
        ];
        let p = Policy { last: 1, ..Default::default() };
        let out = apply(&items, &p, GroupBy::default(), &Utc);
        assert_eq!(out.groups.len(), 3);
        let keep_idx: Vec<usize> = (0..items.len()).filter(|&i| out.keep(i)).collect();
        assert_eq!(keep_idx, vec![2, 4, 5]);
        // One group per host: a's newest is one of the two Jan 3/Jan 2 ones.
        let out = apply(&items, &p, "host".parse().unwrap(), &Utc);
        assert_eq!(out.groups.len(), 2);
        assert_eq!((0..items.len()).filter(|&i| out.keep(i)).collect::<Vec<_>>(), vec![2, 5]);
        // Everything in one group.
        let out = apply(&items, &p, "".parse().unwrap(), &Utc);
        assert_eq!(out.groups.len(), 1);
        assert_eq!(out.groups[0].key.to_string(), "all snapshots");
        assert_eq!((0..items.len()).filter(|&i| out.keep(i)).collect::<Vec<_>>(), vec![2]);
        // --keep-tag keep,monthly: all of the tags must be present.
        let p = Policy { tags: vec![vec!["keep".into(), "monthly".into()]], ..Default::default() };
        let out = apply(&items, &p, GroupBy::default(), &Utc);
        assert_eq!(out.reasons[0], vec![Reason::Tag("keep,monthly".into())]);
        assert_eq!((0..items.len()).filter(|&i| out.keep(i)).count(), 1);
        let p = Policy { tags: vec![vec!["keep".into(), "weekly".into()]], ..Default::default() };
        assert_eq!((0..items.len()).filter(|&i| apply(&items, &p, GroupBy::default(), &Utc).keep(i)).count(), 0);
        // Grouping by tags separates the tagged snapshot.
        let out = apply(&items, &Policy { last: 1, ..Default::default() }, "host,paths,tags".parse().unwrap(), &Utc);
        assert_eq!(out.groups.len(), 4);
        assert!(out.keep(0));
        assert!("host,colour".parse::<GroupBy>().is_err());
    }

    #[test]
    fn equal_times_and_empty_policy() {
        let same = [t("2024-01-01T00:00:00Z"), t("2024-01-01T00:00:00Z")];
        let p = Policy { last: 1, ..Default::default() };
        let out = apply(&items(&same), &p, GroupBy::default(), &Utc);
        // The later input counts as newer.
        assert!(!out.keep(0) && out.keep(1));
        assert!(Policy::default().is_empty());
        assert!(!p.is_empty());
        let out = apply(&items(&same), &Policy::default(), GroupBy::default(), &Utc);
        assert!(!out.keep(0) && !out.keep(1));
    }
}
