//! The v0.3 reader and the evaluation of signals and decisions, on configs written here.

use route_policy::eval::{self, estimate_tokens, CandidateVectors, Input};
use route_policy::model::{Aggregation, Algorithm, ResponseCacheAction, Rule, SignalKind, Strategy, SystemPromptMode};
use route_policy::{legacy, v03, ModelRef, Policy};

const CONFIG: &str = r#"
version: v0.3
listeners:
  - { name: http, address: 127.0.0.1, port: 8899 }
providers:
  defaults:
    default_model: general
    default_reasoning_effort: medium
    reasoning_families:
      qwen3: { type: chat_template_kwargs, parameter: enable_thinking }
  models:
    - name: general
      reasoning_family: qwen3
      pricing: { currency: USD }
routing:
  strategy: priority
  modelCards:
    - name: general
  signals:
    keywords:
      - name: urgent
        operator: OR
        keywords: ["urgent", "asap"]
      - name: code
        method: bm25
        keywords: ["code", "function", "debug"]
        bm25_threshold: 0.1
      - name: secrets
        method: fuzzy
        fuzzy_threshold: 80
        keywords: ["password"]
    embeddings:
      - name: support
        threshold: 0.8
        aggregation_method: mean
        candidates: ["reset my account", "billing help"]
    domains:
      - name: math
        description: Mathematics.
        mmlu_categories: [math]
        model_scores:
          - { model: small, score: 0.5 }
          - { model: math-pro, score: 0.9, use_reasoning: true }
      - name: business
        mmlu_categories: [business, economics]
    language:
      - name: es
      - name: en
        threshold: 0.5
    context:
      - name: long
        min_tokens: 1K
        max_tokens: 256K
    structure:
      - name: many_questions
        feature: { type: count, source: { type: regex, pattern: '[?？]' } }
        predicate: { gte: 3 }
      - name: dense
        feature: { type: density, source: { type: regex, pattern: 'x' } }
        predicate: { gt: 0.1 }
    jailbreak:
      - name: injection
        threshold: 0.8
        method: hybrid
    pii:
      - name: sensitive
        threshold: 0.7
        pii_types_allowed: [EMAIL_ADDRESS]
    fact_check:
      - name: needs_fact_check
  decisions:
    - name: urgent_math
      priority: 300
      rules:
        operator: AND
        conditions:
          - { type: domain, name: math }
          - operator: OR
            conditions:
              - { type: keyword, name: urgent }
              - { type: structure, name: many_questions }
          - operator: NOT
            conditions:
              - { type: jailbreak, name: injection }
      modelRefs:
        - { model: math-pro, lora_name: math-lora, use_reasoning: true, reasoning_effort: high, weight: 1.0 }
      algorithm: { type: static }
      plugins:
        - type: system_prompt
          configuration: { mode: insert, system_prompt: Be quick and exact. }
        - type: header_mutation
          configuration:
            add: [{ name: X-Tier, value: gold }]
            update: [{ name: x-route, value: urgent }]
            delete: [X-Debug]
        - type: response_cache
          configuration: { enabled: true, ttl_seconds: 60 }
        - type: memory
          configuration: { enabled: true }
    - name: math
      priority: 200
      rules: { operator: AND, conditions: [{ type: domain, name: math }] }
      modelRefs: [{ model: math-pro }]
    - name: long_docs
      priority: 100
      rules: { operator: OR, conditions: [{ type: context, name: long }] }
      modelRefs: [{ model: long-ctx }]
      algorithm: { type: confidence, confidence: { threshold: 0.7 } }
    - name: code
      priority: 100
      rules: { operator: OR, conditions: [{ type: keyword, name: code }, { type: fact_check, name: needs_fact_check }] }
      modelRefs: [{ model: coder }]
      plugins:
        - type: request_params
          configuration: { blocked_params: [logprobs], max_tokens_limit: 512 }
        - type: semantic-cache
          configuration: { similarity_threshold: 0.95 }
    - name: blocked
      priority: 1000
      rules: { operator: OR, conditions: [{ type: jailbreak, name: injection }, { type: pii, name: sensitive }] }
      plugins:
        - type: fast_response
          configuration: { message: Not here. }
    - name: spanish
      priority: 50
      rules: { operator: AND, conditions: [{ type: language, name: es }] }
      modelRefs: [{ model: es-model }]
