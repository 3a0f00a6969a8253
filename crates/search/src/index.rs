//! [`HybridIndex`]: tantivy BM25 + HNSW vectors over the same chunks, one filter for both.
//!
//! Layout of an index folder: `meta.json` (embedder identity), `text/` (tantivy; the source of
//! truth: every chunk's fields, groups, version window and vector are stored there), `ann.json`
//! + `ann-<generation>/` (the vector graph, derived).
//!
//! Access control: a search first turns the asker's groups, version filter and metadata filters
//! into one tantivy filter query. BM25 runs as `text ∧ filter`; the vector side only ever visits
//! ids in the filter's result set (as the HNSW filter predicate, or as the candidate list of an
//! exact scan). Unreadable chunks are therefore never scored, counted, returned or logged.
//!
//! Writes are buffered and applied by [`HybridIndex::commit`], which rewrites every touched
//! document as a whole (so `current` flags and `valid_until` windows stay consistent), commits
//! tantivy atomically (with the next free vector id as commit payload), then saves the graph.
//! After a crash, reopening gives the last tantivy commit; vectors missing from the graph dump
//! are re-inserted from the stored vectors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::columnar::Column;
use tantivy::index::SegmentId;
use tantivy::query::{
    BitSetDocSet, BooleanQuery, ConstScoreQuery, ConstScorer, EmptyScorer, EnableScoring, Explanation, Occur, Query,
    QueryClone, RangeQuery, Scorer, TermQuery, Weight,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::{
    BitSet, DocAddress, DocId, Index, IndexReader, ReloadPolicy, Score, SegmentReader, TantivyDocument, Term,
};

use crate::analyzer::{ANALYZER, analyze, analyzer};
use crate::ann::{Ann, atomic_write};
use crate::types::{
    EVERYONE, Hit, IndexChunk, IndexMeta, RerankCandidate, Reranker, SearchConfig, SearchQuery, VersionFilter,
};
use crate::{Result, SearchError};

const META_SEP: char = '\u{1f}';
const WRITER_HEAP: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy)]
struct Fields {
    chunk_id: Field,
    doc_id: Field,
    version: Field,
    current: Field,
    text: Field,
    groups: Field,
    lang: Field,
    valid_from: Field,
    valid_until: Field,
    ingested_at: Field,
    meta: Field,
    meta_json: Field,
    ann_id: Field,
    vector: Field,
    ntokens: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_opts = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(IndexRecordOption::WithFreqs),
        )
        .set_stored();
    let f = Fields {
        chunk_id: b.add_text_field("chunk_id", STRING | STORED),
        doc_id: b.add_text_field("doc_id", STRING | STORED),
        version: b.add_u64_field("version", INDEXED | STORED | FAST),
        current: b.add_u64_field("current", INDEXED | STORED),
        text: b.add_text_field("text", text_opts),
        groups: b.add_text_field("groups", STRING | STORED),
        lang: b.add_text_field("lang", STRING | STORED),
        valid_from: b.add_i64_field("valid_from", INDEXED | STORED | FAST),
        valid_until: b.add_i64_field("valid_until", INDEXED | STORED | FAST),
        ingested_at: b.add_i64_field("ingested_at", STORED),
        meta: b.add_text_field("meta", STRING),
        meta_json: b.add_text_field("meta_json", STORED),
        ann_id: b.add_u64_field("ann_id", INDEXED | STORED | FAST),
        vector: b.add_bytes_field("vector", STORED),
        // Tokens of `text`, so BM25 statistics can be computed over the readable chunks only.
        ntokens: b.add_u64_field("ntokens", FAST),
    };
    (b.build(), f)
}

/// A chunk as stored, with its vector id.
#[derive(Clone)]
struct Stored {
    chunk: IndexChunk,
    ann_id: Option<u64>,
}

enum Op {
    Add(Vec<IndexChunk>),
    RemoveDoc(String, Option<Vec<u32>>),
    RemoveChunks(Vec<String>),
    SetCurrent(String, u32),
}

/// Counts of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Committed chunks (all versions).
    pub chunks: u64,
    /// Vectors held by the graph (removed chunks linger until a rebuild).
    pub vectors: usize,
}

/// Filtered id sets are cached per (searcher generation, filter) — a server answering many
/// questions for the same groups skips recomputing them.
struct AllowedCache {
    generation: u64,
    entries: Vec<(String, Arc<Allowed>)>,
}

struct Allowed {
    bits: Vec<u64>,
    ids: Vec<usize>,
    /// The same set as doc ids per segment, the filter of the BM25 side.
    docs: ReadableDocs,
    /// Tokens of `text` over the readable chunks (BM25's average length).
    tokens: u64,
}

/// BM25 statistics over the readable chunks only: document count, token count and document
/// frequencies all come from the asker's filter, so an unreadable chunk never shifts an IDF or
/// the average length, and a score is the same as in an index holding only readable chunks.
struct ReadableStats<'a> {
    searcher: &'a tantivy::Searcher,
    filter: &'a dyn Query,
    docs: u64,
    tokens: u64,
}

