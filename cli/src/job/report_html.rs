//! `arc status --html FILE`: one self-contained page (inline CSS and SVG;
//! no script, no external font or image, so it opens from a mail
//! attachment or an air-gapped share) with every job's last result and
//! age, and per job a chart of its duration (bars) and bytes added (line)
//! over its history, runs flagged as regressions in red. Several hosts'
//! reports make one page.

use super::status::{age, JobStatus, Report};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const W: f64 = 360.0;
const H: f64 = 80.0;

/// Duration bars and a bytes-added line for one job.
fn chart(j: &JobStatus) -> String {
    let label = format!("chart of {}: duration and bytes added of {} run(s)", j.job, j.history.len());
    if j.history.is_empty() {
        return format!(
            "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" width=\"{W}\" height=\"{H}\"><text x=\"8\" y=\"44\">no successful run yet</text></svg>",
            esc(&label)
        );
    }
    let n = j.history.len() as f64;
    let max_d = j.history.iter().map(|r| r.duration_s).fold(0.0f64, f64::max).max(0.001);
    let max_b = j.history.iter().map(|r| r.bytes_added).max().unwrap_or(0).max(1) as f64;
    let bw = W / n;
    let mut s = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">",
        esc(&label)
    );
    let mut points = Vec::new();
    for (i, r) in j.history.iter().enumerate() {
        let h = (r.duration_s / max_d * (H - 10.0)).max(1.0);
        let x = i as f64 * bw;
        let class = if r.regression { "bar slow" } else { "bar" };
        s.push_str(&format!(
            "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{} {:.1}s, {} added{}</title></rect>",
            x + 0.5,
            H - h,
            (bw - 1.0).max(0.5),
            r.time.format("%Y-%m-%d %H:%M"),
            r.duration_s,
            crate::ui::size(r.bytes_added),
            if r.regression { format!(" (slow: expected {:.1}s)", r.expected_s.unwrap_or(0.0)) } else { String::new() }
        ));
        points.push(format!("{:.1},{:.1}", x + bw / 2.0, H - 2.0 - r.bytes_added as f64 / max_b * (H - 12.0)));
    }
    s.push_str(&format!("<polyline class=\"added\" points=\"{}\"/>", points.join(" ")));
    s.push_str("</svg>");
    s
}

fn row(j: &JobStatus) -> String {
    let state = if j.error.is_some() {
        ("bad", "error".to_string())
    } else if j.stale {
        ("bad", "stale".to_string())
    } else if j.last_result == "failed" {
        ("warn", "last run failed".to_string())
    } else {
        ("ok", j.last_result.clone())
    };
    let slow = j.history.iter().filter(|r| r.regression).count();
    format!(
        "<tr class=\"job {}\" data-job=\"{}\"><td class=\"name\">{}</td><td>{}</td><td class=\"result\">{}</td>\
         <td class=\"age\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        state.0,
        esc(&j.job),
        esc(&j.job),
        esc(&j.kind),
        esc(&state.1),
        j.age_s.map(age).unwrap_or_else(|| "never".into()),
        j.max_age_s.map(|m| age(m as i64)).unwrap_or_else(|| "-".into()),
        crate::ui::size(j.size_bytes),
        chart(j),
        if slow > 0 { format!("{slow} slow run(s)") } else { String::new() },
    )
}

pub fn render(reports: &[Report]) -> String {
    let mut body = String::new();
    let (mut total, mut bad) = (0, 0);
    for r in reports {
        body.push_str(&format!(
            "<h2>{}</h2><p class=\"gen\">as of {} UTC</p>\n<table><thead><tr><th>Job</th><th>Kind</th><th>Result</th>\
             <th>Age</th><th>Max age</th><th>Size</th><th>Duration (bars) and bytes added (line)</th><th></th></tr></thead><tbody>\n",
            esc(&r.host),
            r.generated.format("%Y-%m-%d %H:%M")
        ));
        for j in &r.jobs {
            total += 1;
            if j.stale || j.error.is_some() {
                bad += 1;
            }
            body.push_str(&row(j));
        }
        body.push_str("</tbody></table>\n");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>arc backups: {bad} of {total} need attention</title>\
         <style>\nbody{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}}\
         tr.bad td.result{{color:#b00;font-weight:bold}}tr.warn td.result{{color:#b60}}tr.ok td.result{{color:#070}}\
         .bar{{fill:#7aa6d6}}.bar.slow{{fill:#d33}}.added{{fill:none;stroke:#333;stroke-width:1.5}}.gen{{color:#666}}\n</style></head>\
         <body><h1>arc backups: {bad} of {total} job(s) need attention</h1>\n{body}</body></html>\n"
    )
}