global:
  router: { auto_model_name: MoM }
"#;

fn tree(yaml: &str) -> serde_json::Value {
    serde_yaml::from_str(yaml).unwrap()
}

fn policy() -> Policy {
    v03::parse(&tree(CONFIG)).unwrap()
}

fn err(yaml: &str) -> String {
    format!("{:#}", v03::parse(&tree(yaml)).unwrap_err())
}

fn route(p: &Policy, input: &Input) -> Option<String> {
    let (_, s) = eval::evaluate(p, &CandidateVectors::default(), input);
    s.map(|s| p.decisions[s.decision].name.clone())
}

#[test]
fn reads_signals_decisions_and_plugins() {
    let p = policy();
    assert_eq!(p.default_model, "general");
    assert_eq!(p.strategy, Strategy::Priority);
    assert_eq!(p.keywords.len(), 3);
    assert_eq!(p.embeddings[0].aggregation, Aggregation::Mean);
    assert_eq!(p.contexts[0].min_tokens, 1000);
    assert_eq!(p.contexts[0].max_tokens, Some(256_000));
    assert_eq!(p.structures.len(), 1, "the density rule is accepted, not evaluated");
    let math = &p.domains[0];
    assert_eq!(math.model_scores[0].model, "math-pro", "model_scores best first");
    let d = p.decision("urgent_math").unwrap();
    assert_eq!(d.priority, 300);
    let r = d.selected_ref().unwrap();
    assert_eq!((r.wire_name(), r.use_reasoning, r.reasoning_effort.as_deref()), ("math-lora", true, Some("high")));
    assert!(matches!(&d.rule, Rule::And(c) if c.len() == 3 && matches!(&c[2], Rule::Not(_))));
    let a = &d.actions;
    assert_eq!(a.system_prompt.as_ref().unwrap().mode, SystemPromptMode::Insert);
    let hm = a.header_mutation.as_ref().unwrap();
    assert_eq!(hm.add, vec![("x-tier".to_string(), "gold".to_string())]);
    assert_eq!(hm.delete, vec!["x-debug"]);
    assert_eq!(p.decision("long_docs").unwrap().algorithm, Algorithm::Unsupported("confidence".into()));
    let rp = p.decision("code").unwrap().actions.request_params.clone().unwrap();
    assert_eq!((rp.blocked_params, rp.max_tokens_limit), (vec!["logprobs".to_string()], Some(512)));
    assert_eq!(p.decision("blocked").unwrap().actions.fast_response.as_deref(), Some("Not here."));
    // Both spellings of the cache plugin; a missing `enabled` is false, as in vSR.
    let cache = |name: &str| p.decision(name).unwrap().actions.response_cache;
    assert_eq!(cache("urgent_math"), Some(ResponseCacheAction { enabled: true, similarity_threshold: None }));
    assert_eq!(cache("code"), Some(ResponseCacheAction { enabled: false, similarity_threshold: Some(0.95) }));
    assert_eq!(cache("math"), None, "no plugin: the global settings");
    assert!(p.enables_cache());
}

#[test]
fn keys_not_implemented_are_listed_by_path() {
    let p = policy();
    let ni = &p.not_implemented;
    for key in [
        "listeners",
        "global",
        "routing.modelCards",
        "providers.models[0].pricing",
        "routing.signals.fact_check",
        "routing.signals.jailbreak[0].method",
    ] {
        assert!(ni.iter().any(|k| k == key), "{key} missing from {ni:?}");
    }
    for prefix in [
        "routing.decisions[0].plugins[2].configuration.ttl_seconds",
        "routing.decisions[0].plugins[3] (type memory)",
        "routing.decisions[2].algorithm.type (confidence",
        "routing.decisions[3].rules.conditions[1] (fact_check",
        "routing.signals.structure[1].feature",
    ] {
        assert!(ni.iter().any(|k| k.starts_with(prefix)), "{prefix} missing from {ni:?}");
    }
    assert!(!ni.iter().any(|k| k.starts_with("routing.signals.keywords")), "{ni:?}");
}