impl tantivy::query::Bm25StatisticsProvider for ReadableStats<'_> {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        Ok(self.tokens)
    }
    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.docs)
    }
    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let tq: Box<dyn Query> = Box::new(TermQuery::new(term.clone(), IndexRecordOption::Basic));
        let both = BooleanQuery::new(vec![(Occur::Must, tq), (Occur::Must, self.filter.box_clone())]);
        Ok(self.searcher.search(&both, &tantivy::collector::Count)? as u64)
    }
}

impl Allowed {
    fn contains(&self, id: usize) -> bool {
        self.bits.get(id / 64).is_some_and(|w| w >> (id % 64) & 1 == 1)
    }
}

/// The hybrid index. All methods take `&self`; it is `Send + Sync` and can be shared.
pub struct HybridIndex {
    dir: PathBuf,
    meta: IndexMeta,
    index: Index,
    reader: IndexReader,
    f: Fields,
    ann: Ann,
    pending: Mutex<Vec<Op>>,
    /// Serialises commits and holds the next free vector id.
    commit_lock: Mutex<u64>,
    generation: std::sync::atomic::AtomicU64,
    cache: Mutex<AllowedCache>,
    config: SearchConfig,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CommitPayload {
    next_ann_id: u64,
    generation: u64,
}

impl HybridIndex {
    /// Opens the index in `dir`, creating it (and the folder) when absent. An index built with
    /// another embedder or dimension is refused with [`SearchError::EmbedderMismatch`].
    pub fn open_or_create(dir: impl AsRef<Path>, meta: &IndexMeta) -> Result<Self> {
        Self::open_with(dir, meta, SearchConfig::default())
    }

