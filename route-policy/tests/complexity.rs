//! The complexity signal: hard and easy candidate phrases → `<rule>:hard|medium|easy`, its
//! composer over the other signals, the reader's checks, and the vectors' order.

use route_policy::eval::{self, CandidateVectors, Input};
use route_policy::model::{Difficulty, SignalKind};
use route_policy::{v03, Policy};

const CONFIG: &str = r#"
version: v0.3
providers: { defaults: { default_model: general } }
routing:
  signals:
    embeddings:
      - { name: support, threshold: 0.9, candidates: ["reset my password"] }
    domains:
      - { name: code, description: Programming }
    keywords:
      - { name: urgent, keywords: [urgent] }
    complexity:
      - name: code_complexity
        threshold: 0.1
        description: How hard a coding task is
        composer: { operator: AND, conditions: [{ type: domain, name: code }] }
        hard: { candidates: ["design a distributed consensus protocol", "implement a garbage collector"] }
        easy: { candidates: ["print hello world", "sort a list"] }
      - name: any_task
        hard: { candidates: ["prove the theorem"], image_candidates: ["diagram.png"] }
        easy: { candidates: ["say hi"] }
  decisions:
    - { name: hard_code, rules: { type: complexity, name: "code_complexity:hard" }, modelRefs: [{ model: big }] }
    - { name: medium_code, rules: { type: complexity, name: "code_complexity:medium" }, modelRefs: [{ model: mid }] }
    - { name: easy_code, rules: { type: complexity, name: "code_complexity:easy" }, modelRefs: [{ model: small }] }
    - name: urgent_hard
      priority: 10
      rules: { operator: AND, conditions: [{ type: keyword, name: urgent }, { type: complexity, name: "any_task:hard" }] }
      modelRefs: [{ model: fast-big }]
"#;

fn tree(yaml: &str) -> serde_json::Value {
    serde_yaml::from_str(yaml).unwrap()
}

fn policy() -> Policy {
    v03::parse(&tree(CONFIG)).unwrap()
}

