//! An OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, llama.cpp server, TEI, …).

use std::time::Duration;

use crate::{EmbedError, Embedder, Result, l2_normalize};

/// Settings of an embeddings endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URL up to and including `/v1` (e.g. `http://127.0.0.1:8080/v1`).
    pub base_url: String,
    /// Model name sent in each request.
    pub model: String,
    /// Bearer token, if the endpoint needs one.
    pub api_key: Option<String>,
    /// Vector dimension the model returns (checked on every answer).
    pub dim: usize,
    /// Longest input in tokens the endpoint accepts.
    pub max_tokens: usize,
    /// Texts per request.
    pub batch_size: usize,
    /// Prefix put before queries (e.g. `query: ` for e5 models), empty by default.
    pub query_prefix: String,
    /// Prefix put before passages (e.g. `passage: `), empty by default.
    pub passage_prefix: String,
    /// Request timeout.
    pub timeout: Duration,
}

impl OpenAiConfig {
    /// Settings with defaults: no key, batches of 64, 512 tokens, no prefixes, 60 s timeout.
    pub fn new(base_url: &str, model: &str, dim: usize) -> Self {
        OpenAiConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key: None,
            dim,
            max_tokens: 512,
            batch_size: 64,
            query_prefix: String::new(),
            passage_prefix: String::new(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Embeddings from an HTTP endpoint. Token counts are estimated (≈ 4 bytes per token) because
/// the endpoint's tokenizer is not available locally.
pub struct OpenAiEmbedder {
    cfg: OpenAiConfig,
    id: String,
    client: reqwest::blocking::Client,
}

#[derive(serde::Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(serde::Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// Creates the client; nothing is sent until the first embedding call.
    pub fn new(cfg: OpenAiConfig) -> Result<Self> {
        if cfg.dim == 0 || cfg.batch_size == 0 {
            return Err(EmbedError::Config("dim and batch_size must be positive".into()));
        }
        if !(cfg.base_url.starts_with("http://") || cfg.base_url.starts_with("https://")) {
            return Err(EmbedError::Config(format!("base URL {:?} must start with http:// or https://", cfg.base_url)));
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| EmbedError::Config(format!("HTTP client: {e}")))?;
        let id = format!("openai:{}@{}", cfg.model, cfg.base_url);
        Ok(OpenAiEmbedder { cfg, id, client })
    }

    fn url(&self) -> String {
        format!("{}/embeddings", self.cfg.base_url)
    }

    fn request(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>> {
        let url = self.url();
        let err = |reason: String| EmbedError::Endpoint { url: url.clone(), reason };
        let body = serde_json::json!({ "model": self.cfg.model, "input": inputs, "encoding_format": "float" });
        let mut req = self.client.post(&url).json(&body);
        if let Some(key) = &self.cfg.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().map_err(|e| err(format!("request failed: {e}")))?;
        let status = resp.status();
        let text = resp.text().map_err(|e| err(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            let excerpt: String = text.chars().take(300).collect();
            return Err(err(format!("HTTP {status}: {excerpt}")));
        }
        let parsed: EmbeddingResponse =
            serde_json::from_str(&text).map_err(|e| err(format!("unexpected answer ({e})")))?;
        if parsed.data.len() != inputs.len() {
            return Err(err(format!("{} embeddings for {} inputs", parsed.data.len(), inputs.len())));
        }
        let mut out = vec![Vec::new(); inputs.len()];
        for (pos, item) in parsed.data.into_iter().enumerate() {
            let i = item.index.unwrap_or(pos);
            if i >= out.len() || !out[i].is_empty() {
                return Err(err(format!("bad or repeated index {i}")));
            }
            if item.embedding.len() != self.cfg.dim {
                return Err(err(format!("embedding of length {}, expected {}", item.embedding.len(), self.cfg.dim)));
            }
            let mut v = item.embedding;
            l2_normalize(&mut v);
            out[i] = v;
        }
        Ok(out)
    }

    fn embed(&self, texts: &[&str], prefix: &str) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.cfg.batch_size) {
            let inputs: Vec<String> = chunk.iter().map(|t| format!("{prefix}{t}")).collect();
            out.extend(self.request(&inputs)?);
        }
        Ok(out)
    }
}

impl Embedder for OpenAiEmbedder {
    fn id(&self) -> &str {
        &self.id
    }
    fn dim(&self) -> usize {
        self.cfg.dim
    }
    fn max_tokens(&self) -> usize {
        self.cfg.max_tokens
    }
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok((self.cfg.passage_prefix.len() + text.len()).div_ceil(4) + 2)
    }
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed(texts, &self.cfg.passage_prefix)
    }
    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        Ok(self.embed(&[text], &self.cfg.query_prefix)?.pop().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// A one-thread HTTP server answering `/v1/embeddings`: each input's vector is
    /// [len(input), 1, 0]; the second request (if `fail_second`) answers 500.
    fn serve(requests: usize, fail_second: bool) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for n in 0..requests {
                let (stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                let mut len = 0usize;
                let mut auth = String::new();
                loop {
                    line.clear();
                    reader.read_line(&mut line).expect("read");
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    let lower = l.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().expect("length");
                    }
                    if lower.starts_with("authorization:") {
                        auth = l.to_string();
                    }
                }
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).expect("body");
                let req: serde_json::Value = serde_json::from_slice(&body).expect("json");
                seen.push(format!("{auth}|{}", req["input"]));
                let inputs = req["input"].as_array().expect("array").clone();
                // answer in reverse order with explicit indexes
                let data: Vec<serde_json::Value> = inputs
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, s)| {
                        let l = s.as_str().expect("str").chars().count() as f32;
                        serde_json::json!({"object": "embedding", "index": i, "embedding": [l, 1.0, 0.0]})
                    })
                    .collect();
                let (status, body) = if fail_second && n == 1 {
                    ("500 Internal Server Error", "{\"error\":\"boom\"}".to_string())
                } else {
                    ("200 OK", serde_json::json!({"object": "list", "data": data}).to_string())
                };
                let mut s = stream;
                write!(s, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    .expect("write");
            }
            seen
        });
        (format!("http://{addr}/v1"), handle)
    }

    #[test]
    fn batches_prefixes_order_and_normalisation() {
        let (url, h) = serve(2, false);
        let mut cfg = OpenAiConfig::new(&url, "test-model", 3);
        cfg.batch_size = 2;
        cfg.api_key = Some("secret".into());
        cfg.passage_prefix = "passage: ".into();
        let e = OpenAiEmbedder::new(cfg).expect("client");
        let v = e.embed_passages(&["a", "bbb", "cc"]).expect("embed");
        assert_eq!(v.len(), 3);
        let expect = |l: f32| {
            let n = (l * l + 1.0).sqrt();
            [l / n, 1.0 / n, 0.0]
        };
        for (got, text) in v.iter().zip(["a", "bbb", "cc"]) {
            let want = expect(("passage: ".len() + text.len()) as f32);
            assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?} vs {want:?}");
        }
        let seen = h.join().expect("server");
        assert_eq!(seen.len(), 2);
        assert!(seen[0].starts_with("Authorization: Bearer secret|") || seen[0].starts_with("authorization: Bearer secret|"));
    }

    #[test]
    fn server_errors_and_bad_config_are_reported() {
        let (url, h) = serve(2, true);
        let mut cfg = OpenAiConfig::new(&url, "m", 3);
        cfg.batch_size = 1;
        let e = OpenAiEmbedder::new(cfg).expect("client");
        let err = e.embed_passages(&["x", "y"]).err().expect("second request fails");
        assert!(err.to_string().contains("500"), "{err}");
        h.join().expect("server");
        assert!(OpenAiEmbedder::new(OpenAiConfig::new("ftp://x", "m", 3)).err().expect("bad url").is_user_error());
        // wrong dimension is caught
        let (url, h) = serve(1, false);
        let e = OpenAiEmbedder::new(OpenAiConfig::new(&url, "m", 4)).expect("client");
        assert!(e.embed_query("q").err().expect("dim mismatch").to_string().contains("expected 4"));
        h.join().expect("server");
    }
}
