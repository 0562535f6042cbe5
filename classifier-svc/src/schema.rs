//! The config file's key schema, derived from the config structs.
//!
//! The structs in [`crate::config`] deny unknown fields, so the keys a file may hold are their
//! fields: a misspelt key is an error naming its path (`categories[0].model_scores[0].scor`),
//! never a silent default. The one hand-kept list is [`IGNORED`]: vLLM Semantic Router keys
//! this router accepts but does not implement, removed from the tree before it is read and
//! reported at start, so an operator's `config.yaml` loads unchanged.
//!
//! Environment overrides `SR__<SECTION>__<KEY>` name the same paths (`SR__SERVER__LISTEN` is
//! `server.listen`) and are checked the same way: a variable that names no field is an error
//! naming the variable. A value is read as the field's type asks: a number or a boolean where
//! the field is one, else the text, and a comma-separated list where it is a list.

use anyhow::{anyhow, bail, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Environment variables with this prefix override config keys; `__` separates the levels.
pub const ENV_PREFIX: &str = "SR__";

/// vLLM Semantic Router keys accepted and ignored (with everything below them). `*` stands for
/// a map key the operator chooses (a model name), `[]` for the items of a list.
pub const IGNORED: &[&str] = &[
    "semantic_cache.backend_type",
    "semantic_cache.eviction_policy",
    "semantic_cache.use_hnsw",
    "semantic_cache.hnsw_m",
    "semantic_cache.hnsw_ef_construction",
    "semantic_cache.embedding_model",
    "semantic_cache.backend_config_path",
    "tools",
    "vllm_endpoints",
    "router",
    "api",
    "embedding_models",
    "observability.metrics",
    "keyword_rules",
    "embedding_rules",
    "auto_model_name",
    "include_config_models_in_list",
    "clear_route_cache",
    "bert_model.threshold",
    "classifier.category_model.use_modernbert",
    "classifier.category_model.use_cpu",
    "classifier.category_model.category_mapping_path",
    "classifier.mcp_category_model",
    "classifier.pii_model.use_modernbert",
    "classifier.pii_model.use_cpu",
    "classifier.pii_model.pii_mapping_path",
    "prompt_guard.use_modernbert",
    "prompt_guard.use_cpu",
    "prompt_guard.jailbreak_mapping_path",
    "model_config.*.preferred_endpoints",
    "model_config.*.pricing",
    "model_config.*.loras",
    "model_config.*.use_reasoning",
    "categories[].model_scores[].reasoning_description",
];

/// One step of a key path.
#[derive(Debug, Clone, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    /// Any key (`*` in a pattern).
    AnyKey,
    /// A list item (`[]` in a pattern).
    Item,
}

fn pattern_steps(pattern: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in pattern.split('.') {
        let name = part.trim_end_matches("[]");
        steps.push(if name == "*" { Step::AnyKey } else { Step::Key(name) });
        for _ in 0..(part.len() - name.len()) / 2 {
            steps.push(Step::Item);
        }
    }
    steps
}

/// Whether a concrete path (keys and list items) is one of the [`IGNORED`] patterns.
fn is_ignored(path: &[Step<'_>]) -> bool {
    IGNORED.iter().any(|p| {
        let pat = pattern_steps(p);
        pat.len() == path.len()
            && pat.iter().zip(path).all(|(p, c)| match (p, c) {
                (Step::AnyKey, Step::Key(_)) | (Step::Item, Step::Item) => true,
                (Step::Key(a), Step::Key(b)) => a == b,
                _ => false,
            })
    })
}

/// Removes the [`IGNORED`] keys from `tree` and returns their paths as written, e.g.
/// `categories[9].model_scores[0].reasoning_description`.
pub fn strip_ignored(tree: &mut Value) -> Vec<String> {
    let mut found = Vec::new();
    strip(tree, &mut Vec::new(), "", &mut found);
    found
}

fn strip<'a>(v: &mut Value, at: &mut Vec<Step<'a>>, shown: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_shown = if shown.is_empty() { k.clone() } else { format!("{shown}.{k}") };
                // The step borrows the key only for this check and the descent below.
                let mut path: Vec<Step<'_>> = at.clone();
                path.push(Step::Key(&k));
                if is_ignored(&path) {
                    map.remove(&k);
                    found.push(child_shown);
                } else if let Some(child) = map.get_mut(&k) {
                    strip(child, &mut path, &child_shown, found);
                }
            }
        }
        Value::Array(items) => {
            at.push(Step::Item);
            for (i, child) in items.iter_mut().enumerate() {
                strip(child, at, &format!("{shown}[{i}]"), found);
            }
            at.pop();
        }
        _ => {}
    }
}

