//! Variable sources: flags (see [`crate::vars::parse_flags`]), JSON and CSV files (one render
//! per row), an HTTP JSON endpoint (e.g. a CRM record fetched with a header token), and a
//! knowledge base through the [`Retriever`] trait that the RAG crate implements.

use crate::error::{PromptError, Result};
use crate::spec::PromptSpec;
use crate::vars::{VarType, Values};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A retrieved passage with what is needed to cite it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitedChunk {
    /// Where it comes from (file path, URL, document id).
    pub source: String,
    /// Document title.
    pub title: String,
    /// Document version ("" when unknown).
    pub version: String,
    /// Section / heading path ("" when unknown).
    pub section: String,
    /// The passage.
    pub text: String,
}

/// Retrieval from a knowledge base (implemented by the RAG crate; access control is its job).
pub trait Retriever {
    /// The `k` passages most relevant to `query`, best first.
    fn retrieve(&self, query: &str, k: usize) -> Result<Vec<CitedChunk>>;
}

/// Anything that yields variable values: a file, an HTTP endpoint, a CRM webhook payload.
pub trait DataSource {
    /// One JSON value (an object of variables, or the value of one variable).
    fn fetch(&self) -> Result<Value>;
    /// A name for messages (never containing secrets).
    fn describe(&self) -> String;
}

/// Reads rows of values from a JSON file: an object is one row, an array of objects is many.
pub fn json_rows(path: &Path) -> Result<Vec<Values>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PromptError::Io { path: path.into(), source })?;
    let value: Value = if path.extension().is_some_and(|e| e == "jsonl") {
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            rows.push(serde_json::from_str::<Value>(line).map_err(|e| PromptError::Source {
                source_name: format!("{name}:{}", i + 1),
                message: format!("not JSON at column {}: {e}", e.column()),
            })?);
        }
        Value::Array(rows)
    } else {
        serde_json::from_str(&text).map_err(|e| PromptError::Source {
            source_name: format!("{name}:{}:{}", e.line(), e.column()),
            message: format!("not JSON: {e}"),
        })?
    };
    match value {
        Value::Object(m) => Ok(vec![m]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(m) => Ok(m),
                other => Err(PromptError::Source {
                    source_name: name.clone(),
                    message: format!("row {} is {}, expected an object of variables", i + 1, short(&other)),
                }),
            })
            .collect(),
        other => Err(PromptError::Source { source_name: name, message: format!("expected an object or a list of objects, got {}", short(&other)) }),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(40).collect()
}

/// Reads rows of values from a CSV file with a header row; each cell is converted to the
/// declared type of its column's variable (columns named `a.b` fill object fields).
pub fn csv_rows(path: &Path, spec: &PromptSpec) -> Result<Vec<Values>> {
    let name = path.display().to_string();
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_path(path).map_err(|e| csv_err(&name, e))?;
    let headers: Vec<String> = reader.headers().map_err(|e| csv_err(&name, e))?.iter().map(|h| h.trim().to_string()).collect();
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| csv_err(&name, e))?;
        let flags: Vec<String> = headers.iter().zip(rec.iter()).map(|(h, v)| format!("{h}={v}")).collect();
        let values = crate::vars::parse_flags(&spec.variables, &flags).map_err(|e| PromptError::Source {
            source_name: format!("{name} row {}", i + 2),
            message: e.to_string(),
        })?;
        rows.push(values);
    }
    Ok(rows)
}

fn csv_err(name: &str, e: csv::Error) -> PromptError {
    let where_ = e.position().map(|p| format!(" (line {})", p.line())).unwrap_or_default();
    PromptError::Source { source_name: format!("{name}{where_}"), message: e.to_string() }
}

/// An HTTP JSON source: GET `url` with an optional header (e.g. `Authorization: Bearer …`),
/// a timeout, and an optional JSON pointer selecting part of the response.
#[derive(Debug, Clone)]
pub struct HttpSource {
    /// The URL.
    pub url: String,
    /// Extra headers (name, value); values are never printed.
    pub headers: Vec<(String, String)>,
    /// Connect + read timeout.
    pub timeout: Duration,
    /// JSON pointer (`/data/client`) into the response; None for the whole body.
    pub pointer: Option<String>,
}

impl HttpSource {
    /// A source with a 10-second timeout and no headers.
    pub fn new(url: impl Into<String>) -> Self {
        HttpSource { url: url.into(), headers: Vec::new(), timeout: Duration::from_secs(10), pointer: None }
    }

    fn err(&self, message: impl Into<String>, user: bool) -> PromptError {
        PromptError::Http { url: self.url.clone(), message: message.into(), user }
    }
}

