//! The subset of `kustomize build` the manifests use: `resources` (files and directories with
//! their own kustomization.yaml) and `patches` given as a `path` to a JSON 6902 operation list
//! with a `target` (group/version/kind/name). Anything else in a kustomization is an error, so
//! a manifest change that needs more of kustomize also needs this file.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::schema::load_yaml_docs;

/// One object of a build and the file it came from.
#[derive(Clone, Debug)]
pub struct Doc {
    pub source: PathBuf,
    pub value: Value,
}

impl Doc {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> &str {
        self.value["metadata"]["namespace"].as_str().unwrap_or_default()
    }
}

const KNOWN_KEYS: &[&str] = &["apiVersion", "kind", "resources", "patches"];

pub fn read_kustomization(dir: &Path) -> Value {
    let path = dir.join("kustomization.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = load_yaml_docs(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one document expected", path.display());
    docs.remove(0)
}

/// Paths of the JSON 6902 patch files a kustomization names.
pub fn patch_files(dir: &Path) -> Vec<PathBuf> {
    let k = read_kustomization(dir);
    k["patches"].as_array().into_iter().flatten().filter_map(|p| p["path"].as_str()).map(|p| dir.join(p)).collect()
}

pub fn build(dir: &Path) -> Result<Vec<Doc>, String> {
    let k = read_kustomization(dir);
    let here = dir.join("kustomization.yaml");
    for key in k.as_object().ok_or_else(|| format!("{}: not a mapping", here.display()))?.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(format!("{}: field {key:?} is not supported by this test's kustomize subset", here.display()));
        }
    }
    if k["apiVersion"] != "kustomize.config.k8s.io/v1beta1" || k["kind"] != "Kustomization" {
        return Err(format!("{}: apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization", here.display()));
    }
    let mut docs = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let r = r.as_str().ok_or_else(|| format!("{}: resources entries must be strings", here.display()))?;
        let p = dir.join(r);
        if p.is_dir() {
            docs.extend(build(&p)?);
        } else {
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: resource {r}: {e}", here.display()))?;
            for value in load_yaml_docs(&text).map_err(|e| format!("{}: {e}", p.display()))? {
                docs.push(Doc { source: p.clone(), value });
            }
        }
    }
    for patch in k["patches"].as_array().into_iter().flatten() {
        let file = patch["path"].as_str().ok_or_else(|| format!("{}: only `path` patches are supported", here.display()))?;
        let target = &patch["target"];
        let (kind, name) = (target["kind"].as_str(), target["name"].as_str());
        let (Some(kind), Some(name)) = (kind, name) else {
            return Err(format!("{}: patch {file} needs target.kind and target.name", here.display()));
        };
        let api_version = match (target["group"].as_str(), target["version"].as_str()) {
            (Some(g), Some(v)) if !g.is_empty() => Some(format!("{g}/{v}")),
            (_, Some(v)) => Some(v.to_string()),
            _ => None,
        };
        let text = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("patch {file}: {e}"))?;
        let ops = load_yaml_docs(&text).map_err(|e| format!("patch {file}: {e}"))?;
        let ops = match ops.as_slice() {
            [Value::Array(ops)] => ops.clone(),
            _ => return Err(format!("patch {file}: expected one JSON 6902 operation list")),
        };
        let mut hits = 0;
        for d in docs.iter_mut() {
            if d.kind() == kind && d.name() == name && api_version.as_deref().is_none_or(|av| d.value["apiVersion"] == av) {
                for op in &ops {
                    apply_op(&mut d.value, op).map_err(|e| format!("patch {file} on {kind}/{name}: {e}"))?;
                }
                hits += 1;
            }
        }
        if hits == 0 {
            return Err(format!("{}: patch {file} matches no resource {kind}/{name}", here.display()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for d in &docs {
        let id = (d.value["apiVersion"].to_string(), d.kind().to_string(), d.namespace().to_string(), d.name().to_string());
        if !seen.insert(id.clone()) {
            return Err(format!("{}: duplicate resource {id:?}", here.display()));
        }
    }
    Ok(docs)
}

/// RFC 6902 `add`, `replace`, `remove` and `test`.
pub fn apply_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let kind = op["op"].as_str().ok_or("operation without `op`")?;
    let path = op["path"].as_str().ok_or("operation without `path`")?;
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with /"));
    }
    let tokens: Vec<String> = path[1..].split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
    let (last, parents) = tokens.split_last().unwrap();
    let mut cur = doc;
    for t in parents {
        cur = match cur {
            Value::Object(m) => m.get_mut(t).ok_or_else(|| format!("{path}: no member {t:?}"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("{path}: {t:?} is not an index"))?;
                a.get_mut(i).ok_or_else(|| format!("{path}: index {i} out of range"))?
            }
            _ => return Err(format!("{path}: {t:?} is below a scalar")),
        };
    }
    let value = op.get("value").cloned();
    match (kind, cur) {
        ("add", Value::Object(m)) => {
            m.insert(last.clone(), value.ok_or("add without value")?);
        }
        ("add", Value::Array(a)) => {
            let v = value.ok_or("add without value")?;
            if last == "-" {
                a.push(v);
            } else {
                let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
                if i > a.len() {
                    return Err(format!("{path}: index {i} out of range"));
                }
                a.insert(i, v);
            }
        }
        ("replace", Value::Object(m)) => {
            let slot = m.get_mut(last).ok_or_else(|| format!("{path}: replace of a missing member"))?;
            *slot = value.ok_or("replace without value")?;
        }
        ("replace", Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
            *a.get_mut(i).ok_or_else(|| format!("{path}: index {i} out of range"))? = value.ok_or("replace without value")?;
        }
        ("remove", Value::Object(m)) => {
            m.remove(last).ok_or_else(|| format!("{path}: remove of a missing member"))?;
        }
        ("remove", Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
            if i >= a.len() {
                return Err(format!("{path}: index {i} out of range"));
            }
            a.remove(i);
        }
        ("test", Value::Object(m)) => {
            if m.get(last) != value.as_ref() {
                return Err(format!("{path}: test failed"));
            }
        }
        (k, _) => return Err(format!("{path}: unsupported operation {k:?} here")),
    }
    Ok(())
}