/// One `SR__A__B=value` override of the key `a.b`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvOverride {
    /// The variable's name, for errors.
    pub var: String,
    /// The key path it sets, lowercased.
    pub path: Vec<String>,
    pub value: String,
}

impl EnvOverride {
    pub fn key(&self) -> String {
        self.path.join(".")
    }
}

/// The overrides among `vars` (in a stable order: by variable name).
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Result<Vec<EnvOverride>> {
    let mut out = Vec::new();
    for (var, value) in vars {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            bail!("{var}: not a key path (SR__<SECTION>__<KEY>, levels separated by `__`)");
        }
        out.push(EnvOverride { var, path, value });
    }
    out.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(out)
}

/// How an override's text is read, tried in this order until the field's type accepts it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reading {
    /// A boolean or a number when the text is one, else the text.
    Guess,
    Text,
    /// Comma-separated items, each guessed.
    List,
}

fn guess(s: &str) -> Value {
    let t = s.trim();
    match t {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = t.parse::<i64>() {
        return i.into();
    }
    if let Some(n) = t.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(s.to_string())
}

fn read(value: &str, how: Reading) -> Value {
    match how {
        Reading::Guess => guess(value),
        Reading::Text => Value::String(value.to_string()),
        Reading::List => Value::Array(value.split(',').filter(|s| !s.trim().is_empty()).map(guess).collect()),
    }
}

fn set(tree: &mut Value, o: &EnvOverride, value: Value) -> Result<()> {
    let mut at = tree;
    for (i, step) in o.path.iter().enumerate() {
        if at.is_null() {
            *at = Value::Object(Default::default());
        }
        let Value::Object(map) = at else {
            bail!("{}: `{}` is not a section, so `{}` cannot be set", o.var, o.path[..i].join("."), o.key());
        };
        at = map.entry(step.clone()).or_insert(Value::Null);
    }
    *at = value;
    Ok(())
}

/// Sets each override in `tree`, creating the sections it names.
pub fn apply_env(tree: &mut Value, env: &[EnvOverride]) -> Result<()> {
    for o in env {
        set(tree, o, read(&o.value, Reading::Guess))?;
    }
    Ok(())
}

/// Reads `tree` (with `env` already applied by [`apply_env`]) as `T`. Errors name the key path,
/// and the variable when the key came from the environment.
pub fn deserialize<T: DeserializeOwned>(tree: &mut Value, env: &[EnvOverride]) -> Result<T> {
    let mut tried: Vec<Reading> = vec![Reading::Guess; env.len()];
    loop {
        let e = match serde_path_to_error::deserialize::<_, T>(&*tree) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let at = e.path().to_string();
        let at = if at == "." { String::new() } else { at };
        let msg = e.into_inner().to_string();
        let key_error = msg.starts_with("unknown field `") || msg.starts_with("missing field `");
        // A value from the environment the field's type refused: read its text another way.
        if let Some(i) = env.iter().position(|o| o.key() == at).filter(|_| !key_error) {
            let next = match tried[i] {
                Reading::Guess => Some(Reading::Text),
                Reading::Text => Some(Reading::List),
                Reading::List => None,
            };
            if let Some(how) = next {
                tried[i] = how;
                set(tree, &env[i], read(&env[i].value, how))?;
                continue;
            }
            // Report what the field said to the first reading.
            set(tree, &env[i], read(&env[i].value, Reading::Guess))?;
            let first = serde_path_to_error::deserialize::<_, T>(&*tree).err();
            let msg = first.map_or(msg, |e| e.into_inner().to_string());
            return Err(anyhow!("{} ({at}): {msg}", env[i].var));
        }
        return Err(describe(&at, &msg, env));
    }
}

/// `unknown field `x`, expected one of ...` at `a.b` becomes `a.b.x: unknown key; expected one
/// of ...`; a missing field becomes `a.b.x: missing`.
fn describe(at: &str, msg: &str, env: &[EnvOverride]) -> anyhow::Error {
    let join = |name: &str| if at.is_empty() { name.to_string() } else { format!("{at}.{name}") };
    let field = |prefix: &str| {
        msg.strip_prefix(prefix).and_then(|r| r.split_once('`')).map(|(name, rest)| (name.to_string(), rest.to_string()))
    };
    let (key, text) = if let Some((name, rest)) = field("unknown field `") {
        let key = if at.ends_with(&format!(".{name}")) || at == name { at.to_string() } else { join(&name) };
        let expected = rest.trim_start_matches(',').trim();
        (key, if expected.is_empty() { "unknown key".to_string() } else { format!("unknown key; {expected}") })
    } else if let Some((name, _)) = field("missing field `") {
        (join(&name), "missing".to_string())
    } else {
        (at.to_string(), msg.to_string())
    };
    let below = |a: &str, b: &str| a.strip_prefix(b).is_some_and(|r| r.starts_with('.') || r.starts_with('['));
    match env.iter().find(|o| key == o.key() || below(&key, &o.key()) || below(&o.key(), &key)) {
        Some(o) => anyhow!("{} ({key}): {text}", o.var),
        None if key.is_empty() => anyhow!("{text}"),
        None => anyhow!("{key}: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        inner: Inner,
        name: String,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        count: usize,
        label: String,
        sizes: Vec<usize>,
        on: bool,
    }

    fn vars(v: &[(&str, &str)]) -> Vec<EnvOverride> {
        env_overrides(v.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    fn read_with(mut tree: Value, env: &[EnvOverride]) -> Result<Outer> {
        apply_env(&mut tree, env)?;
        deserialize(&mut tree, env)
    }

    #[test]
    fn ignored_keys_are_removed_and_reported_as_written() {
        let mut tree = json!({
            "tools": {"enabled": true},
            "model_config": {"m1": {"pricing": {}, "reasoning_family": "q"}},
            "categories": [{"name": "a", "model_scores": [{"model": "x", "reasoning_description": "d"}]}],
            "bert_model": {"threshold": 0.6, "model_id": "m"},
        });
        let found = strip_ignored(&mut tree);
        assert_eq!(
            found,
            ["bert_model.threshold", "categories[0].model_scores[0].reasoning_description", "model_config.m1.pricing", "tools"]
        );
        assert_eq!(tree["model_config"]["m1"], json!({"reasoning_family": "q"}));
        assert_eq!(tree["categories"][0]["model_scores"][0], json!({"model": "x"}));
        assert!(tree.get("tools").is_none());
        // A pattern's key only matches at its own depth.
        let mut tree = json!({"server": {"tools": 1}});
        assert!(strip_ignored(&mut tree).is_empty());
    }

    #[test]
    fn unknown_and_missing_keys_name_their_path() {
        let e = format!("{:#}", read_with(json!({"name": "n", "inner": {"cuont": 1}}), &[]).unwrap_err());
        assert!(e.starts_with("inner.cuont: unknown key; expected one of `count`"), "{e}");
        let e = format!("{:#}", read_with(json!({"nmae": "n"}), &[]).unwrap_err());
        assert!(e.starts_with("nmae: unknown key"), "{e}");
        let e = format!("{:#}", read_with(json!({"inner": {}}), &[]).unwrap_err());
        assert_eq!(e, "name: missing");
        let e = format!("{:#}", read_with(json!({"name": "n", "inner": {"count": "many"}}), &[]).unwrap_err());
        assert!(e.starts_with("inner.count: invalid type"), "{e}");
    }

    #[test]
    fn environment_values_take_the_fields_type() {
        let env = vars(&[
            ("SR__INNER__COUNT", "4"),
            ("SR__INNER__LABEL", "123"),
            ("SR__INNER__SIZES", "16,32"),
            ("SR__INNER__ON", "true"),
            ("SR_OTHER", "not an override"),
        ]);
        assert_eq!(env.len(), 4);
        let v = read_with(json!({"name": "n"}), &env).unwrap();
        assert_eq!(v.inner, Inner { count: 4, label: "123".into(), sizes: vec![16, 32], on: true });
        let v = read_with(json!({"name": "n"}), &vars(&[("SR__NAME", "")])).unwrap();
        assert_eq!(v.name, "");
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let e = format!("{:#}", read_with(json!({"name": "n"}), &vars(&[("SR__INNER__CUONT", "1")])).unwrap_err());
        assert!(e.starts_with("SR__INNER__CUONT (inner.cuont): unknown key"), "{e}");
        let e = format!("{:#}", read_with(json!({"name": "n"}), &vars(&[("SR__INNER__COUNT", "lots")])).unwrap_err());
        assert!(e.starts_with("SR__INNER__COUNT (inner.count): invalid type: string \"lots\""), "{e}");
        let e = format!("{:#}", read_with(json!({"name": "n"}), &vars(&[("SR__NAME__INNER", "x")])).unwrap_err());
        assert!(e.contains("SR__NAME__INNER") && e.contains("`name` is not a section"), "{e}");
        let e = format!("{:#}", env_overrides([("SR__INNER____COUNT".to_string(), "1".to_string())]).unwrap_err());
        assert!(e.contains("SR__INNER____COUNT"), "{e}");
    }
}
