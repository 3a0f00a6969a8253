//! BERT models from a Hugging Face folder: `config.json`, `model.safetensors`, `tokenizer.json`
//! (optionally `sentence_bert_config.json` for the sequence limit). Mean pooling + L2
//! normalisation, as sentence-transformers does for all-MiniLM-L6-v2.

use std::path::Path;

use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::bert::{Bert, BertConfig, Layer, WordTable, linear_t, plan_batches, vec1};
use crate::encoder::{Encoder, EncoderRuntime};
use crate::{EmbedError, Embedder, Result, l2_normalize};

/// A BERT encoder loaded from a safetensors folder. Inputs over the model's limit are an error
/// ([`EmbedError::TooLong`]), never silently truncated.
pub struct BertEmbedder {
    id: String,
    bert: Encoder,
    tokenizer: tokenizers::Tokenizer,
    max_tokens: usize,
    query_prefix: String,
    passage_prefix: String,
    max_batch: usize,
    token_budget: usize,
}

#[derive(serde::Deserialize)]
struct HfConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    max_position_embeddings: usize,
    #[serde(default)]
    model_type: String,
    #[serde(default)]
    pad_token_id: Option<usize>,
    #[serde(default)]
    hidden_act: Option<String>,
}

fn default_eps() -> f64 {
    1e-12
}