    /// Like [`HybridIndex::open_or_create`] with explicit fusion/ANN settings.
    pub fn open_with(dir: impl AsRef<Path>, meta: &IndexMeta, config: SearchConfig) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if meta.dim == 0 || meta.embedder_id.trim().is_empty() {
            return Err(SearchError::invalid("index meta", "embedder id must be non-empty and dim positive"));
        }
        if config.rrf_k <= 0.0 || !config.rrf_k.is_finite() || config.fetch_factor == 0 {
            return Err(SearchError::invalid("search config", "rrf_k must be positive and fetch_factor ≥ 1"));
        }
        std::fs::create_dir_all(&dir).map_err(|e| SearchError::io(&dir, e))?;
        let meta_path = dir.join("meta.json");
        match std::fs::read(&meta_path) {
            Ok(raw) => {
                let stored: IndexMeta = serde_json::from_slice(&raw)
                    .map_err(|e| SearchError::Corrupt { path: meta_path.clone(), reason: e.to_string() })?;
                if stored != *meta {
                    return Err(SearchError::EmbedderMismatch {
                        path: dir.clone(),
                        index_embedder: stored.embedder_id,
                        index_dim: stored.dim,
                        requested_embedder: meta.embedder_id.clone(),
                        requested_dim: meta.dim,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let body = serde_json::to_vec_pretty(meta).map_err(|e| SearchError::invalid("index meta", e.to_string()))?;
                atomic_write(&meta_path, &body)?;
            }
            Err(e) => return Err(SearchError::io(&meta_path, e)),
        }
        let text_dir = dir.join("text");
        std::fs::create_dir_all(&text_dir).map_err(|e| SearchError::io(&text_dir, e))?;
        let (schema, f) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(&text_dir)
            .map_err(|e| SearchError::Corrupt { path: text_dir.clone(), reason: e.to_string() })?;
        let index = Index::open_or_create(mmap, schema)?;
        index.tokenizers().register(ANALYZER, analyzer());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let payload: Option<CommitPayload> = index
            .load_metas()?
            .payload
            .and_then(|p| serde_json::from_str(&p).ok());
        let (next_ann_id, generation) = payload.map(|p| (p.next_ann_id, p.generation)).unwrap_or((0, 0));
        let ann = Ann::load(&dir, meta.dim)?;
        let this = HybridIndex {
            dir,
            meta: meta.clone(),
            index,
            reader,
            f,
            ann,
            pending: Mutex::new(Vec::new()),
            commit_lock: Mutex::new(next_ann_id),
            generation: std::sync::atomic::AtomicU64::new(generation),
            cache: Mutex::new(AllowedCache { generation: u64::MAX, entries: Vec::new() }),
            config,
        };
        this.reconcile_vectors()?;
        Ok(this)
    }

    /// The embedder identity this index was built with.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// The index folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counts of committed chunks and held vectors.
    pub fn stats(&self) -> IndexStats {
        IndexStats { chunks: self.reader.searcher().num_docs(), vectors: self.ann.len() }
    }

    /// Queues chunks for indexing (visible after [`HybridIndex::commit`]). Every chunk is
    /// validated first; one bad chunk rejects the whole call and queues nothing.
    pub fn add(&self, chunks: &[IndexChunk]) -> Result<()> {
        let mut ready = Vec::with_capacity(chunks.len());
        for c in chunks {
            let what = |field: &str| format!("chunk {:?} {field}", c.chunk_id);
            if c.chunk_id.is_empty() || c.doc_id.is_empty() {
                return Err(SearchError::invalid(what("id"), "chunk_id and doc_id must be non-empty"));
            }
            if c.groups.is_empty() || c.groups.iter().any(|g| g.is_empty()) {
                return Err(SearchError::invalid(
                    what("groups"),
                    "access groups must be non-empty names; use [\"*\"] for everyone",
                ));
            }
            if c.vector.len() != self.meta.dim {
                return Err(SearchError::invalid(
                    what("vector"),
                    format!("length {} but the index ({}) has dimension {}", c.vector.len(), self.meta.embedder_id, self.meta.dim),
                ));
            }
            let norm = c.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            if !norm.is_finite() || norm < 1e-12 {
                return Err(SearchError::invalid(what("vector"), "zero, NaN or infinite vector"));
            }
            if c.metadata.iter().any(|(k, v)| k.contains(META_SEP) || v.contains(META_SEP)) {
                return Err(SearchError::invalid(what("metadata"), "keys and values may not contain U+001F"));
            }
            let mut c = c.clone();
            c.vector.iter_mut().for_each(|x| *x /= norm);
            ready.push(c);
        }
        if !ready.is_empty() {
            self.pending.lock().push(Op::Add(ready));
        }
        Ok(())
    }

    /// Queues removal of every version of a document.
    pub fn remove_doc(&self, doc_id: &str) {
        self.pending.lock().push(Op::RemoveDoc(doc_id.to_string(), None));
    }

    /// Queues removal of some versions of a document.
    pub fn remove_doc_versions(&self, doc_id: &str, versions: &[u32]) {
        self.pending.lock().push(Op::RemoveDoc(doc_id.to_string(), Some(versions.to_vec())));
    }

    /// Queues removal of chunks by id (unknown ids are ignored).
    pub fn remove(&self, chunk_ids: &[String]) {
        self.pending.lock().push(Op::RemoveChunks(chunk_ids.to_vec()));
    }

    /// Queues making `version` the current version of `doc_id` (every other version becomes
    /// non-current). A version with no chunks leaves the document without a current version.
    pub fn set_current(&self, doc_id: &str, version: u32) {
        self.pending.lock().push(Op::SetCurrent(doc_id.to_string(), version));
    }

    /// Whether writes are waiting for a commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.lock().is_empty()
    }

    /// Drops queued writes.
    pub fn rollback(&self) {
        self.pending.lock().clear();
    }

    /// Applies queued writes atomically: after a crash the index shows either all of them or none.
    pub fn commit(&self) -> Result<()> {
        let mut next_ann = self.commit_lock.lock();
        let ops = std::mem::take(&mut *self.pending.lock());
        if ops.is_empty() {
            return Ok(());
        }
        let searcher = self.reader.searcher();
        // chunk ids named by RemoveChunks → their documents
        let mut docs: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for op in &ops {
            match op {
                Op::Add(cs) => touched.extend(cs.iter().map(|c| c.doc_id.clone())),
                Op::RemoveDoc(d, _) | Op::SetCurrent(d, _) => {
                    touched.insert(d.clone());
                }
                Op::RemoveChunks(ids) => {
                    for id in ids {
                        for s in self.load_where(&searcher, self.f.chunk_id, id)? {
                            touched.insert(s.chunk.doc_id.clone());
                        }
                        for o in &ops {
                            if let Op::Add(cs) = o {
                                touched.extend(cs.iter().filter(|c| &c.chunk_id == id).map(|c| c.doc_id.clone()));
                            }
                        }
                    }
                }
            }
        }
        for d in &touched {
            docs.insert(d.clone(), self.load_where(&searcher, self.f.doc_id, d)?);
        }
        // chunk ids are global: an added chunk id that lives in another document moves
        let mut moved_from: BTreeSet<String> = BTreeSet::new();
        for op in &ops {
            if let Op::Add(cs) = op {
                for c in cs {
                    for s in self.load_where(&searcher, self.f.chunk_id, &c.chunk_id)? {
                        if s.chunk.doc_id != c.doc_id {
                            moved_from.insert(s.chunk.doc_id.clone());
                        }
                    }
                }
            }
        }
        for d in moved_from {
            if !docs.contains_key(&d) {
                let loaded = self.load_where(&searcher, self.f.doc_id, &d)?;
                docs.insert(d, loaded);
            }
        }
        for op in ops {
            match op {
                Op::Add(cs) => {
                    for c in cs {
                        for list in docs.values_mut() {
                            list.retain(|s| s.chunk.chunk_id != c.chunk_id);
                        }
                        let list = docs.entry(c.doc_id.clone()).or_default();
                        if c.current {
                            for s in list.iter_mut() {
                                s.chunk.current = s.chunk.version == c.version;
                            }
                        }
                        list.push(Stored { chunk: c, ann_id: None });
                    }
                }
                Op::RemoveDoc(d, versions) => {
                    if let Some(list) = docs.get_mut(&d) {
                        match versions {
                            None => list.clear(),
                            Some(vs) => list.retain(|s| !vs.contains(&s.chunk.version)),
                        }
                    }
                }
                Op::RemoveChunks(ids) => {
                    let ids: BTreeSet<String> = ids.into_iter().collect();
                    for list in docs.values_mut() {
                        list.retain(|s| !ids.contains(&s.chunk.chunk_id));
                    }
                }
                Op::SetCurrent(d, v) => {
                    if let Some(list) = docs.get_mut(&d) {
                        for s in list.iter_mut() {
                            s.chunk.current = s.chunk.version == v;
                        }
                    }
                }
            }
        }
        let mut writer: tantivy::IndexWriter<TantivyDocument> = self.index.writer(WRITER_HEAP)?;
        let mut new_vectors: Vec<(usize, Vec<f32>)> = Vec::new();
        for (doc_id, list) in docs.iter_mut() {
            writer.delete_term(Term::from_field_text(self.f.doc_id, doc_id));
            let windows = version_windows(list);
            for s in list.iter_mut() {
                let id = match s.ann_id {
                    Some(id) => id,
                    None => {
                        let id = *next_ann;
                        *next_ann += 1;
                        s.ann_id = Some(id);
                        new_vectors.push((id as usize, s.chunk.vector.clone()));
                        id
                    }
                };
                let until = windows.get(&s.chunk.version).copied().unwrap_or(i64::MAX);
                writer.add_document(self.to_doc(&s.chunk, id, until))?;
            }
        }
        // The graph learns new vectors before the text commit so a concurrent search never
        // sees a committed chunk without its vector.
        self.ann.insert(&new_vectors);
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst) + 1;
        let payload = serde_json::to_string(&CommitPayload { next_ann_id: *next_ann, generation })
            .map_err(|e| SearchError::Ann(e.to_string()))?;
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        writer.wait_merging_threads()?;
        self.generation.store(generation, std::sync::atomic::Ordering::SeqCst);
        self.reader.reload()?;
        let live = self.reader.searcher().num_docs() as usize;
        if self.ann.len() > 2 * live + 1000 {
            let ids = self.live_ann_ids()?;
            self.ann.rebuild(&ids);
        }
        self.ann.save(&self.dir, generation)?;
        tracing::debug!(touched_docs = docs.len(), new_vectors = new_vectors.len(), "index commit");
        Ok(())
    }