fn unit(v: [f32; 3]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// The support rule on axis 2; code_complexity's hard phrases near axis 0 and its easy ones on
/// axis 1; any_task's hard phrase on axis 0 and its easy one on axis 2.
fn vectors() -> CandidateVectors {
    CandidateVectors(vec![
        vec![unit([0.0, 0.0, 1.0])],
        vec![unit([1.0, 0.0, 0.0]), unit([0.8, 0.0, 0.6])],
        vec![unit([0.0, 1.0, 0.0]), unit([0.0, 0.8, 0.6])],
        vec![unit([1.0, 0.0, 0.0])],
        vec![unit([0.0, 0.0, 1.0])],
    ])
}

fn ask(p: &Policy, at: [f32; 3], text: &str, domain: Option<(&str, f32)>) -> (Vec<String>, Option<String>) {
    let prompt = unit(at);
    let (m, s) = eval::evaluate(p, &vectors(), &Input { text, domain, embedding: Some(&prompt), ..Default::default() });
    (m.names(), s.map(|s| p.decisions[s.decision].name.clone()))
}

const CODE: Option<(&str, f32)> = Some(("code", 0.9));

#[test]
fn candidates_are_embedded_after_the_embedding_rules_hard_then_easy() {
    let p = policy();
    let lists = p.embedding_candidates();
    assert_eq!(lists.len(), 5);
    assert_eq!(lists[0], ["reset my password"]);
    assert_eq!(lists[1], ["design a distributed consensus protocol", "implement a garbage collector"]);
    assert_eq!(lists[2], ["print hello world", "sort a list"]);
    assert_eq!((lists[3].as_slice(), lists[4].as_slice()), (["prove the theorem".to_string()].as_slice(), ["say hi".to_string()].as_slice()));
    let v = vectors();
    let (hard, easy) = v.complexity(&p, 1);
    assert_eq!((hard.len(), easy.len()), (1, 1));
    assert_eq!(v.embedding(0).len(), 1);
}

#[test]
fn the_margin_between_hard_and_easy_sets_the_level() {
    let p = policy();
    // Nearest the hard phrases, the easy ones, or equally near both.
    let (names, d) = ask(&p, [1.0, 0.0, 0.0], "design it", CODE);
    assert!(names.contains(&"complexity:code_complexity:hard".to_string()), "{names:?}");
    assert_eq!(d.as_deref(), Some("hard_code"));
    assert_eq!(ask(&p, [0.0, 1.0, 0.0], "print it", CODE).1.as_deref(), Some("easy_code"));
    assert_eq!(ask(&p, [1.0, 1.0, 0.0], "something", CODE).1.as_deref(), Some("medium_code"));

    // At the threshold: a margin of 0.2 is hard above 0.1 and medium at 0.3.
    let c = &p.complexity[0];
    let prompt = [1.0f32, 0.0, 0.0];
    let hard = [vec![0.9f32, 0.0, 0.0]];
    let easy = [vec![0.7f32, 0.0, 0.0]];
    let (level, confidence) = eval::difficulty(c, &prompt, &hard, &easy).unwrap();
    assert_eq!(level, Difficulty::Hard);
    assert!((confidence - 0.9).abs() < 1e-6, "the better similarity: {confidence}");
    let mut wide = c.clone();
    wide.threshold = 0.3;
    assert_eq!(eval::difficulty(&wide, &prompt, &hard, &easy).unwrap().0, Difficulty::Medium);
    assert_eq!(eval::difficulty(&wide, &prompt, &easy, &hard).unwrap().0, Difficulty::Medium);
    assert_eq!(eval::difficulty(c, &prompt, &easy, &hard).unwrap().0, Difficulty::Easy);
    assert_eq!(eval::difficulty(c, &prompt, &[], &easy), None, "no vectors: no level");
}

#[test]
fn the_composer_keeps_a_level_only_when_its_conditions_hold() {
    let p = policy();
    // Not the code domain: code_complexity reports nothing; any_task has no composer.
    let (names, d) = ask(&p, [1.0, 0.0, 0.0], "urgent: design it", None);
    assert!(!names.iter().any(|n| n.starts_with("complexity:code_complexity")), "{names:?}");
    assert!(names.contains(&"complexity:any_task:hard".to_string()), "{names:?}");
    assert_eq!(d.as_deref(), Some("urgent_hard"), "complexity combines with other signals");
    let (names, d) = ask(&p, [0.0, 0.0, 1.0], "urgent: hi", None);
    assert!(names.contains(&"complexity:any_task:easy".to_string()), "{names:?}");
    assert_eq!(d, None);
    // No prompt embedding (or no vectors): no complexity signal at all.
    let (m, _) = eval::evaluate(&p, &CandidateVectors::default(), &Input { text: "x", domain: CODE, embedding: Some(&unit([1.0, 0.0, 0.0])), ..Default::default() });
    assert!(!m.names().iter().any(|n| n.starts_with("complexity:")), "{:?}", m.names());
}

#[test]
fn complexity_is_timed_last_and_only_when_used() {
    let p = policy();
    let mut seen = Vec::new();
    eval::evaluate_timed(&p, &vectors(), &Input { text: "hello", ..Default::default() }, &mut |k, _| seen.push(k));
    assert_eq!(seen.last(), Some(&SignalKind::Complexity));
    assert_eq!(seen.iter().filter(|k| **k == SignalKind::Complexity).count(), 1);
    let none = Policy { keywords: p.keywords.clone(), ..Default::default() };
    seen.clear();
    eval::evaluate_timed(&none, &vectors(), &Input { text: "hello", ..Default::default() }, &mut |k, _| seen.push(k));
    assert!(!seen.contains(&SignalKind::Complexity));
}

#[test]
fn accepted_keys_are_listed_and_the_signal_is_no_longer_among_them() {
    let p = policy();
    let ni = &p.not_implemented;
    for key in ["routing.signals.complexity[0].description", "routing.signals.complexity[1].hard.image_candidates"] {
        assert!(ni.iter().any(|k| k == key), "{key} missing from {ni:?}");
    }
    assert!(!ni.iter().any(|k| k.contains("complexity signal")), "{ni:?}");
}

#[test]
fn bad_complexity_config_names_its_path() {
    let signal = "  signals:\n    domains: [{ name: code }]\n    complexity:\n      - { name: c, hard: { candidates: [a] }, easy: { candidates: [b] } }\n";
    let decide = |rules: &str| format!("  decisions:\n    - {{ name: d, rules: {rules}, modelRefs: [{{ model: m }}] }}\n");
    let cases = [
        (format!("{signal}{}", decide("{ type: complexity, name: c }")), "routing.decisions[0].rules.name", "<rule>:hard"),
        (format!("{signal}{}", decide("{ type: complexity, name: \"c:extreme\" }")), "routing.decisions[0].rules.name", "c:extreme"),
        (format!("{signal}{}", decide("{ type: complexity, name: \"nope:hard\" }")), "routing.decisions[0].rules", "no complexity signal named `nope:hard`"),
        (signal.replace("easy: { candidates: [b] }", "easy: { candidates: [] }"), "routing.signals.complexity[0].easy.candidates", "must not be empty"),
        (signal.replace("hard: { candidates: [a] }", "hard: { candiates: [a] }"), "routing.signals.complexity[0].hard", "candiates"),
        (signal.replace("name: c,", "name: c, threshold: 3,"), "routing.signals.complexity[0].threshold", "[0, 2]"),
        (signal.replace("name: c,", "name: \"c:x\","), "routing.signals.complexity[0].name", "`:`"),
        (
            signal.replace("name: c,", "name: c, composer: { type: complexity, name: \"c:hard\" },"),
            "routing.signals.complexity[0].composer",
            "not complexity",
        ),
        (
            signal.replace("name: c,", "name: c, composer: { type: domain, name: law },"),
            "routing.signals.complexity[0].composer",
            "no domain signal named `law`",
        ),
    ];
    for (body, path, what) in cases {
        let yaml = format!("version: v0.3\nproviders: {{ defaults: {{ default_model: m }} }}\nrouting:\n{body}");
        let e = format!("{:#}", v03::parse(&tree(&yaml)).unwrap_err());
        assert!(e.starts_with(path) && e.contains(what), "`{body}` → {e}");
    }
}
