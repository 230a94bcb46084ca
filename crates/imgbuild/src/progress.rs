//! Progress on a terminal: one line naming the current stage with its elapsed time and, while
//! packages download, layers are written or blobs are pushed, a bar of bytes with rate and ETA. Off a terminal, or with `--quiet`,
//! nothing is drawn: the (timestamped) log lines tell the same story, and CI logs stay free of
//! control characters.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgbuild_pipeline::{ByteCounter, Observer, Stage};
use indicatif::{ProgressBar, ProgressStyle};

/// The bar being drawn, if any: log lines are printed "around" it (see [`LogWriter`]).
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Whether progress is drawn: stderr is a terminal and the user did not ask for quiet.
pub fn enabled(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// The build's progress line.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A progress line, drawn only if `draw` (see [`enabled`]).
    pub fn new(draw: bool) -> Self {
        let bar = draw.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(120));
            *ACTIVE.lock().expect("progress lock") = Some(bar.clone());
            bar
        });
        Self { bar }
    }

    /// Names the stage now running.
    pub fn stage(&self, message: &'static str) {
        if let Some(bar) = &self.bar {
            bar.set_style(spinner_style());
            bar.set_message(message);
        }
    }

    /// Turns the line into a bytes bar until the returned guard is dropped. `sources` are
    /// `(label, counter)` in the order they start (downloads, then layer writing, …); the bar
    /// follows the last one that has a total, so it moves on as the build does.
    pub fn bytes(&self, sources: Vec<(&'static str, Counter)>) -> Option<BytesBar> {
        let bar = self.bar.clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (bar, stop) = (bar.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut showing = "";
                while !stop.load(Ordering::Relaxed) {
                    let current = sources
                        .iter()
                        .rev()
                        .map(|(what, counter)| (*what, counter()))
                        .find(|(_, (_, total))| *total > 0);
                    if let Some((what, (done, total))) = current {
                        if showing != what {
                            bar.set_style(
                                ProgressStyle::with_template(&format!(
                                    "{{spinner}} {what} {{bar:30}} {{bytes}}/{{total_bytes}} \
                                     {{bytes_per_sec}} ETA {{eta}}"
                                ))
                                .expect("valid template"),
                            );
                            bar.reset_elapsed();
                            showing = what;
                        }
                        bar.set_length(total);
                        bar.set_position(done);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Some(BytesBar {
            stop,
            thread: Some(thread),
        })
    }
}

/// A byte counter to draw: `(done, total)` now.
pub type Counter = Box<dyn Fn() -> (u64, u64) + Send>;

/// The pipeline's [`Observer`] drawn as the progress line: the stage's name, then a bytes bar
/// over its counters.
pub struct ProgressObserver {
    /// Until the build finishes.
    progress: Mutex<Option<(Progress, Option<BytesBar>)>>,
}

impl ProgressObserver {
    pub fn new(draw: bool) -> Self {
        Self {
            progress: Mutex::new(Some((Progress::new(draw), None))),
        }
    }
}

impl Observer for ProgressObserver {
    fn stage(&self, stage: Stage, counters: &[ByteCounter]) {
        let mut guard = self.progress.lock().expect("progress lock");
        let Some((progress, bar)) = guard.as_mut() else {
            return;
        };
        *bar = None;
        progress.stage(stage.describe());
        if !counters.is_empty() {
            let sources = counters
                .iter()
                .map(|c| {
                    let c = c.clone();
                    (c.label, Box::new(move || c.snapshot()) as Counter)
                })
                .collect();
            *bar = progress.bytes(sources);
        }
    }

    fn finished(&self) {
        // The bar stops, then the line is cleared.
        if let Some((progress, bar)) = self.progress.lock().expect("progress lock").take() {
            drop(bar);
            drop(progress);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            *ACTIVE.lock().expect("progress lock") = None;
            bar.finish_and_clear();
        }
    }
}

/// Keeps a bytes bar updated; stops on drop.
pub struct BytesBar {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for BytesBar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template")
}

/// stderr for log lines: while a bar is drawn, the line is printed with the bar cleared and
/// redrawn after it, so the two never garble each other.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.lock().expect("progress lock").clone();
        match active {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
