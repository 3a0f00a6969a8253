//! Tiny random-weight GGUF models of every supported [`Family`], for tests that must not
//! download anything (cargo feature `testing`).
//!
//! Each model has every metadata key llama.cpp needs for its architecture, a small but real
//! tokenizer (byte-level GPT-2 BPE for qwen2/qwen3/llama with the family's pre-tokenizer and
//! special tokens; SentencePiece with byte fallback for gemma3, as in the real Gemma files),
//! the family's chat template, and random weights drawn from a seed (same seed → same bytes).
//! By default the weights mix F32, F16, Q8_0 and Q5_0 tensors so quantized code paths are
//! exercised; [`TinyConfig::all_f32`] gives exact F32 weights for numerical comparisons.
//!
//! ```no_run
//! use trident_gguf::{Family, testing::write_tiny_model};
//! let dir = std::env::temp_dir();
//! let tiny = write_tiny_model(Family::Qwen2, &dir.join("tiny-qwen2.gguf"), 42).unwrap();
//! assert_eq!(tiny.config.hidden, 64);
//! ```

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::arch::Family;
use crate::error::GgufError;
use crate::types::{GgmlType, MetadataValue};
use crate::writer::GgufWriter;

/// Dimensions and storage of a tiny model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TinyConfig {
    /// Hidden size (`embedding_length`).
    pub hidden: usize,
    /// Number of layers (`block_count`).
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when < `heads`).
    pub kv_heads: usize,
    /// Size of one head. Equals `hidden / heads` for qwen2 and llama; qwen3 and gemma3 use an
    /// explicit `attention.key_length` that differs from it, as their real models do.
    pub head_dim: usize,
    /// Feed-forward size.
    pub ffn: usize,
    /// Training context length written to the metadata.
    pub context_length: usize,
    /// Gemma3 only: sliding-window size of the local-attention layers.
    pub sliding_window: usize,
    /// Mix F32, F16, Q8_0 and Q5_0 tensors (true, the default) or store everything as F32.
    pub mixed_types: bool,
    /// Whether `output.weight` is tied to `token_embd.weight` (no separate tensor).
    pub tied_output: bool,
}

impl TinyConfig {
    /// The default tiny dimensions for `family`: hidden 64, 2 layers, 4 heads, 2 KV heads,
    /// ffn 128, context 512; head_dim 16 (qwen2, llama) or 32 (qwen3, gemma3); tied output for
    /// qwen3 and gemma3; mixed tensor types.
    pub fn for_family(family: Family) -> TinyConfig {
        let explicit_head_dim = matches!(family, Family::Qwen3 | Family::Gemma3);
        TinyConfig {
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: if explicit_head_dim { 32 } else { 16 },
            ffn: 128,
            context_length: 512,
            sliding_window: 16,
            mixed_types: true,
            tied_output: matches!(family, Family::Qwen3 | Family::Gemma3),
        }
    }

    /// The same dimensions with every tensor stored as F32.
    pub fn all_f32(mut self) -> TinyConfig {
        self.mixed_types = false;
        self
    }
}

/// What [`write_tiny_model`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TinyModel {
    /// The GGUF file.
    pub path: PathBuf,
    /// Its family.
    pub family: Family,
    /// Its dimensions.
    pub config: TinyConfig,
    /// Number of tokens in the vocabulary.
    pub vocab_size: usize,
    /// BOS token id.
    pub bos_token_id: u32,
    /// EOS token id.
    pub eos_token_id: u32,
    /// End-of-turn token id of the chat format (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`).
    pub eot_token_id: u32,
    /// Special tokens and their ids.
    pub special_tokens: Vec<(String, u32)>,
    /// The chat template written to `tokenizer.chat_template`.
    pub chat_template: String,
}

/// Write a tiny random model of `family` to `path` with the default [`TinyConfig`].
pub fn write_tiny_model(family: Family, path: &Path, seed: u64) -> Result<TinyModel, GgufError> {
    write_tiny_model_with(family, path, seed, &TinyConfig::for_family(family))
}

