//! Access maps: folder → groups (`access.json`), `*` meaning everyone.

use crate::RagError;
use std::collections::BTreeMap;
use std::path::Path;

/// Maps folders (relative to an ingested root) to the groups that may read them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessMap(pub BTreeMap<String, Vec<String>>);

impl AccessMap {
    /// Reads and validates an access map file (a JSON object of folder → list of groups).
    pub fn load(path: &Path) -> Result<Self, RagError> {
        let text = std::fs::read_to_string(path).map_err(|source| RagError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|e| RagError::BadInput(format!("{}: {e}", path.display())))
    }

    /// Parses and validates an access map.
    pub fn parse(text: &str) -> Result<Self, String> {
        let map: BTreeMap<String, Vec<String>> =
            serde_json::from_str(text).map_err(|e| format!("not an access map (a JSON object of folder -> [groups]): {e}"))?;
        for (folder, groups) in &map {
            if groups.is_empty() {
                return Err(format!("folder {folder:?} has no groups (use [\"*\"] for everyone)"));
            }
            for g in groups {
                validate_group(g).map_err(|e| format!("folder {folder:?}: {e}"))?;
            }
        }
        Ok(Self(map))
    }

    /// The groups for a file at `rel` (relative to the root): the longest matching folder wins.
    pub fn groups_for(&self, rel: &Path) -> Option<Vec<String>> {
        let mut best: Option<(usize, &Vec<String>)> = None;
        for (folder, groups) in &self.0 {
            let f = Path::new(folder.trim_matches('/'));
            let depth = f.components().count();
            if (folder.is_empty() || folder == "." || rel.starts_with(f)) && best.map(|(d, _)| depth > d).unwrap_or(true) {
                best = Some((depth, groups));
            }
        }
        best.map(|(_, g)| g.clone())
    }
}

/// Checks one group name: `*` or letters, digits, `-`, `_`, `.`.
pub fn validate_group(g: &str) -> Result<(), String> {
    if g == "*" || (!g.is_empty() && g.len() <= 64 && g.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        Ok(())
    } else {
        Err(format!("bad group name {g:?} (letters, digits, - _ . or \"*\")"))
    }
}

/// Parses `g1,g2` into validated, de-duplicated groups.
pub fn parse_groups(s: &str) -> Result<Vec<String>, RagError> {
    let mut out: Vec<String> = Vec::new();
    for g in s.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        validate_group(g).map_err(RagError::BadInput)?;
        if !out.iter().any(|x| x == g) {
            out.push(g.to_string());
        }
    }
    if out.is_empty() {
        return Err(RagError::BadInput(format!("no groups in {s:?}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let m = AccessMap::parse(r#"{"public": ["*"], "sales": ["moscow","spb"], "sales/vip": ["management"]}"#).unwrap();
        assert_eq!(m.groups_for(Path::new("public/a.md")).unwrap(), vec!["*"]);
        assert_eq!(m.groups_for(Path::new("sales/vip/x.txt")).unwrap(), vec!["management"]);
        assert_eq!(m.groups_for(Path::new("sales/x.txt")).unwrap(), vec!["moscow", "spb"]);
        assert!(m.groups_for(Path::new("salesman/x.txt")).is_none(), "prefix by path component, not by string");
        assert!(AccessMap::parse(r#"{"a": []}"#).is_err());
        assert!(AccessMap::parse(r#"{"a": ["bad group"]}"#).is_err());
        assert!(parse_groups(" , ").is_err());
    }
}