    fn to_doc(&self, c: &IndexChunk, ann_id: u64, valid_until: i64) -> TantivyDocument {
        let f = &self.f;
        let mut d = TantivyDocument::default();
        d.add_text(f.chunk_id, &c.chunk_id);
        d.add_text(f.doc_id, &c.doc_id);
        d.add_u64(f.version, c.version as u64);
        d.add_u64(f.current, c.current as u64);
        d.add_text(f.text, &c.text);
        for g in c.groups.iter().collect::<BTreeSet<_>>() {
            d.add_text(f.groups, g);
        }
        d.add_text(f.lang, &c.lang);
        d.add_i64(f.valid_from, c.valid_from);
        d.add_i64(f.valid_until, valid_until);
        d.add_i64(f.ingested_at, c.ingested_at);
        for (k, v) in &c.metadata {
            d.add_text(f.meta, format!("{k}{META_SEP}{v}"));
        }
        d.add_text(f.meta_json, serde_json::to_string(&c.metadata).unwrap_or_else(|_| "{}".into()));
        d.add_u64(f.ann_id, ann_id);
        let bytes: Vec<u8> = c.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        d.add_bytes(f.vector, &bytes);
        d.add_u64(f.ntokens, analyze(&c.text).len() as u64);
        d
    }

    fn from_doc(&self, d: &TantivyDocument) -> Result<Stored> {
        let f = &self.f;
        let corrupt = |field: &str| SearchError::Corrupt { path: self.dir.clone(), reason: format!("stored chunk without {field}") };
        let s = |field: Field, name: &str| -> Result<String> {
            d.get_first(field).and_then(|v| v.as_str()).map(str::to_string).ok_or_else(|| corrupt(name))
        };
        let u = |field: Field, name: &str| d.get_first(field).and_then(|v| v.as_u64()).ok_or_else(|| corrupt(name));
        let i = |field: Field, name: &str| d.get_first(field).and_then(|v| v.as_i64()).ok_or_else(|| corrupt(name));
        let bytes = d.get_first(f.vector).and_then(|v| v.as_bytes()).ok_or_else(|| corrupt("vector"))?;
        let vector: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let metadata: BTreeMap<String, String> = serde_json::from_str(&s(f.meta_json, "metadata")?)
            .map_err(|e| SearchError::Corrupt { path: self.dir.clone(), reason: format!("metadata: {e}") })?;
        Ok(Stored {
            chunk: IndexChunk {
                chunk_id: s(f.chunk_id, "chunk_id")?,
                doc_id: s(f.doc_id, "doc_id")?,
                version: u(f.version, "version")? as u32,
                current: u(f.current, "current")? == 1,
                text: s(f.text, "text")?,
                vector,
                groups: d.get_all(f.groups).filter_map(|v| v.as_str().map(str::to_string)).collect(),
                lang: s(f.lang, "lang")?,
                valid_from: i(f.valid_from, "valid_from")?,
                ingested_at: i(f.ingested_at, "ingested_at")?,
                metadata,
            },
            ann_id: Some(u(f.ann_id, "ann_id")?),
        })
    }

