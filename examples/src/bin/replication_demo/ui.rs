//! Printing: section headings, progress bars fed by agent progress events, sizes and rates.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use trove_guest_core::{Phase, ProgressEvent};

pub(crate) fn heading(n: u32, title: &str) {
    println!("\n== {n}. {title}");
}

pub(crate) fn indent(text: &str) {
    for line in text.lines() {
        println!("   {line}");
    }
}

pub(crate) fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub(crate) fn rate(n: u64, d: Duration) -> String {
    let s = d.as_secs_f64().max(1e-3);
    format!("{}/s", indicatif::HumanBytes((n as f64 / s) as u64))
}

/// A progress bar for one long call, fed with the agent's progress events.
pub(crate) struct CallBar {
    bar: ProgressBar,
    multi: MultiProgress,
}

impl CallBar {
    pub(crate) fn new(multi: &MultiProgress, label: &str) -> Self {
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template(
                "   {spinner} {prefix:<22} {msg:<40} {bytes:>10} {bytes_per_sec:>12} {elapsed}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        CallBar {
            bar,
            multi: multi.clone(),
        }
    }

    pub(crate) fn event(&self, e: &ProgressEvent) {
        if !e.message.is_empty() {
            let mut msg = format!("{}: {}", phase_name(e.phase), e.message);
            if msg.chars().count() > 40 {
                msg = msg.chars().take(39).collect::<String>() + "…";
            }
            self.bar.set_message(msg);
        }
        if e.done > 0 || e.total.is_some() {
            if let Some(t) = e.total
                && t >= e.done
            {
                self.bar.set_style(
                        ProgressStyle::with_template(
                            "   {spinner} {prefix:<22} {msg:<40} [{bar:24}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                self.bar.set_length(t);
            }
            self.bar.set_position(e.done);
        }
    }

    pub(crate) fn finish(&self, summary: &str) {
        let line = format!("   ✓ {:<22} {summary}", self.bar.prefix());
        self.bar.finish_and_clear();
        // Above the other bars still running on a terminal; plainly when bars are hidden.
        if self.multi.is_hidden() {
            println!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    pub(crate) fn fail(&self) {
        self.bar.abandon();
    }
}

pub(crate) fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Prepare => "prepare",
        Phase::Backup => "backup",
        Phase::Restore => "restore",
        Phase::Apply => "apply",
        Phase::Start => "start",
        Phase::CatchUp => "catch-up",
        Phase::Done => "done",
        _ => "working",
    }
}

/// A bar counting rows loaded.
pub(crate) fn rows_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("   loading  [{bar:30}] {pos}/{len} rows {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
