//! Big packages' layers, written while the rest of the environment is still being installed.
//!
//! Linking a CUDA/pytorch environment into a fresh staging root is a few tenths of a second of
//! mostly kernel work (inodes, directories, hard links) on about one core, and layers could
//! only start once it was over: on 2 cores, one core idled for that long. Yet a big package's
//! layer depends only on that package's files, which are final as soon as rattler has linked
//! it. So as each package is reported linked, [`EarlyLayers::linked`] reads its conda-meta
//! record and, if the package is big enough to get a layer of its own (the plan's threshold),
//! writes that layer right away with the same code as every other layer.
//!
//! The result is only a proposal. [`write_layers_with`](crate::write::write_layers_with) uses
//! it for a planned layer only when the plan, made once the whole environment is there, has a
//! layer with exactly the same owners, paths and recipe, and every file in it still has the
//! inode, size, mode and change time it had when the early write began (a later package that
//! clobbered a path, or a pip step that replaced a file, would show there). Otherwise that
//! layer is written again. So the image never depends on timing; at worst some work is done
//! twice.

use std::collections::HashMap;
use std::ops::DerefMut;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use imgbuild_oci::BlobStore;
use rattler_conda_types::PrefixRecord;

use crate::ownership::{conda_owner, read_record};
use crate::plan::{layer_of, PlannedLayer};
use crate::write::{write_layer_unremembered, Prewritten, WriteOptions, WrittenLayer};

/// Writes layers of big packages as they are linked (see the module docs).
pub struct EarlyLayers {
    shared: Arc<Shared>,
    running: Running,
}

/// Early writes by package label. Dropped, it waits for them (a build that failed before using
/// them), so no thread outlives the staging root it reads.
#[derive(Default)]
struct Running(Mutex<HashMap<String, JoinHandle<Option<Early>>>>);

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<Option<Early>>>> {
        self.0
            .lock()
            .expect("no early writer panicked holding the lock")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for (_, handle) in std::mem::take(self.lock().deref_mut()) {
            let _ = handle.join();
        }
    }
}

struct Shared {
    /// The python label the plan will see (part of every recipe).
    python: String,
    /// Packages above this many installed bytes get a layer of their own (the plan's)...
    threshold: u64,
    /// ...the `max_big` largest of them, that is; the rest join the groups.
    max_big: usize,
    /// Labels of the packages that will get a layer of their own, by installed size.
    chosen: std::sync::OnceLock<std::collections::HashSet<String>>,
    options: WriteOptions,
    store: BlobStore,
    /// Free writer slots.
    slots: (Mutex<usize>, Condvar),
}

/// A layer written early, and the state of its files when it was.
pub(crate) struct Early {
    layer: PlannedLayer,
    stamps: Vec<Option<Stamp>>,
    root: PathBuf,
    written: WrittenLayer,
}

/// What would change if a file were replaced or modified.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = path.symlink_metadata().ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mode: m.mode(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

impl EarlyLayers {
    /// `python` is the label (`name-version-build`) of the environment's python record, or
    /// empty; `threshold` the plan's `big_package_threshold` and `max_big` its
    /// [`max_big_layers`](crate::PlanOptions::max_big_layers).
    pub fn new(
        python: String,
        threshold: u64,
        max_big: usize,
        options: WriteOptions,
        store: BlobStore,
    ) -> Self {
        // rattler does not link the biggest packages first, so a slot count as small as
        // write_layers' writer count could park the biggest layer behind smaller ones and leave
        // it to run alone at the end; twice that keeps memory bounded (~20 MiB a writer).
        let writers = 2 * (std::thread::available_parallelism().map_or(1, |n| n.get()) + 1);
        Self {
            shared: Arc::new(Shared {
                python,
                threshold,
                max_big,
                chosen: std::sync::OnceLock::new(),
                options,
                store,
                slots: (Mutex::new(writers), Condvar::new()),
            }),
            running: Running::default(),
        }
    }

    /// At most `n` early layers written at once (each holds a few MiB of buffers).
    pub fn with_max_writers(self, n: usize) -> Self {
        *self.shared.slots.0.lock().expect("lock not poisoned") = n.max(1);
        self
    }