/// Chat templates (Jinja, as found in the real models' `tokenizer.chat_template`, shortened).
pub fn chat_template(family: Family) -> &'static str {
    match family {
        Family::Qwen2 => QWEN2_TEMPLATE,
        Family::Qwen3 => QWEN3_TEMPLATE,
        Family::Llama => LLAMA3_TEMPLATE,
        Family::Gemma3 => GEMMA3_TEMPLATE,
    }
}

const QWEN2_TEMPLATE: &str = "{%- if messages[0]['role'] == 'system' %}\
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\
{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}\
{%- for message in messages %}{%- if not (message['role'] == 'system' and loop.first) %}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{%- endif %}{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

const QWEN3_TEMPLATE: &str = "{%- for message in messages %}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}\
{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}\
{%- endif %}";

const LLAMA3_TEMPLATE: &str = "{{- bos_token }}\
{%- for message in messages %}\
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

const GEMMA3_TEMPLATE: &str = "{{ bos_token }}\
{%- if messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}\
{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}\
{%- for message in loop_messages -%}\
{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}\
{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}";

/// Text pieces the tiny tokenizers know as whole tokens (besides single bytes / characters).
const PIECES: &[&str] = &[
    " the", " and", " of", " to", " in", " is", "ing", "er", "on", "re", "at", "en", "es", "or",
    " a", " s", " w", " c", " b", " f", " m", " p", " Hello", "Hello", " world", "ll", "it",
    "\n\n", "  ", " при", " привет", "Привет", " мир", " по", " на", " не", " в", " и", "ст",
    "то", "ени", "ение", " пароль", " как", " что", "ов", "ал",
];

/// GPT-2's byte → printable-character map.
fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("256..=323 are valid chars")
}

fn byte_level(s: &str) -> String {
    s.bytes().map(byte_to_char).collect()
}

struct Vocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    scores: Vec<f32>,
    merges: Vec<String>,
}

impl Vocab {
    fn id(&self, t: &str) -> u32 {
        self.tokens.iter().position(|x| x == t).expect("special token was added") as u32
    }
    fn push(&mut self, t: String, ty: i32, score: f32) {
        if !self.tokens.contains(&t) {
            self.tokens.push(t);
            self.types.push(ty);
            self.scores.push(score);
        }
    }
}

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// Byte-level BPE: 256 byte tokens, merges building every Cyrillic letter and [`PIECES`]
/// character by character, then `specials`.
fn bpe_vocab(specials: &[(&str, i32)]) -> Vocab {
    let mut v = Vocab { tokens: Vec::new(), types: Vec::new(), scores: Vec::new(), merges: Vec::new() };
    for b in 0..=255u8 {
        v.push(byte_to_char(b).to_string(), NORMAL, 0.0);
    }
    let add_merge = |v: &mut Vocab, left: &str, right: &str| {
        let joined = format!("{left}{right}");
        if !v.tokens.contains(&joined) {
            v.merges.push(format!("{left} {right}"));
            v.push(joined, NORMAL, 0.0);
        }
    };
    // Multi-byte characters first, so words can be built from whole characters.
    let cyrillic = ('а'..='я').chain('А'..='Я').chain(['ё', 'Ё']);
    let mut chars: Vec<char> = cyrillic.collect();
    for p in PIECES {
        chars.extend(p.chars());
    }
    for c in chars {
        let bl: Vec<String> = c.to_string().bytes().map(|b| byte_to_char(b).to_string()).collect();
        let mut acc = bl[0].clone();
        for next in &bl[1..] {
            add_merge(&mut v, &acc, next);
            acc.push_str(next);
        }
    }
    for p in PIECES {
        let cs: Vec<String> = p.chars().map(|c| byte_level(&c.to_string())).collect();
        let mut acc = cs[0].clone();
        for next in &cs[1..] {
            add_merge(&mut v, &acc, next);
            acc.push_str(next);
        }
    }
    for (s, ty) in specials {
        v.push((*s).to_string(), *ty, 0.0);
    }
    v
}