impl BertEmbedder {
    /// Loads a folder holding `config.json`, `model.safetensors` and `tokenizer.json`. BERT and
    /// XLM-RoBERTa layouts are accepted (tensor names with or without a `bert.`/`roberta.`
    /// prefix); for XLM-R the position offset (padding id + 1) is applied.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_on(dir, EncoderRuntime::from_env()?)
    }

    /// Loads the folder and runs the encoder on `runtime`.
    pub fn load_on(dir: impl AsRef<Path>, runtime: EncoderRuntime) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &str| -> Result<Vec<u8>> {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| EmbedError::io(&p, e))
        };
        let cfg_path = dir.join("config.json");
        let cfg: HfConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| EmbedError::invalid(&cfg_path, e.to_string()))?;
        if let Some(act) = &cfg.hidden_act
            && act != "gelu"
        {
            return Err(EmbedError::invalid(&cfg_path, format!("hidden_act {act:?} is not supported (gelu only)")));
        }
        let h = cfg.hidden_size;
        if h == 0 || cfg.num_attention_heads == 0 || h % cfg.num_attention_heads != 0 {
            return Err(EmbedError::invalid(&cfg_path, "hidden_size is not a multiple of num_attention_heads"));
        }
        let xlmr = cfg.model_type.contains("roberta");
        let pos_offset = if xlmr { cfg.pad_token_id.unwrap_or(1) + 1 } else { 0 };
        let mut max_tokens = cfg.max_position_embeddings.saturating_sub(pos_offset);
        if let Ok(raw) = std::fs::read(dir.join("sentence_bert_config.json"))
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw)
            && let Some(m) = v.get("max_seq_length").and_then(|m| m.as_u64())
        {
            max_tokens = max_tokens.min(m as usize);
        }

        let st_path = dir.join("model.safetensors");
        let file = std::fs::File::open(&st_path).map_err(|e| EmbedError::io(&st_path, e))?;
        // SAFETY: read-only private map of a file we only read.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EmbedError::io(&st_path, e))?;
        let st = SafeTensors::deserialize(&map).map_err(|e| EmbedError::invalid(&st_path, e.to_string()))?;
        let prefix = ["", "bert.", "roberta.", "model."]
            .into_iter()
            .find(|p| st.tensor(&format!("{p}embeddings.word_embeddings.weight")).is_ok())
            .ok_or_else(|| EmbedError::invalid(&st_path, "no embeddings.word_embeddings.weight tensor"))?;
        let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let full = format!("{prefix}{name}");
            let t = st.tensor(&full).map_err(|_| EmbedError::invalid(&st_path, format!("missing tensor {full}")))?;
            if t.shape() != shape {
                return Err(EmbedError::invalid(&st_path, format!("tensor {full} has shape {:?}, expected {shape:?}", t.shape())));
            }
            let d = t.data();
            Ok(match t.dtype() {
                Dtype::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::F16 => d.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::BF16 => d.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                other => return Err(EmbedError::invalid(&st_path, format!("tensor {full} has unsupported dtype {other:?}"))),
            })
        };
        // either LayerNorm.weight/bias or the old gamma/beta names
        let ln = |base: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            match tensor(&format!("{base}.weight"), &[h]) {
                Ok(w) => Ok((w, tensor(&format!("{base}.bias"), &[h])?)),
                Err(_) => Ok((tensor(&format!("{base}.gamma"), &[h])?, tensor(&format!("{base}.beta"), &[h])?)),
            }
        };
        let vocab = st
            .tensor(&format!("{prefix}embeddings.word_embeddings.weight"))
            .map(|t| t.shape().first().copied().unwrap_or(0))
            .unwrap_or(0);
        let word = tensor("embeddings.word_embeddings.weight", &[vocab, h])?;
        let pos_all = tensor("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, h])?;
        let pos = pos_all[pos_offset * h..].to_vec();
        let type_rows = st
            .tensor(&format!("{prefix}embeddings.token_type_embeddings.weight"))
            .map(|t| t.shape().first().copied().unwrap_or(1))
            .unwrap_or(1);
        let type0 = tensor("embeddings.token_type_embeddings.weight", &[type_rows, h])?[..h].to_vec();
        let (elw, elb) = ln("embeddings.LayerNorm")?;
        let ff = cfg.intermediate_size;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            let w = |n: &str, o: usize, i: usize| tensor(&format!("{p}{n}.weight"), &[o, i]);
            let b = |n: &str, o: usize| tensor(&format!("{p}{n}.bias"), &[o]);
            let mut qkv = w("attention.self.query", h, h)?;
            qkv.extend(w("attention.self.key", h, h)?);
            qkv.extend(w("attention.self.value", h, h)?);
            let mut qkv_b = b("attention.self.query", h)?;
            qkv_b.extend(b("attention.self.key", h)?);
            qkv_b.extend(b("attention.self.value", h)?);
            let (alw, alb) = ln(&format!("{p}attention.output.LayerNorm"))?;
            let (olw, olb) = ln(&format!("{p}output.LayerNorm"))?;
            layers.push(Layer {
                qkv_w: linear_t(qkv, 3 * h, h)?,
                qkv_b,
                ao_w: linear_t(w("attention.output.dense", h, h)?, h, h)?,
                ao_b: b("attention.output.dense", h)?,
                aln_w: vec1(alw)?,
                aln_b: vec1(alb)?,
                fi_w: linear_t(w("intermediate.dense", ff, h)?, ff, h)?,
                fi_b: b("intermediate.dense", ff)?,
                fo_w: linear_t(w("output.dense", h, ff)?, h, ff)?,
                fo_b: b("output.dense", h)?,
                oln_w: vec1(olw)?,
                oln_b: vec1(olb)?,
            });
        }
        let bert = Bert {
            cfg: BertConfig {
                hidden: h,
                heads: cfg.num_attention_heads,
                eps: cfg.layer_norm_eps,
                max_positions: cfg.max_position_embeddings - pos_offset,
            },
            word: WordTable::F32 { rows: vocab, data: word },
            pos,
            type0,
            eln_w: vec1(elw)?,
            eln_b: vec1(elb)?,
            layers,
        };
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| EmbedError::invalid(&tok_path, e.to_string()))?;
        tokenizer.with_truncation(None).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "bert".into());
        let digest = Sha256::digest(&map[..]);
        let id = format!("{name}@{}", &hex::encode(digest)[..12]);
        let is_e5 = name.to_lowercase().contains("e5");
        let (query_prefix, passage_prefix) =
            if is_e5 { ("query: ".to_string(), "passage: ".to_string()) } else { (String::new(), String::new()) };
        let (max_batch, token_budget) = (32, 8192);
        let bert = Encoder::new(bert, runtime, &id, max_batch, token_budget)?;
        Ok(BertEmbedder { id, bert, tokenizer, max_tokens, query_prefix, passage_prefix, max_batch, token_budget })
    }

    /// Sets the prefixes put before queries and passages (e.g. `query: ` / `passage: ` for e5
    /// models; none by default unless the folder name contains "e5").
    pub fn with_prefixes(mut self, query: &str, passage: &str) -> Self {
        self.query_prefix = query.to_string();
        self.passage_prefix = passage.to_string();
        self
    }

    /// The runtime the encoder runs on.
    pub fn runtime(&self) -> EncoderRuntime {
        self.bert.runtime()
    }

    /// The folder this model was loaded from is not kept; this names the tokenizer's vocabulary
    /// size, useful for diagnostics.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let rows = self.bert.rows as u32;
        texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| {
                let enc = self.tokenizer.encode(t.as_str(), true).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
                let ids = enc.get_ids().to_vec();
                if ids.len() > self.max_tokens {
                    return Err(EmbedError::TooLong { index: i, tokens: ids.len(), limit: self.max_tokens });
                }
                if ids.iter().any(|&id| id >= rows) {
                    return Err(EmbedError::Tokenizer(format!("text #{i}: token id outside the embedding table")));
                }
                Ok(ids)
            })
            .collect()
    }

    fn embed(&self, texts: &[&str], prefix: &str) -> Result<Vec<Vec<f32>>> {
        let full: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let ids = self.encode(&full)?;
        let lens: Vec<usize> = ids.iter().map(|v| v.len()).collect();
        let mut out = vec![Vec::new(); texts.len()];
        for group in plan_batches(&lens, self.max_batch, self.token_budget) {
            let seqs: Vec<&[u32]> = group.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, mut v) in group.iter().zip(self.bert.mean_pooled(&seqs)?) {
                l2_normalize(&mut v);
                out[i] = v;
            }
        }
        Ok(out)
    }
}