    fn load_where(&self, searcher: &tantivy::Searcher, field: Field, value: &str) -> Result<Vec<Stored>> {
        let q = TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic);
        let addrs = searcher.search(&q, &AddressCollector)?;
        addrs.into_iter().map(|a| self.from_doc(&searcher.doc::<TantivyDocument>(a)?)).collect()
    }

    /// Every committed chunk (all versions), for export, checks and tests.
    pub fn all_chunks(&self) -> Result<Vec<IndexChunk>> {
        let searcher = self.reader.searcher();
        let addrs = searcher.search(&tantivy::query::AllQuery, &AddressCollector)?;
        addrs.into_iter().map(|a| Ok(self.from_doc(&searcher.doc::<TantivyDocument>(a)?)?.chunk)).collect()
    }

    fn live_ann_ids(&self) -> Result<Vec<usize>> {
        let searcher = self.reader.searcher();
        let mut ids = searcher.search(&tantivy::query::AllQuery, &AnnIdCollector)?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Puts vectors of committed chunks that the graph dump lacks back into the graph.
    fn reconcile_vectors(&self) -> Result<()> {
        let missing: Vec<usize> = self.live_ann_ids()?.into_iter().filter(|&id| !self.ann.contains(id)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        tracing::info!(missing = missing.len(), "re-inserting vectors missing from the graph dump");
        let searcher = self.reader.searcher();
        let mut items = Vec::with_capacity(missing.len());
        for id in &missing {
            let q = TermQuery::new(Term::from_field_u64(self.f.ann_id, *id as u64), IndexRecordOption::Basic);
            for a in searcher.search(&q, &AddressCollector)? {
                let s = self.from_doc(&searcher.doc::<TantivyDocument>(a)?)?;
                items.push((*id, s.chunk.vector));
            }
        }
        self.ann.insert(&items);
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        self.ann.save(&self.dir, generation)
    }

    /// The filter query: readable groups ∧ version window ∧ metadata.
    fn filter_query(&self, q: &SearchQuery) -> Box<dyn Query> {
        let f = &self.f;
        let mut groups: BTreeSet<&str> = q.groups.iter().map(String::as_str).filter(|g| !g.is_empty()).collect();
        groups.insert(EVERYONE);
        let term = |t: Term| -> Box<dyn Query> { Box::new(TermQuery::new(t, IndexRecordOption::Basic)) };
        // A union of term queries, not a TermSetQuery: the latter builds an FST on every query,
        // which was ~15% of a hybrid query's time; an asker has a handful of groups.
        let group_any: Vec<(Occur, Box<dyn Query>)> =
            groups.iter().map(|g| (Occur::Should, term(Term::from_field_text(f.groups, g)))).collect();
        let mut must: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, Box::new(BooleanQuery::new(group_any)))];
        match &q.version {
            VersionFilter::CurrentOnly => must.push((Occur::Must, term(Term::from_field_u64(f.current, 1)))),
            VersionFilter::AsOf(t) => {
                must.push((
                    Occur::Must,
                    Box::new(RangeQuery::new(Bound::Unbounded, Bound::Included(Term::from_field_i64(f.valid_from, *t)))),
                ));
                must.push((
                    Occur::Must,
                    Box::new(RangeQuery::new(Bound::Excluded(Term::from_field_i64(f.valid_until, *t)), Bound::Unbounded)),
                ));
            }
            VersionFilter::Version(doc, v) => {
                must.push((Occur::Must, term(Term::from_field_u64(f.version, *v as u64))));
                if let Some(d) = doc {
                    must.push((Occur::Must, term(Term::from_field_text(f.doc_id, d))));
                }
            }
            VersionFilter::All => {}
        }
        for (k, v) in &q.metadata {
            must.push((Occur::Must, term(Term::from_field_text(f.meta, &format!("{k}{META_SEP}{v}")))));
        }
        Box::new(BooleanQuery::new(must))
    }

    fn filter_key(q: &SearchQuery) -> String {
        let mut groups: Vec<&str> = q.groups.iter().map(String::as_str).collect();
        groups.sort_unstable();
        groups.dedup();
        format!("{groups:?}|{:?}|{:?}", q.version, q.metadata)
    }

    fn allowed(&self, searcher: &tantivy::Searcher, q: &SearchQuery, filter: &dyn Query) -> Result<Arc<Allowed>> {
        let generation = searcher.generation().generation_id();
        let key = Self::filter_key(q);
        {
            let mut cache = self.cache.lock();
            if cache.generation != generation {
                cache.generation = generation;
                cache.entries.clear();
            }
            if let Some((_, a)) = cache.entries.iter().find(|(k, _)| *k == key) {
                return Ok(a.clone());
            }
        }
        // one pass over the readable documents for every figure
        let (segments, ann_ids, tokens) = searcher.search(filter, &ReadableCollector)?;
        let max = ann_ids.iter().copied().max().unwrap_or(0);
        let mut bits = vec![0u64; max / 64 + 1];
        for &id in &ann_ids {
            bits[id / 64] |= 1 << (id % 64);
        }
        // ascending ids straight from the bitset (no sort of up to the whole corpus)
        let mut ids = Vec::with_capacity(ann_ids.len());
        for (w, &word) in bits.iter().enumerate() {
            let mut rest = word;
            while rest != 0 {
                ids.push(w * 64 + rest.trailing_zeros() as usize);
                rest &= rest - 1;
            }
        }
        let docs = ReadableDocs(Arc::new(segments));
        let a = Arc::new(Allowed { bits, ids, docs, tokens });
        let mut cache = self.cache.lock();
        if cache.generation == generation {
            if cache.entries.len() >= 32 {
                cache.entries.remove(0);
            }
            cache.entries.push((key, a.clone()));
        }
        Ok(a)
    }