#[test]
fn unknown_keys_and_bad_values_are_errors_naming_their_path() {
    let cases = [
        ("routing:\n  signals:\n    keywords:\n      - { name: a, keywords: [x], treshold: 1 }", "routing.signals.keywords[0]", "treshold"),
        ("routing:\n  decisions:\n    - { name: a, rules: { type: keyword, name: nope } }", "routing.decisions[0].rules", "no keyword signal named `nope`"),
        ("routing:\n  decisions:\n    - { name: a, rules: { type: vibes, name: x } }", "routing.decisions[0].rules.type", "unknown signal type `vibes`"),
        ("routing:\n  decisions:\n    - { name: a, rules: { operator: XOR, conditions: [] } }", "routing.decisions[0].rules.operator", "XOR"),
        ("routing:\n  decisions:\n    - { name: a, rules: { operator: AND, conditions: [] }, modelRef: [] }", "routing.decisions[0]", "modelRef"),
        ("routing:\n  decisions:\n    - { name: a, rules: { operator: AND }, plugins: [{ type: header_mutation, configuration: { ad: [] } }] }", "routing.decisions[0].plugins[0].configuration", "ad"),
        ("routing:\n  decisions:\n    - { name: a, rules: { operator: AND }, plugins: [{ type: teleport }] }", "routing.decisions[0].plugins[0].type", "teleport"),
        ("routing:\n  decisions:\n    - { name: a, rules: { operator: AND }, plugins: [{ type: semantic-cache, configuration: { similarity_threshold: 1.5 } }] }", "routing.decisions[0].plugins[0].configuration.similarity_threshold", "[0, 1]"),
        ("routing:\n  decisions:\n    - { name: a, rules: { operator: AND }, plugins: [{ type: response_cache, configuration: { enabled: true, threshold: 0.9 } }] }", "routing.decisions[0].plugins[0].configuration", "threshold"),
        ("routing:\n  decisions:\n    - { name: a, rules: { operator: AND }, plugins: [{ type: response_cache, configuration: { enabled: yes } }] }", "routing.decisions[0].plugins[0].configuration.enabled", "boolean"),
        ("routing:\n  decisions:\n    - { name: a, rules: { operator: AND }, plugins: [{ type: response_cache, configuration: { enabled: true } }, { type: semantic-cache, configuration: { enabled: false } }] }", "routing.decisions[0].plugins[1].type", "second cache plugin"),
        ("routing:\n  signals:\n    context: [{ name: c, min_tokens: lots }]", "routing.signals.context[0].min_tokens", "lots"),
        ("routing:\n  strategy: random", "routing.strategy", "random"),
        ("routing:\n  signals:\n    keywords: [{ name: k, method: ngram, ngram_threshold: 2, keywords: [x] }]", "routing.signals.keywords[0].ngram_threshold", "[0, 1]"),
        ("extras: 1", "extras", "unknown field"),
    ];
    for (body, path, what) in cases {
        let e = err(&format!("version: v0.3\nproviders: {{ defaults: {{ default_model: m }} }}\n{body}\n"));
        assert!(e.starts_with(path) && e.contains(what), "`{body}` → {e}");
    }
    assert!(err("version: v0.2\nproviders: { defaults: { default_model: m } }").contains("version"));
    assert!(err("version: v0.3\n").contains("providers.defaults.default_model"));
}

#[test]
fn nested_rules_and_priorities_pick_the_decision() {
    let p = policy();
    let math = Input { text: "what is 2+2", domain: Some(("math", 0.9)), ..Default::default() };
    assert_eq!(route(&p, &math).as_deref(), Some("math"));
    let urgent = Input { text: "urgent: what is 2+2", ..math.clone() };
    assert_eq!(route(&p, &urgent).as_deref(), Some("urgent_math"), "AND(domain, OR(keyword, ...), NOT(jailbreak))");
    let questions = Input { text: "a? b? c?", ..math.clone() };
    assert_eq!(route(&p, &questions).as_deref(), Some("urgent_math"), "the OR's other branch: three questions");
    // The guard fires: NOT fails, and the higher-priority blocking decision matches anyway.
    let attack = Input { jailbreak: Some((0.9, 0.5)), ..urgent.clone() };
    assert_eq!(route(&p, &attack).as_deref(), Some("blocked"));
    let below = Input { jailbreak: Some((0.7, 0.5)), ..urgent.clone() };
    assert_eq!(route(&p, &below).as_deref(), Some("urgent_math"), "the signal's threshold (0.8), not the guard's");
    let other = Input { text: "urgent: plan my trip", domain: Some(("history", 0.9)), ..Default::default() };
    assert_eq!(route(&p, &other), None, "no decision: the default model");
}

