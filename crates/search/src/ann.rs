//! The vector side: an HNSW graph (`hnsw_rs`) plus a flat copy of the vectors for exact search
//! over small readable sets. Keys are the index's `ann_id`s (dense, never reused).
//!
//! Persistence: [`Ann::save`] dumps the graph into a fresh `ann-<generation>` folder and then
//! atomically replaces `ann.json`, which names that folder and the highest `ann_id` it holds. The
//! full-text index is the source of truth: on open, ids present there but missing from the dump
//! (a crash between the two commits) are re-inserted from the stored vectors.

use std::path::{Path, PathBuf};

use hnsw_rs::prelude::*;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::{Result, SearchError};

/// 1 − dot product of unit vectors, clamped at 0 (anndists' DistDot asserts on rounding).
#[derive(Default, Clone, Copy)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// Dot product written so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

const M: usize = 16;
const EF_CONSTRUCTION: usize = 128;
const MAX_LAYER: usize = 16;

#[derive(Serialize, Deserialize)]
struct AnnManifest {
    folder: String,
    basename: String,
    points: usize,
}

/// Graph + flat vectors.
pub struct Ann {
    dim: usize,
    graph: RwLock<Hnsw<'static, f32, UnitDot>>,
    /// `ann_id * dim ..` → vector; `present[ann_id]` says whether the slot is filled.
    flat: RwLock<Flat>,
}

#[derive(Default)]
struct Flat {
    data: Vec<f32>,
    present: Vec<bool>,
    count: usize,
}

fn new_graph(capacity: usize) -> Hnsw<'static, f32, UnitDot> {
    Hnsw::new(M, capacity.max(1024), MAX_LAYER, EF_CONSTRUCTION, UnitDot)
}

impl Ann {
    /// An empty index.
    pub fn new(dim: usize) -> Self {
        Ann { dim, graph: RwLock::new(new_graph(10_000)), flat: RwLock::new(Flat::default()) }
    }