    /// Document frequencies over the chunks `q` may read (its groups, version and metadata
    /// filters; text, vector and k are ignored): the number of readable chunks and, for each
    /// already-analyzed term (see [`analyze`]), how many readable chunks contain it.
    ///
    /// Callers weigh query terms by these (IDF) to judge whether the readable corpus holds an
    /// answer; counting only readable chunks keeps unreadable ones from shifting any figure.
    pub fn doc_freqs(&self, q: &SearchQuery, terms: &[String]) -> Result<(u64, Vec<u64>)> {
        let searcher = self.reader.searcher();
        let filter = self.filter_query(q);
        let n = searcher.search(filter.as_ref(), &tantivy::collector::Count)? as u64;
        let mut out = Vec::with_capacity(terms.len());
        for t in terms {
            let tq: Box<dyn Query> =
                Box::new(TermQuery::new(Term::from_field_text(self.f.text, t), IndexRecordOption::Basic));
            let both = BooleanQuery::new(vec![(Occur::Must, tq), (Occur::Must, filter.box_clone())]);
            out.push(searcher.search(&both, &tantivy::collector::Count)? as u64);
        }
        Ok((n, out))
    }

    /// Hybrid search; see [`HybridIndex::search_with`].
    pub fn search(&self, q: &SearchQuery) -> Result<Vec<Hit>> {
        self.search_with(q, None)
    }