#[test]
fn context_keyword_pii_and_language_signals() {
    let p = policy();
    let long_text = "word ".repeat(1000);
    let long = Input { text: &long_text, tokens: estimate_tokens(&long_text), ..Default::default() };
    assert_eq!(route(&p, &long).as_deref(), Some("long_docs"));
    let short = Input { text: "hi", tokens: 1, ..Default::default() };
    assert_eq!(route(&p, &short), None);
    let code = Input { text: "please debug this", tokens: 3, ..Default::default() };
    assert_eq!(route(&p, &code).as_deref(), Some("code"));
    // Equal priority (100): the more confident wins, then the first listed.
    let both = Input { text: &format!("debug {long_text}"), tokens: 2000, ..Default::default() };
    assert_eq!(route(&p, &both).as_deref(), Some("long_docs"), "context (1.0) beats a weak bm25 match");
    let email = [("EMAIL_ADDRESS", 0.99)];
    let allowed = Input { text: "hi", pii: &email, ..Default::default() };
    assert_eq!(route(&p, &allowed), None, "allowed PII type");
    let card = [("CREDIT_CARD", 0.99)];
    assert_eq!(route(&p, &Input { text: "hi", pii: &card, ..Default::default() }).as_deref(), Some("blocked"));
    let weak = [("CREDIT_CARD", 0.5)];
    assert_eq!(route(&p, &Input { text: "hi", pii: &weak, ..Default::default() }), None, "below the threshold");
    let es = Input { text: "¿Dónde está la biblioteca de la universidad? Necesito estudiar para el examen.", ..Default::default() };
    assert_eq!(route(&p, &es).as_deref(), Some("spanish"));
    let (m, _) = eval::evaluate(&p, &CandidateVectors::default(), &Input { text: "Where is the university library? I need to study for my exam.", ..Default::default() });
    assert!(m.get(SignalKind::Language, "en").is_some() && m.get(SignalKind::Language, "es").is_none(), "{:?}", m.names());
    let (m, _) = eval::evaluate(&p, &CandidateVectors::default(), &Input { text: "i forgot my pasword", ..Default::default() });
    assert!(m.get(SignalKind::Keyword, "secrets").is_some(), "fuzzy: {:?}", m.names());
}

#[test]
fn embedding_rules_aggregate_candidate_similarities() {
    let p = policy();
    let vectors = CandidateVectors(vec![vec![vec![1.0, 0.0], vec![0.8, 0.6]]]);
    let at = |x: f32, y: f32| {
        let n = (x * x + y * y).sqrt();
        let v = [x / n, y / n];
        let (m, _) = eval::evaluate(&p, &vectors, &Input { text: "", embedding: Some(&v), ..Default::default() });
        m.get(SignalKind::Embedding, "support")
    };
    // mean of (1.0, 0.8) = 0.9 ≥ 0.8; of (0.0, 0.6) = 0.3.
    assert!((at(1.0, 0.0).unwrap() - 0.9).abs() < 1e-5);
    assert_eq!(at(0.0, 1.0), None);
    let mut max = p.clone();
    max.embeddings[0].aggregation = Aggregation::Max;
    let v = [0.0f32, 1.0];
    let (m, _) = eval::evaluate(&max, &vectors, &Input { text: "", embedding: Some(&v), ..Default::default() });
    assert_eq!(m.get(SignalKind::Embedding, "support"), None, "max 0.6 < 0.8");
    let v = [0.6f32, 0.8];
    let (m, _) = eval::evaluate(&max, &vectors, &Input { text: "", embedding: Some(&v), ..Default::default() });
    assert!((m.get(SignalKind::Embedding, "support").unwrap() - 0.96).abs() < 1e-5);
}