    /// Loads the dump named by `dir/ann.json`, or an empty index if there is none.
    pub fn load(dir: &Path, dim: usize) -> Result<Self> {
        let manifest_path = dir.join("ann.json");
        let raw = match std::fs::read(&manifest_path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ann::new(dim)),
            Err(e) => return Err(SearchError::io(&manifest_path, e)),
        };
        let m: AnnManifest = serde_json::from_slice(&raw).map_err(|e| SearchError::Corrupt {
            path: manifest_path.clone(),
            reason: e.to_string(),
        })?;
        if m.points == 0 {
            return Ok(Ann::new(dim));
        }
        let folder = dir.join(&m.folder);
        // hnsw_rs ties a reloaded graph's lifetime to its loader; the loader is small (paths and
        // options, no mmap) and is kept for the life of the process.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&folder, &m.basename)));
        let graph: Hnsw<'static, f32, UnitDot> = match io.load_hnsw::<f32, UnitDot>() {
            Ok(g) => g,
            Err(e) => {
                // The graph is derived data: the caller re-inserts every stored vector.
                tracing::warn!(folder = %folder.display(), error = %e, "unreadable vector graph dump; rebuilding");
                return Ok(Ann::new(dim));
            }
        };
        let ann = Ann { dim, graph: RwLock::new(graph), flat: RwLock::new(Flat::default()) };
        {
            let g = ann.graph.read();
            let mut flat = ann.flat.write();
            for p in g.get_point_indexation() {
                let v = p.get_v();
                if v.len() != dim {
                    return Err(SearchError::Corrupt { path: folder, reason: format!("vector of length {} in a {dim}-d index", v.len()) });
                }
                flat.put(p.get_origin_id(), v, dim);
            }
        }
        Ok(ann)
    }

    /// Number of vectors held (including ones whose chunks were removed since).
    pub fn len(&self) -> usize {
        self.flat.read().count
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: usize) -> bool {
        self.flat.read().present.get(id).copied().unwrap_or(false)
    }

    /// Inserts unit vectors under their ids (ids already present are skipped).
    pub fn insert(&self, items: &[(usize, Vec<f32>)]) {
        let fresh: Vec<&(usize, Vec<f32>)> = {
            let mut flat = self.flat.write();
            items
                .iter()
                .filter(|(id, v)| {
                    if flat.present.get(*id).copied().unwrap_or(false) {
                        false
                    } else {
                        flat.put(*id, v, self.dim);
                        true
                    }
                })
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        let data: Vec<(&[f32], usize)> = fresh.iter().map(|(id, v)| (v.as_slice(), *id)).collect();
        self.graph.read().parallel_insert_slice(&data);
    }

    /// Rebuilds the graph from the flat vectors of `live` ids only (drops removed chunks).
    pub fn rebuild(&self, live: &[usize]) {
        let flat_old = std::mem::take(&mut *self.flat.write());
        let mut flat = Flat::default();
        for &id in live {
            if flat_old.present.get(id).copied().unwrap_or(false) {
                flat.put(id, &flat_old.data[id * self.dim..(id + 1) * self.dim], self.dim);
            }
        }
        let graph = new_graph(live.len());
        let ids: Vec<usize> = live.iter().copied().filter(|&id| flat.present.get(id).copied().unwrap_or(false)).collect();
        let data: Vec<(&[f32], usize)> = ids.iter().map(|&id| (&flat.data[id * self.dim..(id + 1) * self.dim], id)).collect();
        graph.parallel_insert_slice(&data);
        *self.graph.write() = graph;
        *self.flat.write() = flat;
    }

    /// Top `n` ids by similarity among those `allowed` says yes to, through the graph.
    pub fn search_graph(&self, query: &[f32], n: usize, ef: usize, allowed: &dyn Fn(usize) -> bool) -> Vec<(usize, f32)> {
        let filter = |id: &usize| allowed(*id);
        let g = self.graph.read();
        if g.get_nb_point() == 0 {
            return Vec::new();
        }
        g.search_filter(query, n, ef.max(n), Some(&filter))
            .into_iter()
            .map(|nb| (nb.d_id, 1.0 - nb.distance))
            .collect()
    }

    /// Exact top `n` among `ids`.
    pub fn search_exact(&self, query: &[f32], n: usize, ids: &[usize]) -> Vec<(usize, f32)> {
        let flat = self.flat.read();
        let mut scored: Vec<(usize, f32)> = ids
            .iter()
            .filter(|&&id| flat.present.get(id).copied().unwrap_or(false))
            .map(|&id| (id, dot(query, &flat.data[id * self.dim..(id + 1) * self.dim])))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(n);
        scored
    }

    /// Dumps the graph into a new folder under `dir` and points `dir/ann.json` at it; older
    /// folders are removed afterwards.
    pub fn save(&self, dir: &Path, generation: u64) -> Result<()> {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let folder_name = format!("ann-{generation}-{stamp}");
        let folder = dir.join(&folder_name);
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).map_err(|e| SearchError::io(&folder, e))?;
        let points = self.graph.read().get_nb_point();
        let mut basename = "vectors".to_string();
        if points > 0 {
            basename = self
                .graph
                .read()
                .file_dump(&folder, "vectors")
                .map_err(|e| SearchError::Ann(format!("dumping to {}: {e}", folder.display())))?;
            for f in std::fs::read_dir(&folder).map_err(|e| SearchError::io(&folder, e))? {
                let p = f.map_err(|e| SearchError::io(&folder, e))?.path();
                sync_file(&p)?;
            }
        }
        sync_dir(&folder)?;
        let manifest = AnnManifest { folder: folder_name.clone(), basename, points };
        let body = serde_json::to_vec(&manifest).map_err(|e| SearchError::Ann(e.to_string()))?;
        atomic_write(&dir.join("ann.json"), &body)?;
        // best effort: old generations are garbage now
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("ann-") && name != folder_name {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}

impl Flat {
    fn put(&mut self, id: usize, v: &[f32], dim: usize) {
        if self.present.len() <= id {
            self.present.resize(id + 1, false);
            self.data.resize((id + 1) * dim, 0.0);
        }
        self.data[id * dim..(id + 1) * dim].copy_from_slice(v);
        if !self.present[id] {
            self.present[id] = true;
            self.count += 1;
        }
    }
}

fn sync_file(p: &Path) -> Result<()> {
    std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(|e| SearchError::io(p, e))
}

fn sync_dir(p: &Path) -> Result<()> {
    std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(|e| SearchError::io(p, e))
}

/// Writes `body` to `path` through a synced temporary file and a rename.
pub fn atomic_write(path: &Path, body: &[u8]) -> Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| SearchError::io(&tmp, e))?;
        f.write_all(body).map_err(|e| SearchError::io(&tmp, e))?;
        f.sync_all().map_err(|e| SearchError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| SearchError::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn unit(rng: &mut impl Rng, d: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
        let n = dot(&v, &v).sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    #[test]
    fn graph_exact_and_reload_agree() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let d = 32;
        let ann = Ann::new(d);
        let items: Vec<(usize, Vec<f32>)> = (0..2000).map(|i| (i, unit(&mut rng, d))).collect();
        ann.insert(&items);
        assert_eq!(ann.len(), 2000);
        let q = items[123].1.clone();
        let g = ann.search_graph(&q, 5, 64, &|_| true);
        assert_eq!(g[0].0, 123);
        assert!((g[0].1 - 1.0).abs() < 1e-4);
        // filter: even ids only
        let g = ann.search_graph(&q, 5, 64, &|id| id % 2 == 0);
        assert!(g.iter().all(|(id, _)| id % 2 == 0) && !g.is_empty());
        let all: Vec<usize> = (0..2000).filter(|i| i % 2 == 0).collect();
        let e = ann.search_exact(&q, 5, &all);
        assert_eq!(e.len(), 5);
        assert!(e.windows(2).all(|w| w[0].1 >= w[1].1));
        let dir = tempfile::tempdir().expect("tmp");
        ann.save(dir.path(), 1).expect("save");
        ann.save(dir.path(), 2).expect("save again");
        let folders = std::fs::read_dir(dir.path()).expect("list").filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("ann-"))).count();
        assert_eq!(folders, 1, "old generations are removed");
        let back = Ann::load(dir.path(), d).expect("load");
        assert_eq!(back.len(), 2000);
        assert_eq!(back.search_graph(&q, 1, 64, &|_| true)[0].0, 123);
        back.rebuild(&[1, 2, 123]);
        assert_eq!(back.len(), 3);
        assert_eq!(back.search_graph(&q, 3, 64, &|_| true).len(), 3);
    }
}