/// SentencePiece with byte fallback, Gemma-style: `<pad> <eos> <bos> <unk>`, turn markers,
/// 256 `<0xXX>` byte tokens, printable ASCII and Cyrillic characters, then [`PIECES`] built
/// character by character (spaces as `▁`), scored so longer known pieces win.
fn spm_vocab() -> Vocab {
    let mut v = Vocab { tokens: Vec::new(), types: Vec::new(), scores: Vec::new(), merges: Vec::new() };
    for (s, ty) in [("<pad>", CONTROL), ("<eos>", CONTROL), ("<bos>", CONTROL), ("<unk>", 2)] {
        v.push(s.to_string(), ty, 0.0);
    }
    for s in ["<start_of_turn>", "<end_of_turn>"] {
        v.push(s.to_string(), CONTROL, 0.0);
    }
    for b in 0..=255u8 {
        v.push(format!("<0x{b:02X}>"), BYTE, 0.0);
    }
    let mut score = -1.0f32;
    let mut chars: Vec<char> = vec!['▁'];
    chars.extend((b'!'..=b'~').map(char::from));
    chars.extend(('а'..='я').chain('А'..='Я').chain(['ё', 'Ё']));
    for c in chars {
        v.push(c.to_string(), NORMAL, -1000.0 + score);
        score -= 0.01;
    }
    let mut score = -1.0f32;
    for p in PIECES {
        let p = p.replace(' ', "▁");
        let cs: Vec<char> = p.chars().collect();
        let mut acc = String::new();
        for c in cs {
            acc.push(c);
            if acc.chars().count() >= 2 {
                v.push(acc.clone(), NORMAL, score);
                score -= 1.0;
            } else {
                v.push(acc.clone(), NORMAL, -1000.0);
            }
        }
    }
    v
}

struct Rand(ChaCha8Rng);

impl Rand {
    fn uniform(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.0.random_range(-scale..scale)).collect()
    }
    fn around_one(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| 1.0 + self.0.random_range(-0.1f32..0.1)).collect()
    }
}