    /// Hybrid search: BM25 over readable chunks and vector search over readable chunks, fused by
    /// reciprocal rank (`1/(rrf_k + rank)` summed over the lists), then optionally reranked.
    pub fn search_with(&self, q: &SearchQuery, reranker: Option<&dyn Reranker>) -> Result<Vec<Hit>> {
        if q.k == 0 {
            return Ok(Vec::new());
        }
        if let Some(v) = &q.vector
            && v.len() != self.meta.dim
        {
            return Err(SearchError::invalid(
                "query vector",
                format!("length {} but the index ({}) has dimension {}", v.len(), self.meta.embedder_id, self.meta.dim),
            ));
        }
        let fetch = q.k.max(10) * self.config.fetch_factor;
        let searcher = self.reader.searcher();
        let filter = self.filter_query(q);

        // BM25 side: text ∧ filter (the filter contributes no score)
        let mut bm25: Vec<(usize, f32, DocAddress)> = Vec::new();
        let terms: BTreeSet<String> = analyze(&q.text).into_iter().collect();
        // The readable set, looked up once for both sides.
        let allowed = if terms.is_empty() && q.vector.is_none() { None } else { Some(self.allowed(&searcher, q, filter.as_ref())?) };
        if let (false, Some(allowed)) = (terms.is_empty(), &allowed) {
            let text_q: Vec<(Occur, Box<dyn Query>)> = terms
                .iter()
                .map(|t| {
                    let tq: Box<dyn Query> =
                        Box::new(TermQuery::new(Term::from_field_text(self.f.text, t), IndexRecordOption::WithFreqs));
                    (Occur::Should, tq)
                })
                .collect();
            let full = BooleanQuery::new(vec![
                (Occur::Must, Box::new(BooleanQuery::new(text_q)) as Box<dyn Query>),
                (Occur::Must, Box::new(ConstScoreQuery::new(Box::new(allowed.docs.clone()), 0.0))),
            ]);
            let stats =
                ReadableStats { searcher: &searcher, filter: &allowed.docs, docs: allowed.ids.len() as u64, tokens: allowed.tokens };
            let top = searcher.search_with_statistics_provider(&full, &TopDocs::with_limit(fetch).order_by_score(), &stats)?;
            for (score, addr) in top {
                let col = ann_column(searcher.segment_reader(addr.segment_ord))?;
                if let Some(id) = col.first(addr.doc_id) {
                    bm25.push((id as usize, score, addr));
                }
            }
        }

        // vector side: only readable ids are ever visited
        let mut vect: Vec<(usize, f32)> = Vec::new();
        if let (Some(v), Some(allowed)) = (&q.vector, &allowed) {
            let mut qv = v.clone();
            let n = qv.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n.is_finite() && n > 1e-12 {
                qv.iter_mut().for_each(|x| *x /= n);
                if allowed.ids.len() <= self.config.exact_threshold {
                    vect = self.ann.search_exact(&qv, fetch, &allowed.ids);
                } else {
                    vect = self.ann.search_graph(&qv, fetch, self.config.ef_search.max(fetch), &|id| allowed.contains(id));
                    // defence in depth: the predicate already excluded these
                    vect.retain(|(id, _)| allowed.contains(*id));
                }
            }
        }

        // reciprocal-rank fusion
        let k = self.config.rrf_k;
        let mut fused: HashMap<usize, (f32, Option<u32>, Option<u32>, Option<f32>, Option<f32>, Option<DocAddress>)> =
            HashMap::new();
        for (rank, (id, score, addr)) in bm25.iter().enumerate() {
            let e = fused.entry(*id).or_insert((0.0, None, None, None, None, None));
            e.0 += 1.0 / (k + rank as f32 + 1.0);
            e.1 = Some(rank as u32 + 1);
            e.3 = Some(*score);
            e.5 = Some(*addr);
        }
        for (rank, (id, sim)) in vect.iter().enumerate() {
            let e = fused.entry(*id).or_insert((0.0, None, None, None, None, None));
            e.0 += 1.0 / (k + rank as f32 + 1.0);
            e.2 = Some(rank as u32 + 1);
            e.4 = Some(*sim);
        }
        let mut ranked: Vec<(usize, _)> = fused.into_iter().collect();
        ranked.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(&b.0)));
        let keep = if reranker.is_some() { self.config.rerank_top.max(q.k) } else { q.k };
        ranked.truncate(keep);

        let mut hits = Vec::with_capacity(ranked.len());
        let mut texts = Vec::new();
        for (id, (score, br, vr, bs, sim, addr)) in ranked {
            let addr = match addr {
                Some(a) => a,
                None => {
                    let tq = TermQuery::new(Term::from_field_u64(self.f.ann_id, id as u64), IndexRecordOption::Basic);
                    match searcher.search(&tq, &AddressCollector)?.first() {
                        Some(a) => *a,
                        None => continue,
                    }
                }
            };
            let d: TantivyDocument = searcher.doc(addr)?;
            let get_s = |f: Field| d.get_first(f).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            if reranker.is_some() {
                texts.push(get_s(self.f.text));
            }
            hits.push(Hit {
                chunk_id: get_s(self.f.chunk_id),
                doc_id: get_s(self.f.doc_id),
                version: d.get_first(self.f.version).and_then(|v| v.as_u64()).unwrap_or(0) as u32,
                score,
                bm25_rank: br,
                vector_rank: vr,
                bm25_score: bs,
                similarity: sim,
            });
        }
        if let Some(r) = reranker
            && !hits.is_empty()
        {
            let cands: Vec<RerankCandidate> = hits
                .iter()
                .zip(texts)
                .map(|(h, text)| RerankCandidate { chunk_id: h.chunk_id.clone(), text, fused_score: h.score })
                .collect();
            let scores = r.rerank(&q.text, &cands).map_err(SearchError::Rerank)?;
            if scores.len() != hits.len() {
                return Err(SearchError::Rerank(format!("{} scores for {} candidates", scores.len(), hits.len())));
            }
            for (h, s) in hits.iter_mut().zip(scores) {
                h.score = s;
            }
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        hits.truncate(q.k);
        tracing::debug!(bm25 = bm25.len(), vector = vect.len(), returned = hits.len(), "hybrid search");
        Ok(hits)
    }
}

/// Each version's end of validity: the next version's `valid_from` (by start time).
fn version_windows(list: &[Stored]) -> HashMap<u32, i64> {
    let mut starts: BTreeMap<u32, i64> = BTreeMap::new();
    for s in list {
        let e = starts.entry(s.chunk.version).or_insert(s.chunk.valid_from);
        *e = (*e).min(s.chunk.valid_from);
    }
    let mut order: Vec<(i64, u32)> = starts.iter().map(|(v, t)| (*t, *v)).collect();
    order.sort_unstable();
    let mut out = HashMap::new();
    for (i, (start, v)) in order.iter().enumerate() {
        let until = order[i + 1..].iter().map(|(t, _)| *t).find(|t| t > start).unwrap_or(i64::MAX);
        out.insert(*v, until);
    }
    out
}

fn ann_column(seg: &SegmentReader) -> Result<Column<u64>> {
    Ok(seg.fast_fields().u64("ann_id")?)
}

/// Collects the addresses of all matching documents.
struct AddressCollector;

struct AddressSegment {
    seg: u32,
    out: Vec<DocAddress>,
}