impl Embedder for BertEmbedder {
    fn id(&self) -> &str {
        &self.id
    }
    fn dim(&self) -> usize {
        self.bert.cfg.hidden
    }
    fn max_tokens(&self) -> usize {
        self.max_tokens
    }
    fn count_tokens(&self, text: &str) -> Result<usize> {
        let t = format!("{}{text}", self.passage_prefix);
        let enc = self.tokenizer.encode(t.as_str(), true).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().len())
    }
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed(texts, &self.passage_prefix)
    }
    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        Ok(self.embed(&[text], &self.query_prefix)?.pop().unwrap_or_default())
    }
}

/// Folder of all-MiniLM-L6-v2 for tests (`TRIDENT_TEST_MINILM`), if set.
#[cfg(test)]
fn test_dir() -> Option<std::path::PathBuf> {
    match std::env::var_os("TRIDENT_TEST_MINILM") {
        Some(p) => Some(std::path::PathBuf::from(p)),
        None => {
            eprintln!("TRIDENT_TEST_MINILM is unset: skipping the all-MiniLM-L6-v2 test");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosine;

    #[test]
    fn missing_folder_is_user_error() {
        let e = BertEmbedder::load("/nonexistent/model").err().expect("must fail");
        assert!(e.is_user_error(), "{e}");
    }

    #[test]
    fn minilm_semantics_and_limits() {
        let Some(dir) = test_dir() else { return };
        let m = BertEmbedder::load(&dir).expect("load");
        assert_eq!(m.dim(), 384);
        assert_eq!(m.max_tokens(), 256);
        let q = m.embed_query("How much does the business plan cost per month?").expect("embed");
        let p = m
            .embed_passages(&["The Business plan costs 4,900 rubles per month.", "Employees request vacation two weeks ahead."])
            .expect("embed");
        assert!(cosine(&q, &p[0]) > cosine(&q, &p[1]) + 0.1);
        // batched and single embeddings agree (padding is masked)
        let single = m.embed_passages(&["Employees request vacation two weeks ahead."]).expect("embed");
        assert!(cosine(&single[0], &p[1]) > 0.9999);
        let long = "word ".repeat(400);
        assert!(matches!(m.embed_passages(&[long.as_str()]), Err(EmbedError::TooLong { limit: 256, .. })));
    }
}
