//! The class report as one self-contained HTML page: the score distribution overall and per skill
//! (a ten-bucket histogram each), the checks most often failed, and every submission. Same style
//! sheet and Content-Security-Policy as the learner's report; every text from a run is escaped.

use super::class::{ClassReport, Distribution, BUCKETS};
use crate::report::html::{escape, CSP, STYLE};

/// Every element the page is made of (a browser test asserts the DOM holds no other).
pub const ELEMENTS: &[&str] = &[
    "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "dl", "dt", "dd",
    "div", "p", "section", "span", "table", "thead", "tbody", "tr", "th", "td", "code", "a",
];

/// How many of the most failed checks the page lists (the JSON has all of them).
const MOST_FAILED: usize = 15;

const CLASS_STYLE: &str = "
.hist { display: grid; grid-template-columns: repeat(10, 1fr); gap: 4px; align-items: end;
  height: 90px; margin: 6px 0 2px; }
.hist .col { background: var(--hint); border-radius: 3px 3px 0 0; min-height: 1px; }
.hist .col.empty { background: var(--line); }
.hist-axis { display: grid; grid-template-columns: repeat(10, 1fr); gap: 4px;
  color: var(--muted); font-size: 0.75em; text-align: center; }
.dist { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; margin: 10px 0;
  background: var(--panel); }
.dist h3 { margin: 0 0 4px; }
.dists { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 0 14px; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.v-pass { color: var(--pass); } .v-fail { color: var(--fail); }
.v-error { color: var(--error); } .v-unusable { color: var(--skip); }
";

/// Renders the page, ending with a newline.
pub fn render(class: &ClassReport) -> String {
    let mut h = String::with_capacity(16 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
    ));
    h.push_str("<meta name=\"referrer\" content=\"no-referrer\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str(&format!(
        "<title>{}</title>\n",
        escape(&format!(
            "grader batch: {} submissions, median {:.1}%",
            class.counts.submissions, class.score.median
        ))
    ));
    h.push_str(&format!("<style>\n{STYLE}{CLASS_STYLE}</style>\n</head>\n"));
    h.push_str("<body>\n<main>\n");
    h.push_str(&format!(
        "<h1>Class report: {}</h1>\n",
        escape(&class.exercises.join(", "))
    ));
    let c = &class.counts;
    h.push_str(&format!(
        "<dl class=\"meta\"><div><dt>submissions</dt><dd id=\"count-submissions\">{}</dd></div>\
         <div><dt>pass</dt><dd id=\"count-pass\">{}</dd></div>\
         <div><dt>fail</dt><dd id=\"count-fail\">{}</dd></div>\
         <div><dt>error</dt><dd id=\"count-error\">{}</dd></div>\
         <div><dt>unusable</dt><dd id=\"count-unusable\">{}</dd></div>\
         <div><dt>seed</dt><dd>{}</dd></div><div><dt>runtime</dt><dd>{}</dd></div>\
         <div><dt>grader</dt><dd>{}</dd></div></dl>\n",
        c.submissions,
        c.pass,
        c.fail,
        c.error,
        c.unusable,
        class.seed,
        escape(&class.runtime),
        escape(&class.grader_version)
    ));
    if c.error > 0 {
        h.push_str(&format!(
            "<p class=\"note\">{} submission(s) could not be graded because of the grader or its \
             infrastructure (not the students' fault); they are left out of the distributions \
             and graded again by the next run.</p>\n",
            c.error
        ));
    }
    h.push_str(
        "<section id=\"distribution\">\n<h2>Score distribution</h2>\n<div class=\"dists\">\n",
    );
    distribution(&mut h, "overall", "Overall", &class.score);
    for skill in &class.skills {
        distribution(
            &mut h,
            &format!("skill-{}", skill.id),
            &skill.title,
            &skill.distribution,
        );
    }
    h.push_str("</div>\n</section>\n");
    most_failed(&mut h, class);
    submissions(&mut h, class);
    h.push_str("</main>\n</body>\n</html>\n");
    crate::report::defuse_workflow_commands(&h)
}