    /// The package `label` (`name-version-build`, its conda-meta file's stem) is now linked into
    /// `root`; `sizes` are the installed sizes of all the environment's packages by label. A
    /// package the plan will give a layer of its own gets that layer started; the call itself
    /// does not wait for it.
    pub fn linked(&self, root: &Path, label: &str, sizes: &HashMap<String, u64>) {
        // The plan's choice, from the packages' own size lists: over the threshold, and among
        // the largest the layer budget leaves room for (a layer written early for a package
        // that then joins a group would be work thrown away).
        let (threshold, max_big) = (self.shared.threshold, self.shared.max_big);
        let chosen = self.shared.chosen.get_or_init(|| {
            let mut big: Vec<(&String, &u64)> =
                sizes.iter().filter(|(_, &s)| s > threshold).collect();
            big.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            big.into_iter()
                .take(max_big)
                .map(|(l, _)| l.clone())
                .collect()
        });
        if !chosen.contains(label) {
            return;
        }
        // The record is read now, while it is as rattler wrote it: once linking is over, the
        // builder rewrites conda-meta in place (without the host's paths), and a thread that
        // started late could read a half-written file.
        let record_path = root.join("conda-meta").join(format!("{label}.json"));
        let record = match read_record(&record_path) {
            Ok(record) => record,
            Err(e) => {
                tracing::debug!("no early layer for {label}: {e}");
                return;
            }
        };
        let shared = Arc::clone(&self.shared);
        let (root, name) = (root.to_path_buf(), label.to_string());
        let spawned = std::thread::Builder::new()
            .name("early-layer".into())
            .spawn(move || shared.write(&root, &name, &record, &record_path));
        match spawned {
            Ok(handle) => {
                self.running.lock().insert(label.to_string(), handle);
            }
            // No thread, no early layer: it is written with the others.
            Err(e) => tracing::debug!("no early layer for {label}: {e}"),
        }
    }

    /// The layers started so far, for `write_layers_with` (call once linking is over).
    pub fn finish(&self) -> StartedLayers {
        let running = std::mem::take(self.running.lock().deref_mut());
        StartedLayers {
            running: Running(Mutex::new(running)),
        }
    }
}

impl Shared {
    fn write(
        &self,
        root: &Path,
        label: &str,
        record: &PrefixRecord,
        record_path: &Path,
    ) -> Option<Early> {
        let _slot = self.slot();
        let owner = match conda_owner(root, record, record_path) {
            Ok(owner) => owner,
            Err(e) => {
                tracing::debug!("no early layer for {label}: {e}");
                return None;
            }
        };
        if owner.size <= self.threshold {
            return None;
        }
        let layer = layer_of(&[&owner], &self.python);
        let stamps = layer.paths.iter().map(|p| stamp(&root.join(p))).collect();
        if let Some(p) = &self.options.progress {
            p.add_total(layer.size);
        }
        tracing::debug!("writing the layer of {label} early");
        match write_layer_unremembered(root, &layer, &self.options, &self.store) {
            Ok(written) => Some(Early {
                layer,
                stamps,
                root: root.to_path_buf(),
                written,
            }),
            Err(e) => {
                // Written again with the others, which reports the error if it persists.
                tracing::debug!("early layer for {label} failed: {e}");
                None
            }
        }
    }

    fn slot(&self) -> SlotGuard<'_> {
        let (count, freed) = &self.slots;
        let mut free = count.lock().expect("lock not poisoned");
        while *free == 0 {
            free = freed.wait(free).expect("lock not poisoned");
        }
        *free -= 1;
        SlotGuard(&self.slots)
    }
}

struct SlotGuard<'a>(&'a (Mutex<usize>, Condvar));

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let (count, freed) = self.0;
        *count.lock().expect("lock not poisoned") += 1;
        freed.notify_one();
    }
}

/// Layers written early, waiting to be matched with the plan.
#[derive(Default)]
pub struct StartedLayers {
    running: Running,
}

impl Prewritten for StartedLayers {
    fn has(&self, layer: &PlannedLayer) -> bool {
        match layer.owners.as_slice() {
            [only] => self.running.lock().contains_key(only.to_string().as_str()),
            _ => false,
        }
    }

    /// See the module docs for what "exactly" means.
    fn take(&self, root: &Path, layer: &PlannedLayer) -> Option<WrittenLayer> {
        let [only] = layer.owners.as_slice() else {
            return None;
        };
        let handle = self.running.lock().remove(only.to_string().as_str())?;
        let early = handle.join().ok()??;
        let mismatch = if early.root != root {
            Some("another staging root".to_string())
        } else if early.layer.owners != layer.owners || early.layer.recipe != layer.recipe {
            Some("other owners or recipe".to_string())
        } else if early.layer.paths != layer.paths {
            Some("other paths (another package claims one of them)".to_string())
        } else {
            early
                .layer
                .paths
                .iter()
                .zip(&early.stamps)
                .find(|(p, before)| before.is_none() || stamp(&root.join(p)) != **before)
                .map(|(p, _)| format!("{} changed since", p.display()))
        };
        match mismatch {
            None => Some(early.written),
            Some(why) => {
                tracing::debug!("early layer for {only} not taken ({why}); writing it again");
                None
            }
        }
    }
}
