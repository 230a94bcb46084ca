//! The `imgbuild` command: parses arguments, runs the stages, renders errors.

mod args;
mod commands;
mod hints;
mod printer;
mod progress;
mod settings;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use args::{Cli, Command};

fn main() -> ExitCode {
    tune_allocator();
    size_link_pool();
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "info,imgbuild=debug",
        (false, _) => "debug",
    };
    // rattler logs routine retries and cache misses at info/warn; keep its noise down unless
    // asked. The platform certificate verifier logs every refusal as an error, also the ones
    // imgbuild then accepts (a trusted self-signed certificate, see imgbuild-oci's
    // registry/tls.rs); a refusal that stands is in imgbuild's own error message.
    let filter = EnvFilter::try_from_env("IMGBUILD_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},rattler=warn,rattler_repodata_gateway=warn,rattler_cache=warn,\
             rustls_platform_verifier=off"
        ))
    });
    // On a terminal: short lines under the progress bar. Elsewhere (CI logs): plain,
    // timestamped lines without colour.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = cli.log_format == args::LogFormat::Json;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::LogWriter)
        .with_ansi(terminal && !json)
        .with_target(false);
    if json {
        logs.json().init();
    } else if terminal {
        logs.without_time().init();
    } else {
        logs.init();
    }
    // A progress line only for a person at a terminal.
    let draw_progress = !json && progress::enabled(cli.quiet);
    let output = printer::Output {
        quiet: cli.quiet,
        draw_progress,
        json_logs: json,
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Build(args)) => runtime.block_on(commands::build::run(*args, output)),
        Some(Command::Push(args)) => runtime.block_on(commands::push::run(args, draw_progress)),
        Some(Command::Lock(args)) => runtime.block_on(commands::lock::run(args)),
        Some(Command::Inspect(args)) => runtime.block_on(commands::inspect::run_inspect(args)),
        Some(Command::Compare(args)) => runtime.block_on(commands::inspect::run_compare(args)),
        Some(Command::Index(args)) => runtime.block_on(commands::index::run(args)),
        Some(Command::Login(args)) => runtime.block_on(commands::login::login(args)),
        Some(Command::Logout(args)) => commands::login::logout(args),
        Some(Command::Cache(args::CacheCommand::Prune(args))) => {
            runtime.block_on(commands::cache::prune(args))
        }
        None => runtime.block_on(commands::build::run(cli.build, output)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", render(&err));
            if let Some(hint) = hints::hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// rattler links packages on rayon's global pool, and its link jobs mostly wait on the file
/// system (hard links, a symlink probe and an `fsync` of the conda-meta record per package), so
/// one thread per core leaves the cores idle while they wait: with four per core, a 200-package
/// install into a fresh staging root takes 0.27 s instead of 0.36 s. Compression has a pool of
/// its own (imgbuild-layer's `pargz.rs`), so this does not oversubscribe it. `RAYON_NUM_THREADS`
/// still wins.
fn size_link_pool() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Fails only if the pool was already built, which nothing does before main.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(4 * cores)
        .build_global();
}

/// Layer writing allocates and frees 1 MiB blocks by the thousand on several threads. glibc
/// serves those from fresh mmaps (or trims freed heap with madvise), so every block costs 256
/// page faults to fault in and zero again. Keeping blocks in the heap and not trimming it lets
/// them be reused.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called first thing, before any threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// `--cache-dir`, or the user's cache directory (`~/.cache/imgbuild`). The pipeline's
/// `open_cache` creates it and makes it absolute.
pub(crate) fn resolve_cache_dir(
    flag: Option<&std::path::Path>,
) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    match flag {
        Some(dir) => Ok(dir.to_path_buf()),
        None => Ok(dirs::cache_dir()
            .context("cannot determine a cache directory; pass --cache-dir")?
            .join("imgbuild")),
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the message already
/// holds (library errors often include their source in their own message).
fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    sanitize(&out)
}

/// Errors can quote raw bytes (a tar header in an extraction error): drop control characters
/// and squeeze the padding, so the terminal gets text.
fn sanitize(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let (mut spaces, mut line_start) = (0, true);
    for c in message.chars() {
        if c == '\n' {
            (spaces, line_start) = (0, true);
            out.push(c);
            continue;
        }
        if c.is_control() {
            continue;
        }
        if c == ' ' {
            spaces += 1;
            // Indentation stays (the solver's explanation is a tree); runs elsewhere shrink.
            if spaces > 1 && !line_start {
                continue;
            }
        } else {
            (spaces, line_start) = (0, false);
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sanitize_keeps_indentation_and_drops_raw_bytes() {
        let raw =
            "failed: lib/libz.so.1\0\0   0000666   0000000\u{1}\n  └─ zlib 1.2.11\n     └─ libgcc";
        assert_eq!(
            super::sanitize(raw),
            "failed: lib/libz.so.1 0000666 0000000\n  └─ zlib 1.2.11\n     └─ libgcc"
        );
    }
}