/// Write a tiny random model of `family` with explicit dimensions.
pub fn write_tiny_model_with(family: Family, path: &Path, seed: u64, cfg: &TinyConfig) -> Result<TinyModel, GgufError> {
    let bad = |d: &str| GgufError::InvalidWrite { detail: format!("tiny {family} model: {d}") };
    if cfg.heads == 0 || cfg.kv_heads == 0 || cfg.heads % cfg.kv_heads != 0 {
        return Err(bad("heads must be a positive multiple of kv_heads"));
    }
    if matches!(family, Family::Qwen2 | Family::Llama) && cfg.head_dim * cfg.heads != cfg.hidden {
        return Err(bad("qwen2 and llama need head_dim * heads == hidden"));
    }
    if cfg.mixed_types && (cfg.hidden % 32 != 0 || cfg.ffn % 32 != 0 || (cfg.heads * cfg.head_dim) % 32 != 0) {
        return Err(bad("mixed types need hidden, ffn and heads*head_dim to be multiples of 32"));
    }
    let arch = family.architecture();
    let (vocab, bos, eos, eot, specials) = match family {
        Family::Qwen2 | Family::Qwen3 => {
            let mut sp = vec![("<|endoftext|>", CONTROL), ("<|im_start|>", CONTROL), ("<|im_end|>", CONTROL)];
            if family == Family::Qwen3 {
                sp.push(("<think>", USER_DEFINED));
                sp.push(("</think>", USER_DEFINED));
            }
            let v = bpe_vocab(&sp);
            let (bos, eos) = (v.id("<|endoftext|>"), v.id("<|im_end|>"));
            let names: Vec<(String, u32)> = sp.iter().map(|(s, _)| (s.to_string(), v.id(s))).collect();
            (v, bos, eos, eos, names)
        }
        Family::Llama => {
            let sp = [
                ("<|begin_of_text|>", CONTROL),
                ("<|end_of_text|>", CONTROL),
                ("<|start_header_id|>", CONTROL),
                ("<|end_header_id|>", CONTROL),
                ("<|eot_id|>", CONTROL),
            ];
            let v = bpe_vocab(&sp);
            let (bos, eos) = (v.id("<|begin_of_text|>"), v.id("<|eot_id|>"));
            let names = sp.iter().map(|(s, _)| (s.to_string(), v.id(s))).collect();
            (v, bos, eos, eos, names)
        }
        Family::Gemma3 => {
            let v = spm_vocab();
            let names = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
                .iter()
                .map(|s| (s.to_string(), v.id(s)))
                .collect();
            let (bos, eos, eot) = (v.id("<bos>"), v.id("<eos>"), v.id("<end_of_turn>"));
            (v, bos, eos, eot, names)
        }
    };
    let n_vocab = vocab.tokens.len();
    let template = chat_template(family);

    let mut w = GgufWriter::new();
    w.set("general.architecture", arch);
    w.set("general.type", "model");
    w.set("general.name", format!("Trident tiny {arch} (seed {seed})"));
    w.set("general.file_type", if cfg.mixed_types { 7u32 } else { 0u32 });
    w.set("general.quantization_version", 2u32);
    let k = |s: &str| format!("{arch}.{s}");
    w.set(k("context_length"), cfg.context_length as u32);
    w.set(k("embedding_length"), cfg.hidden as u32);
    w.set(k("block_count"), cfg.layers as u32);
    w.set(k("feed_forward_length"), cfg.ffn as u32);
    w.set(k("attention.head_count"), cfg.heads as u32);
    w.set(k("attention.head_count_kv"), cfg.kv_heads as u32);
    let (rope_base, eps) = match family {
        Family::Qwen2 | Family::Qwen3 => (1_000_000f32, 1e-6f32),
        Family::Llama => (500_000f32, 1e-5f32),
        Family::Gemma3 => (1_000_000f32, 1e-6f32),
    };
    w.set(k("rope.freq_base"), rope_base);
    w.set(k("attention.layer_norm_rms_epsilon"), eps);
    match family {
        Family::Qwen3 | Family::Gemma3 => {
            w.set(k("attention.key_length"), cfg.head_dim as u32);
            w.set(k("attention.value_length"), cfg.head_dim as u32);
        }
        Family::Llama => {
            w.set(k("rope.dimension_count"), cfg.head_dim as u32);
            w.set(k("vocab_size"), n_vocab as u32);
        }
        Family::Qwen2 => {}
    }
    if family == Family::Gemma3 {
        w.set(k("attention.sliding_window"), cfg.sliding_window as u32);
        // Every 2nd layer is global (real Gemma 3: every 6th); layer 0 is local.
        w.set(k("attention.sliding_window_pattern"), 2u32);
        w.set(k("rope.freq_base_swa"), 10_000f32);
    }

    // Tokenizer.
    match family {
        Family::Gemma3 => {
            w.set("tokenizer.ggml.model", "llama");
            w.set("tokenizer.ggml.pre", "default");
            w.set_str_array("tokenizer.ggml.tokens", &vocab.tokens);
            w.set_f32_array("tokenizer.ggml.scores", &vocab.scores);
            w.set_i32_array("tokenizer.ggml.token_type", &vocab.types);
            w.set("tokenizer.ggml.bos_token_id", bos);
            w.set("tokenizer.ggml.eos_token_id", eos);
            w.set("tokenizer.ggml.unknown_token_id", vocab.id("<unk>"));
            w.set("tokenizer.ggml.padding_token_id", vocab.id("<pad>"));
            w.set("tokenizer.ggml.add_bos_token", true);
            w.set("tokenizer.ggml.add_eos_token", false);
            w.set("tokenizer.ggml.add_space_prefix", false);
        }
        _ => {
            w.set("tokenizer.ggml.model", "gpt2");
            w.set("tokenizer.ggml.pre", if family == Family::Llama { "llama-bpe" } else { "qwen2" });
            w.set_str_array("tokenizer.ggml.tokens", &vocab.tokens);
            w.set_i32_array("tokenizer.ggml.token_type", &vocab.types);
            w.set_str_array("tokenizer.ggml.merges", &vocab.merges);
            w.set("tokenizer.ggml.bos_token_id", bos);
            w.set("tokenizer.ggml.eos_token_id", eos);
            let pad = if family == Family::Llama { eos } else { bos };
            w.set("tokenizer.ggml.padding_token_id", pad);
            w.set("tokenizer.ggml.add_bos_token", family == Family::Llama);
        }
    }
    w.set("tokenizer.chat_template", template);

    // Weights.
    let mut rng = Rand(ChaCha8Rng::seed_from_u64(seed));
    let (h, f, hd) = (cfg.hidden as u64, cfg.ffn as u64, cfg.head_dim as u64);
    let (q_out, kv_out) = (cfg.heads as u64 * hd, cfg.kv_heads as u64 * hd);
    let ty = |mixed: GgmlType| if cfg.mixed_types { mixed } else { GgmlType::F32 };
    let lin = |rng: &mut Rand, fan_in: u64, n: u64| rng.uniform(n as usize, 1.0 / (fan_in as f32).sqrt());

    let embd = rng.uniform(n_vocab * cfg.hidden, 1.0);
    w.add_tensor("token_embd.weight", &[h, n_vocab as u64], &embd, ty(GgmlType::Q8_0))?;
    for l in 0..cfg.layers {
        let b = |s: &str| format!("blk.{l}.{s}");
        w.add_tensor(&b("attn_norm.weight"), &[h], &rng.around_one(cfg.hidden), GgmlType::F32)?;
        w.add_tensor(&b("attn_q.weight"), &[h, q_out], &lin(&mut rng, h, h * q_out), ty(GgmlType::Q8_0))?;
        w.add_tensor(&b("attn_k.weight"), &[h, kv_out], &lin(&mut rng, h, h * kv_out), ty(GgmlType::F16))?;
        w.add_tensor(&b("attn_v.weight"), &[h, kv_out], &lin(&mut rng, h, h * kv_out), GgmlType::F32)?;
        if family == Family::Qwen2 {
            w.add_tensor(&b("attn_q.bias"), &[q_out], &rng.uniform(q_out as usize, 0.1), GgmlType::F32)?;
            w.add_tensor(&b("attn_k.bias"), &[kv_out], &rng.uniform(kv_out as usize, 0.1), GgmlType::F32)?;
            w.add_tensor(&b("attn_v.bias"), &[kv_out], &rng.uniform(kv_out as usize, 0.1), GgmlType::F32)?;
        }
        if matches!(family, Family::Qwen3 | Family::Gemma3) {
            w.add_tensor(&b("attn_q_norm.weight"), &[hd], &rng.around_one(cfg.head_dim), GgmlType::F32)?;
            w.add_tensor(&b("attn_k_norm.weight"), &[hd], &rng.around_one(cfg.head_dim), GgmlType::F32)?;
        }
        w.add_tensor(&b("attn_output.weight"), &[q_out, h], &lin(&mut rng, q_out, q_out * h), GgmlType::F32)?;
        if family == Family::Gemma3 {
            w.add_tensor(&b("post_attention_norm.weight"), &[h], &rng.around_one(cfg.hidden), GgmlType::F32)?;
        }
        w.add_tensor(&b("ffn_norm.weight"), &[h], &rng.around_one(cfg.hidden), GgmlType::F32)?;
        w.add_tensor(&b("ffn_gate.weight"), &[h, f], &lin(&mut rng, h, h * f), GgmlType::F32)?;
        let up_type = if l % 2 == 1 { GgmlType::Q5_0 } else { GgmlType::Q8_0 };
        w.add_tensor(&b("ffn_up.weight"), &[h, f], &lin(&mut rng, h, h * f), ty(up_type))?;
        w.add_tensor(&b("ffn_down.weight"), &[f, h], &lin(&mut rng, f, f * h), GgmlType::F32)?;
        if family == Family::Gemma3 {
            w.add_tensor(&b("post_ffw_norm.weight"), &[h], &rng.around_one(cfg.hidden), GgmlType::F32)?;
        }
    }
    w.add_tensor("output_norm.weight", &[h], &rng.around_one(cfg.hidden), GgmlType::F32)?;
    if !cfg.tied_output {
        let out = lin(&mut rng, h, h * n_vocab as u64);
        w.add_tensor("output.weight", &[h, n_vocab as u64], &out, ty(GgmlType::Q8_0))?;
    }
    debug_assert!(matches!(w.get("general.architecture"), Some(MetadataValue::String(_))));
    w.write(path)?;

    Ok(TinyModel {
        path: path.to_path_buf(),
        family,
        config: cfg.clone(),
        vocab_size: n_vocab,
        bos_token_id: bos,
        eos_token_id: eos,
        eot_token_id: eot,
        special_tokens: specials,
        chat_template: template.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::inspect;

    #[test]
    fn byte_map_is_a_bijection_onto_gpt2_chars() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            assert!(seen.insert(byte_to_char(b)));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'A'), 'A');
    }

    #[test]
    fn bpe_merges_only_produce_known_tokens() {
        let v = bpe_vocab(&[("<|im_end|>", CONTROL)]);
        let set: std::collections::HashSet<&str> = v.tokens.iter().map(String::as_str).collect();
        assert_eq!(set.len(), v.tokens.len(), "no duplicate tokens");
        for m in &v.merges {
            let (l, r) = m.split_once(' ').unwrap();
            assert!(set.contains(l) && set.contains(r) && set.contains(format!("{l}{r}").as_str()), "{m}");
        }
        assert!(set.contains(byte_level(" привет").as_str()));
    }

    #[test]
    fn every_family_passes_inspect_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        for family in Family::ALL {
            let p1 = dir.path().join(format!("{family}-a.gguf"));
            let p2 = dir.path().join(format!("{family}-b.gguf"));
            let tiny = write_tiny_model(family, &p1, 7).unwrap();
            write_tiny_model(family, &p2, 7).unwrap();
            assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap(), "{family}: same seed, same bytes");
            let p3 = dir.path().join(format!("{family}-c.gguf"));
            write_tiny_model(family, &p3, 8).unwrap();
            assert_ne!(std::fs::read(&p1).unwrap(), std::fs::read(&p3).unwrap(), "{family}: seed matters");

            let info = inspect(&p1).unwrap();
            assert_eq!(info.family(), Some(family));
            assert_eq!(info.embedding_length, Some(64));
            assert_eq!(info.block_count, Some(2));
            assert_eq!(info.head_count, Some(4));
            assert_eq!(info.head_count_kv, Some(2));
            assert_eq!(info.head_dim(), Some(tiny.config.head_dim as u64));
            assert_eq!(info.vocab_size, Some(tiny.vocab_size as u64));
            assert_eq!(info.bos_token_id, Some(tiny.bos_token_id));
            assert_eq!(info.chat_template.as_deref(), Some(chat_template(family)));
            for t in ["F32", "Q8_0", "F16", "Q5_0"] {
                assert!(info.tensor_types.contains_key(t), "{family} has {t} tensors: {:?}", info.tensor_types);
            }
            assert_eq!(info.tensor("output.weight").is_some(), !tiny.config.tied_output);

            let p4 = dir.path().join(format!("{family}-f32.gguf"));
            write_tiny_model_with(family, &p4, 7, &TinyConfig::for_family(family).all_f32()).unwrap();
            let info = inspect(&p4).unwrap();
            assert_eq!(info.tensor_types.keys().collect::<Vec<_>>(), ["F32"]);
            assert_eq!(info.file_type_label.as_deref(), Some("F32"));
        }
    }
}