fn distribution(h: &mut String, id: &str, title: &str, d: &Distribution) {
    let tallest = d.histogram.iter().copied().max().unwrap_or(0).max(1);
    h.push_str(&format!(
        "<div class=\"dist\" id=\"{}\"><h3>{}</h3><p class=\"note\">{} scored · median {:.1}% · \
         mean {:.1}% · min {:.1}% · max {:.1}%</p>\n<div class=\"hist\" role=\"img\" \
         aria-label=\"submissions per ten-point bucket: {}\">",
        escape(id),
        escape(title),
        d.scored,
        d.median,
        d.mean,
        d.min,
        d.max,
        d.histogram
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (bucket, count) in d.histogram.iter().enumerate() {
        let height = f64::from(*count) / f64::from(tallest) * 100.0;
        let upper = if bucket == BUCKETS - 1 { "100]" } else { ")" };
        h.push_str(&format!(
            "<span class=\"col{}\" style=\"height: {height:.0}%\" title=\"[{}, {}{upper}: {count}\" \
             data-count=\"{count}\"></span>",
            if *count == 0 { " empty" } else { "" },
            bucket * 10,
            if bucket == BUCKETS - 1 {
                String::new()
            } else {
                (bucket * 10 + 10).to_string()
            }
        ));
    }
    h.push_str("</div>\n<div class=\"hist-axis\" aria-hidden=\"true\">");
    for bucket in 0..BUCKETS {
        h.push_str(&format!("<span>{}</span>", bucket * 10));
    }
    h.push_str("</div></div>\n");
}

fn most_failed(h: &mut String, class: &ClassReport) {
    h.push_str("<section id=\"most-failed\">\n<h2>Checks most often failed</h2>\n");
    let failed: Vec<_> = class
        .checks
        .iter()
        .filter(|c| c.failed > 0)
        .take(MOST_FAILED)
        .collect();
    if failed.is_empty() {
        h.push_str("<p class=\"note\">No check failed.</p>\n</section>\n");
        return;
    }
    h.push_str(
        "<table><thead><tr><th>check</th><th class=\"num\">failed</th><th class=\"num\">skipped</th>\
         <th class=\"num\">passed</th></tr></thead><tbody>\n",
    );
    for c in failed {
        h.push_str(&format!(
            "<tr><td><code>{}</code> {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>\n",
            escape(&c.id),
            escape(&c.title),
            c.failed,
            c.skipped,
            c.passed
        ));
    }
    h.push_str("</tbody></table>\n</section>\n");
}

fn submissions(h: &mut String, class: &ClassReport) {
    h.push_str(
        "<section id=\"submissions\">\n<h2>Submissions</h2>\n<table><thead><tr>\
                <th>student</th><th>verdict</th><th class=\"num\">score</th>",
    );
    for skill in &class.skills {
        h.push_str(&format!("<th class=\"num\">{}</th>", escape(&skill.id)));
    }
    h.push_str("<th>note</th></tr></thead><tbody>\n");
    for row in &class.submissions {
        let student = match &row.report {
            Some(path) => format!("<a href=\"{}\">{}</a>", escape(path), escape(&row.student)),
            None => escape(&row.student),
        };
        let score = if row.verdict.scored() {
            format!(
                "{:.1}% <span class=\"of\">{}/{}</span>",
                row.percent, row.earned, row.possible
            )
        } else {
            "–".to_string()
        };
        h.push_str(&format!(
            "<tr id=\"student-{}\"><td>{student}</td><td class=\"v-{v}\">{v}</td>\
             <td class=\"num\">{score}</td>",
            escape(&row.student),
            v = row.verdict.as_str(),
        ));
        for skill in &class.skills {
            h.push_str(&format!(
                "<td class=\"num\">{}</td>",
                row.skills
                    .get(&skill.id)
                    .map(|p| format!("{p:.1}%"))
                    .unwrap_or_else(|| "–".into())
            ));
        }
        h.push_str(&format!(
            "<td>{}</td></tr>\n",
            escape(row.message.as_deref().unwrap_or(""))
        ));
    }
    h.push_str("</tbody></table>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_report_in_json_csv_and_html() {
        let class = crate::batch::fixtures::class_report();
        assert_eq!(class.counts.error, 1);
        // The error is left out of the distributions; the unusable counts as 0.
        assert_eq!(class.score.scored, 5);
        assert_eq!(class.checks[0].id, "idempotency/concurrent-duplicates");
        insta::assert_snapshot!("class-json", class.to_json());
        insta::assert_snapshot!("class-csv", class.to_csv());
        insta::assert_snapshot!("class-html", render(&class));
    }
}