impl DataSource for HttpSource {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn fetch(&self) -> Result<Value> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| self.err(format!("bad URL: {e}"), true))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.err("only http and https URLs are supported", true));
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .build()
            .map_err(|e| self.err(format!("cannot build HTTP client: {e}"), false))?;
        let mut req = client.get(url).header("Accept", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().map_err(|e| {
            if e.is_timeout() {
                self.err(format!("no answer within {:.1} s (timeout)", self.timeout.as_secs_f64()), false)
            } else if e.is_connect() {
                self.err(format!("unreachable: {}", root_cause(&e)), false)
            } else {
                self.err(format!("request failed: {}", root_cause(&e)), false)
            }
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.err(format!("HTTP status {status}"), status.is_client_error()));
        }
        let body = resp.text().map_err(|e| {
            if e.is_timeout() {
                self.err(format!("body not received within {:.1} s (timeout)", self.timeout.as_secs_f64()), false)
            } else {
                self.err(format!("reading the body failed: {}", root_cause(&e)), false)
            }
        })?;
        let value: Value = serde_json::from_str(&body)
            .map_err(|e| self.err(format!("response is not JSON (line {} column {}): {e}", e.line(), e.column()), true))?;
        match &self.pointer {
            None => Ok(value),
            Some(p) => value.pointer(p).cloned().ok_or_else(|| self.err(format!("response has nothing at JSON pointer {p:?}"), true)),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Fetches a source and stores its value: into variable `var` when given (type-checked), or,
/// when the value is an object, its keys as variables.
pub fn merge_source(spec: &PromptSpec, values: &mut Values, source: &dyn DataSource, var: Option<&str>) -> Result<()> {
    let value = source.fetch()?;
    match var {
        Some(name) => {
            let decl = spec.variables.iter().find(|v| v.name == name).ok_or_else(|| PromptError::UnknownVariable {
                name: name.into(),
                field: format!("source {}", source.describe()),
                known: spec.variables.iter().map(|v| v.name.clone()).collect(),
            })?;
            let value = match (&value, decl.kind) {
                (Value::String(s), k) if k != VarType::String => decl.kind.coerce_text(name, s)?,
                _ => value,
            };
            decl.kind.check(name, &value)?;
            values.insert(name.into(), value);
        }
        None => match value {
            Value::Object(m) => values.extend(m),
            other => {
                return Err(PromptError::Source {
                    source_name: source.describe(),
                    message: format!("returned {}, not an object of variables; name the variable it fills", short(&other)),
                });
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Format;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-connection-at-a-time HTTP server on 127.0.0.1 answering every request with
    /// `status`/`body` after `delay`, recording the request heads it saw.
    fn serve(status: &'static str, body: &'static str, delay: Duration) -> (String, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { break };
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_string());
                std::thread::sleep(delay);
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes());
            }
        });
        (format!("http://{addr}"), rx)
    }

    fn crm_spec() -> PromptSpec {
        PromptSpec::parse(
            "name = \"x\"\ntask = \"Письмо для {{client.name}}\"\n[[variables]]\nname = \"client\"\ntype = \"object\"\n",
            Format::Toml,
            "t",
        )
        .unwrap()
    }

    #[test]
    fn http_source_fetches_with_token_and_pointer() {
        let (url, seen) = serve("200 OK", r#"{"data": {"client": {"name": "Ирина", "tier": "gold"}}}"#, Duration::ZERO);
        let mut src = HttpSource::new(format!("{url}/clients/42"));
        src.headers.push(("Authorization".into(), "Bearer s3cret".into()));
        src.pointer = Some("/data/client".into());
        let spec = crm_spec();
        let mut values = Values::new();
        merge_source(&spec, &mut values, &src, Some("client")).unwrap();
        assert_eq!(values["client"]["name"], "Ирина");
        let head = seen.recv().unwrap();
        assert!(head.starts_with("GET /clients/42 "), "{head}");
        assert!(head.to_lowercase().contains("authorization: bearer s3cret"), "{head}");
        let c = crate::compile::compile(&spec, &values, &Default::default()).unwrap();
        assert_eq!(c.messages.last().unwrap().content, "Письмо для Ирина");
    }

    #[test]
    fn http_unreachable_is_a_clear_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let src = HttpSource::new(format!("http://127.0.0.1:{port}/x"));
        let e = src.fetch().unwrap_err();
        assert!(matches!(e, PromptError::Http { .. }), "{e}");
        assert!(e.to_string().contains("unreachable"), "{e}");
        assert!(!e.is_user_error());
    }

    #[test]
    fn http_timeout_is_a_clear_error() {
        let (url, _seen) = serve("200 OK", "{}", Duration::from_secs(3));
        let mut src = HttpSource::new(url);
        src.timeout = Duration::from_millis(300);
        let t = std::time::Instant::now();
        let e = src.fetch().unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "the timeout was not applied");
    }

    #[test]
    fn http_bad_status_and_bad_body() {
        let (url, _s) = serve("404 Not Found", "{}", Duration::ZERO);
        let e = HttpSource::new(url).fetch().unwrap_err();
        assert!(e.to_string().contains("404") && e.is_user_error(), "{e}");
        let (url, _s) = serve("200 OK", "<html>", Duration::ZERO);
        let e = HttpSource::new(url).fetch().unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        let e = HttpSource::new("ftp://example.invalid/x").fetch().unwrap_err();
        assert!(e.is_user_error(), "{e}");
    }

    #[test]
    fn csv_rows_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rows.csv");
        std::fs::write(&p, "client.name,client.city\nАнна,Казань\nОлег,Пермь\n").unwrap();
        let rows = csv_rows(&p, &crm_spec()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["client"]["city"], "Пермь");
        std::fs::write(&p, "who\nx\n").unwrap();
        let e = csv_rows(&p, &crm_spec()).unwrap_err();
        assert!(e.to_string().contains("row 2") && e.to_string().contains("who"), "{e}");
    }

    #[test]
    fn json_rows_accept_object_array_and_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.json");
        std::fs::write(&p, r#"[{"a": 1}, {"a": 2}]"#).unwrap();
        assert_eq!(json_rows(&p).unwrap().len(), 2);
        std::fs::write(&p, r#"{"a": 1}"#).unwrap();
        assert_eq!(json_rows(&p).unwrap().len(), 1);
        std::fs::write(&p, "[1]").unwrap();
        assert!(json_rows(&p).is_err());
        std::fs::write(&p, "{\n \"a\": }").unwrap();
        let e = json_rows(&p).unwrap_err();
        assert!(e.to_string().contains("v.json:2:"), "{e}");
        let p = dir.path().join("v.jsonl");
        std::fs::write(&p, "{\"a\": 1}\n\n{\"a\": 2}\n").unwrap();
        assert_eq!(json_rows(&p).unwrap().len(), 2);
    }
}