#[test]
fn confidence_strategy_prefers_the_surer_decision() {
    let mut p = policy();
    p.strategy = Strategy::Confidence;
    // math (priority 200, domain confidence 0.6) vs long_docs (priority 100, confidence 1).
    let text = "word ".repeat(1000);
    let i = Input { text: &text, tokens: 1250, domain: Some(("math", 0.6)), ..Default::default() };
    assert_eq!(route(&p, &i).as_deref(), Some("long_docs"));
    p.strategy = Strategy::Priority;
    assert_eq!(route(&p, &i).as_deref(), Some("math"));
}

#[test]
fn domains_match_through_mmlu_categories() {
    let p = policy();
    let (m, _) = eval::evaluate(&p, &CandidateVectors::default(), &Input { text: "x", domain: Some(("economics", 0.7)), ..Default::default() });
    assert_eq!(m.get(SignalKind::Domain, "business"), Some(0.7));
    assert_eq!(m.get(SignalKind::Domain, "math"), None);
}

#[test]
fn token_counts_take_k_and_m_suffixes() {
    assert_eq!(v03::parse_tokens("32K").unwrap(), 32_000);
    assert_eq!(v03::parse_tokens("1.5k").unwrap(), 1_500);
    assert_eq!(v03::parse_tokens("1M").unwrap(), 1_000_000);
    assert_eq!(v03::parse_tokens("8192").unwrap(), 8192);
    assert!(v03::parse_tokens("-1K").is_err());
    assert!(v03::parse_tokens("K").is_err());
}

#[test]
fn the_old_format_becomes_one_domain_decision_per_category() {
    let cats = vec![legacy::Category {
        name: "math".into(),
        description: String::new(),
        mmlu_categories: vec![],
        model_scores: vec![
            ModelRef { model: "small".into(), weight: Some(0.5), ..Default::default() },
            ModelRef { model: "big".into(), weight: Some(0.9), use_reasoning: true, ..Default::default() },
            ModelRef { model: "big2".into(), weight: Some(0.9), ..Default::default() },
        ],
        system_prompt: None,
        response_cache: None,
    }];
    let p = legacy::policy(&cats, "general");
    assert_eq!(route(&p, &Input { text: "x", domain: Some(("math", 0.8)), ..Default::default() }).as_deref(), Some("math"));
    let d = &p.decisions[0];
    assert_eq!(d.selected_ref().unwrap().model, "big", "highest score, first listed on ties");
    assert_eq!(route(&p, &Input { text: "x", domain: None, ..Default::default() }), None);
}

#[test]
fn the_old_format_cache_keys_become_the_decision_cache_action() {
    let action = |enabled, similarity_threshold| Some(ResponseCacheAction { enabled, similarity_threshold });
    assert_eq!(legacy::response_cache(None, None, true), None, "neither key: the global settings");
    assert_eq!(legacy::response_cache(Some(false), None, true), action(false, None));
    assert_eq!(legacy::response_cache(None, Some(0.8), true), action(true, Some(0.8)), "a threshold alone keeps the global switch");
    // The global switch gates every category in this format.
    assert_eq!(legacy::response_cache(Some(true), Some(0.8), false), action(false, Some(0.8)));
    let cats = [legacy::Category {
        name: "math".into(),
        description: String::new(),
        mmlu_categories: vec![],
        model_scores: vec![ModelRef { model: "m".into(), ..Default::default() }],
        system_prompt: None,
        response_cache: action(true, Some(0.8)),
    }];
    assert_eq!(legacy::policy(&cats, "general").decisions[0].actions.response_cache, action(true, Some(0.8)));
}

#[test]
fn every_family_the_policy_uses_is_timed_once() {
    let p = policy();
    let mut seen = Vec::new();
    eval::evaluate_timed(&p, &CandidateVectors::default(), &Input { text: "hello", ..Default::default() }, &mut |k, _| seen.push(k));
    assert_eq!(
        seen,
        [SignalKind::Keyword, SignalKind::Embedding, SignalKind::Domain, SignalKind::Language, SignalKind::Context, SignalKind::Structure, SignalKind::Jailbreak, SignalKind::Pii]
    );
    let only_keywords = Policy { keywords: p.keywords.clone(), ..Default::default() };
    seen.clear();
    eval::evaluate_timed(&only_keywords, &CandidateVectors::default(), &Input { text: "hello", ..Default::default() }, &mut |k, _| seen.push(k));
    assert_eq!(seen, [SignalKind::Keyword]);
}
