//! Renders what the pipeline reports: the digest and pushes on stdout (scripts read them),
//! the layer table and summary on stderr, or the same as JSON log events.

use imgbuild_oci::registry::{referrers_tag, ReferrersMode};
use imgbuild_pipeline::{human_bytes, BuildReport, IndexReport, Outputs, PushReport};

/// How the build talks to its user.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--quiet`: errors only.
    pub quiet: bool,
    /// A progress line on the terminal.
    pub draw_progress: bool,
    /// `--log-format json`: the summary is log events too.
    pub json_logs: bool,
}

/// Prints a finished build: for an index, its digest and each platform's, then each
/// platform's layers and summary.
pub fn print_build(report: &IndexReport, outputs: &Outputs, output: Output) {
    print_pushes(&report.pushes);
    println!("digest: {}", report.digest);
    let several = report.images.len() > 1;
    if several {
        for image in &report.images {
            println!("platform {}: {}", image.platform, image.manifest_digest);
        }
    }
    for image in &report.images {
        if several && !output.json_logs {
            eprintln!("{}:", image.platform);
        }
        print_image(image, outputs, output);
    }
    if several {
        let platforms: Vec<String> = report
            .images
            .iter()
            .map(|i| i.platform.to_string())
            .collect();
        if output.json_logs {
            tracing::info!(
                digest = %report.digest,
                platforms = %platforms.join(","),
                seconds = report.elapsed.as_secs_f64(),
                "index finished"
            );
        } else {
            eprintln!(
                "built an index of {} platforms ({}) in {:.1?}",
                platforms.len(),
                platforms.join(", "),
                report.elapsed
            );
        }
    }
}

fn print_image(report: &BuildReport, outputs: &Outputs, output: Output) {
    let stages = stages_line(report);
    let platform = report.platform.to_string();
    if output.json_logs {
        // CI reads these: one object per layer, then the summary, with numbers as numbers.
        for (i, l) in report.layers.iter().enumerate() {
            tracing::info!(
                platform,
                layer = i + 1,
                digest = %l.digest,
                size = l.size,
                holds = %l.holds(),
                how = l.origin.as_str(),
                "layer"
            );
        }
        tracing::info!(
            platform,
            digest = %report.manifest_digest,
            packages = report.conda_packages + report.pip_packages,
            conda_packages = report.conda_packages,
            pip_packages = report.pip_packages,
            layers = report.layers.len(),
            compressed_bytes = report.compressed_bytes(),
            deduplicated_bytes = report.deduplicated_bytes(),
            seconds = report.elapsed.as_secs_f64(),
            stages = %stages,
            "build finished"
        );
        return;
    }
    if !output.quiet {
        for (i, l) in report.layers.iter().enumerate() {
            eprintln!(
                "  layer {:>2}  {}  {:>10}  {}",
                i + 1,
                &l.digest.to_string()[..19],
                human_bytes(l.size),
                l.holds()
            );
        }
    }
    let saved = report.deduplicated_bytes();
    eprintln!(
        "built {} into {} layers ({} compressed{}) in {:.1?}{}{}",
        package_counts(report.conda_packages, report.pip_packages),
        report.layers.len(),
        human_bytes(report.compressed_bytes()),
        if saved > 0 {
            format!(", {} deduplicated", human_bytes(saved))
        } else {
            String::new()
        },
        report.elapsed,
        outputs
            .layout
            .as_ref()
            .map(|o| format!("; layout {}", o.display()))
            .unwrap_or_default(),
        outputs
            .archive
            .as_ref()
            .map(|a| format!("; archive {}", a.display()))
            .unwrap_or_default(),
    );
    eprintln!("time: {stages}");
}

/// One line per push and per attached artifact, on stdout.
pub fn print_pushes(pushes: &[PushReport]) {
    for p in pushes {
        let s = &p.summary;
        println!(
            "pushed {} {}: uploaded {} blobs ({} bytes), mounted {} ({} bytes), already present {} ({} bytes)",
            s.reference,
            s.manifest_digest,
            s.uploaded.blobs,
            s.uploaded.bytes,
            s.mounted.blobs,
            s.mounted.bytes,
            s.present.blobs,
            s.present.bytes
        );
        for a in &p.attached {
            let to = if a.subject == s.manifest_digest {
                s.reference.to_string()
            } else {
                format!(
                    "{}/{}@{}",
                    s.reference.registry, s.reference.repository, a.subject
                )
            };
            println!(
                "attached {} {} to {to} ({})",
                a.artifact_type,
                a.digest,
                match a.mode {
                    ReferrersMode::Api => "referrers API".to_string(),
                    ReferrersMode::TagSchema =>
                        format!("referrers tag {}", referrers_tag(&a.subject)),
                }
            );
        }
    }
}

/// `base 0.01s, resolve 0.20s, …`.
fn stages_line(report: &BuildReport) -> String {
    report
        .stages
        .iter()
        .map(|(name, d)| format!("{name} {:.2}s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `3 conda packages and 12 pip packages`, or `3 packages` without pip.
fn package_counts(conda: usize, pip: usize) -> String {
    let n =
        |count: usize, what: &str| format!("{count} {what}{}", if count == 1 { "" } else { "s" });
    if pip == 0 {
        n(conda, "package")
    } else {
        format!(
            "{} and {}",
            n(conda, "conda package"),
            n(pip, "pip package")
        )
    }
}