impl Collector for AddressCollector {
    type Fruit = Vec<DocAddress>;
    type Child = AddressSegment;
    fn for_segment(&self, seg: u32, _reader: &SegmentReader) -> tantivy::Result<AddressSegment> {
        Ok(AddressSegment { seg, out: Vec::new() })
    }
    fn requires_scoring(&self) -> bool {
        false
    }
    fn merge_fruits(&self, fruits: Vec<Vec<DocAddress>>) -> tantivy::Result<Vec<DocAddress>> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

impl SegmentCollector for AddressSegment {
    type Fruit = Vec<DocAddress>;
    fn collect(&mut self, doc: DocId, _score: Score) {
        self.out.push(DocAddress::new(self.seg, doc));
    }
    fn harvest(self) -> Vec<DocAddress> {
        self.out
    }
}

/// Collects the vector ids of all matching documents.
struct AnnIdCollector;

struct AnnIdSegment {
    col: Column<u64>,
    out: Vec<usize>,
}

impl Collector for AnnIdCollector {
    type Fruit = Vec<usize>;
    type Child = AnnIdSegment;
    fn for_segment(&self, _seg: u32, reader: &SegmentReader) -> tantivy::Result<AnnIdSegment> {
        Ok(AnnIdSegment { col: reader.fast_fields().u64("ann_id")?, out: Vec::new() })
    }
    fn requires_scoring(&self) -> bool {
        false
    }
    fn merge_fruits(&self, fruits: Vec<Vec<usize>>) -> tantivy::Result<Vec<usize>> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

impl SegmentCollector for AnnIdSegment {
    type Fruit = Vec<usize>;
    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(id) = self.col.first(doc) {
            self.out.push(id as usize);
        }
    }
    // Unscored queries hand over blocks of documents: read the column in bulk.
    fn collect_block(&mut self, docs: &[DocId]) {
        let mut vals = vec![None; docs.len()];
        self.col.first_vals(docs, &mut vals);
        self.out.extend(vals.into_iter().flatten().map(|id| id as usize));
    }
    fn harvest(self) -> Vec<usize> {
        self.out
    }
}

/// Collects, for the readable documents, each segment's doc-id bitset, the vector ids and the
/// sum of the `ntokens` fast field.
struct ReadableCollector;

struct ReadableSegment {
    segment: SegmentId,
    docs: BitSet,
    ann: Column<u64>,
    ntokens: Option<Column<u64>>,
    ids: Vec<usize>,
    tokens: u64,
    buf: Vec<Option<u64>>,
}

impl Collector for ReadableCollector {
    type Fruit = (HashMap<SegmentId, BitSet>, Vec<usize>, u64);
    type Child = ReadableSegment;
    fn for_segment(&self, _seg: u32, reader: &SegmentReader) -> tantivy::Result<ReadableSegment> {
        Ok(ReadableSegment {
            segment: reader.segment_id(),
            docs: BitSet::with_max_value(reader.max_doc()),
            ann: reader.fast_fields().u64("ann_id")?,
            ntokens: reader.fast_fields().u64("ntokens").ok(),
            ids: Vec::new(),
            tokens: 0,
            buf: Vec::new(),
        })
    }
    fn requires_scoring(&self) -> bool {
        false
    }
    fn merge_fruits(&self, fruits: Vec<(SegmentId, BitSet, Vec<usize>, u64)>) -> tantivy::Result<Self::Fruit> {
        let mut segments = HashMap::with_capacity(fruits.len());
        let (mut ids, mut tokens) = (Vec::new(), 0);
        for (segment, docs, seg_ids, seg_tokens) in fruits {
            segments.insert(segment, docs);
            ids.extend(seg_ids);
            tokens += seg_tokens;
        }
        Ok((segments, ids, tokens))
    }
}

impl SegmentCollector for ReadableSegment {
    type Fruit = (SegmentId, BitSet, Vec<usize>, u64);
    fn collect(&mut self, doc: DocId, _score: Score) {
        self.collect_block(&[doc]);
    }
    // Unscored queries hand over blocks of documents: read the columns in bulk.
    fn collect_block(&mut self, docs: &[DocId]) {
        for &d in docs {
            self.docs.insert(d);
        }
        self.buf.clear();
        self.buf.resize(docs.len(), None);
        self.ann.first_vals(docs, &mut self.buf);
        self.ids.extend(self.buf.iter().flatten().map(|&id| id as usize));
        if let Some(c) = &self.ntokens {
            self.buf.iter_mut().for_each(|v| *v = None);
            c.first_vals(docs, &mut self.buf);
            self.tokens += self.buf.iter().flatten().sum::<u64>();
        }
    }
    fn harvest(self) -> Self::Fruit {
        (self.segment, self.docs, self.ids, self.tokens)
    }
}

/// The readable documents of one searcher generation as per-segment doc-id bitsets, used as a
/// query: a bit test per candidate instead of re-running the group ∨ … ∧ version ∧ metadata
/// query (whose posting-list unions were ~40% of a 100k-chunk hybrid query in `perf`).
#[derive(Clone)]
struct ReadableDocs(Arc<HashMap<SegmentId, BitSet>>);

impl std::fmt::Debug for ReadableDocs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadableDocs({} segments)", self.0.len())
    }
}

impl Query for ReadableDocs {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for ReadableDocs {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(match self.0.get(&reader.segment_id()) {
            Some(bits) => Box::new(ConstScorer::new(BitSetDocSet::from(bits.clone()), boost)),
            // a segment the searcher that built the set did not have: nothing in it is readable
            None => Box::new(EmptyScorer),
        })
    }
    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        match self.0.get(&reader.segment_id()) {
            Some(bits) if doc < bits.max_value() && bits.contains(doc) => Ok(Explanation::new("readable", 1.0)),
            _ => Err(tantivy::TantivyError::InvalidArgument(format!("document {doc} is not readable"))),
        }
    }
}
