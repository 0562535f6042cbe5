//! Generated types for `semantic_router.v1`, the contract between the wasm filter and the
//! classifier sidecar. Enable the `grpc` feature for tonic client/server stubs.

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/semantic_router.v1.rs"));

    /// Fully-qualified gRPC service name, as the filter passes it to `dispatch_grpc_call`.
    pub const CLASSIFIER_SERVICE: &str = "semantic_router.v1.Classifier";
    /// Method name of the routing decision RPC.
    pub const CLASSIFY_METHOD: &str = "Classify";
    /// Service and method the filter calls to store a response in the semantic cache.
    pub const CACHE_SERVICE: &str = "semantic_router.v1.SemanticCache";
    pub const STORE_METHOD: &str = "Store";
}

/// Names shared by the sidecar, the filter and the tests: the routing header, the decision
/// headers (vLLM Semantic Router's names, after a configurable prefix, `x-vsr-` by default) and
/// the decision reasons. The sidecar answers with typed facts only; the filter (and the ExtProc
/// baseline in the tests) renders every decision header from them with [`decision_headers`].
pub mod vocabulary {
    /// The header Envoy's routes match on.
    pub const SELECTED_MODEL_HEADER: &str = "x-selected-model";
    /// The default prefix of the decision headers.
    pub const PREFIX: &str = "x-vsr-";

    /// Decision-header names after the prefix.
    pub mod suffix {
        pub const SELECTED_MODEL: &str = "selected-model";
        pub const SELECTED_CATEGORY: &str = "selected-category";
        pub const SELECTED_DECISION: &str = "selected-decision";
        pub const SELECTED_REASON: &str = "selected-reason";
        pub const SELECTED_REASONING: &str = "selected-reasoning";
        pub const CONFIDENCE: &str = "confidence";
        pub const INJECTED_SYSTEM_PROMPT: &str = "injected-system-prompt";
        pub const FALLBACK: &str = "fallback";
        pub const SKIPPED: &str = "skipped";
        pub const CACHE_HIT: &str = "cache-hit";
        pub const JAILBREAK_BLOCKED: &str = "jailbreak-blocked";
        pub const JAILBREAK_TYPE: &str = "jailbreak-type";
        pub const JAILBREAK_CONFIDENCE: &str = "jailbreak-confidence";
        pub const PII_VIOLATION: &str = "pii-violation";
        pub const PII_TYPES: &str = "pii-types";
        pub const DEBUG_SCORES: &str = "debug-scores";
        pub const DEBUG_PROCESSING_US: &str = "debug-processing-us";
        pub const DEBUG_JAILBREAK: &str = "debug-jailbreak";
        /// Client request headers the filter honours (when allowed by its config).
        pub const SKIP_CACHE: &str = "skip-cache";
        pub const SKIP_PROCESSING: &str = "skip-processing";
        pub const DEBUG: &str = "debug";
    }

    /// Full names with the default prefix, for the sidecar and the tests.
    pub const HEADER_MODEL: &str = "x-vsr-selected-model";
    pub const HEADER_CATEGORY: &str = "x-vsr-selected-category";
    pub const HEADER_DECISION: &str = "x-vsr-selected-decision";
    pub const HEADER_REASON: &str = "x-vsr-selected-reason";
    pub const HEADER_JAILBREAK_BLOCKED: &str = "x-vsr-jailbreak-blocked";
    pub const HEADER_JAILBREAK_TYPE: &str = "x-vsr-jailbreak-type";
    pub const HEADER_JAILBREAK_CONFIDENCE: &str = "x-vsr-jailbreak-confidence";
    pub const HEADER_PII_VIOLATION: &str = "x-vsr-pii-violation";
    pub const HEADER_PII_TYPES: &str = "x-vsr-pii-types";

    /// Values of x-vsr-selected-reason, one per [`crate::v1::Reason`] (vLLM Semantic Router's
    /// strings where it has one).
    pub mod reason {
        pub const CATEGORY: &str = "category";
        pub const LOW_CONFIDENCE: &str = "low_confidence";
        pub const DECISION: &str = "decision";
        pub const NO_DECISION_MATCHED: &str = "no_decision_matched";
        pub const FAST_RESPONSE: &str = "fast_response";
        pub const JAILBREAK_BLOCKED: &str = "jailbreak_blocked";
        pub const PII_POLICY_VIOLATION: &str = "pii_policy_violation";
        pub const PII_POLICY_ALTERNATIVE: &str = "pii_policy_alternative";
    }

    impl crate::v1::Reason {
        /// The header value; `""` for an unset reason (no header).
        pub fn wire(self) -> &'static str {
            use crate::v1::Reason as R;
            match self {
                R::Unspecified => "",
                R::Category => reason::CATEGORY,
                R::LowConfidence => reason::LOW_CONFIDENCE,
                R::Decision => reason::DECISION,
                R::NoDecisionMatched => reason::NO_DECISION_MATCHED,
                R::FastResponse => reason::FAST_RESPONSE,
                R::JailbreakBlocked => reason::JAILBREAK_BLOCKED,
                R::PiiPolicyViolation => reason::PII_POLICY_VIOLATION,
                R::PiiPolicyAlternative => reason::PII_POLICY_ALTERNATIVE,
            }
        }
    }

    /// Every decision header of `d` as (name, value), names after `prefix`: the routing facts,
    /// the guard's block and the PII verdict. Values are raw; the caller makes them header-safe.
    /// One renderer, so the filter and the ExtProc baseline send the same headers.
    pub fn decision_headers(d: &crate::v1::Decision, model: &str, prefix: &str) -> Vec<(String, String)> {
        let h = |s: &str| format!("{prefix}{s}");
        let mut out = vec![
            (h(suffix::SELECTED_MODEL), model.to_string()),
            (h(suffix::SELECTED_CATEGORY), d.category.clone()),
            (h(suffix::CONFIDENCE), format!("{:.4}", d.confidence)),
        ];
        let reason = d.reason();
        if reason != crate::v1::Reason::Unspecified {
            out.push((h(suffix::SELECTED_REASON), reason.wire().to_string()));
        }
        if !d.decision.is_empty() {
            out.push((h(suffix::SELECTED_DECISION), d.decision.clone()));
        }
        // The guard's details go out only when it blocked (a v0.3 verdict is a signal, shown
        // by the debug header).
        if let (crate::v1::Reason::JailbreakBlocked, Some(g)) = (reason, &d.jailbreak) {
            out.push((h(suffix::JAILBREAK_BLOCKED), "true".into()));
            out.push((h(suffix::JAILBREAK_TYPE), g.label.clone()));
            out.push((h(suffix::JAILBREAK_CONFIDENCE), format!("{:.3}", g.confidence)));
        }
        if let Some(p) = &d.pii {
            if p.violation {
                out.push((h(suffix::PII_VIOLATION), "true".into()));
            }
            if !p.types.is_empty() {
                out.push((h(suffix::PII_TYPES), p.types.join(",")));
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn full_names_are_the_prefix_and_suffix() {
            for (full, s) in [
                (HEADER_MODEL, suffix::SELECTED_MODEL),
                (HEADER_CATEGORY, suffix::SELECTED_CATEGORY),
                (HEADER_DECISION, suffix::SELECTED_DECISION),
                (HEADER_REASON, suffix::SELECTED_REASON),
                (HEADER_JAILBREAK_BLOCKED, suffix::JAILBREAK_BLOCKED),
                (HEADER_JAILBREAK_TYPE, suffix::JAILBREAK_TYPE),
                (HEADER_JAILBREAK_CONFIDENCE, suffix::JAILBREAK_CONFIDENCE),
                (HEADER_PII_VIOLATION, suffix::PII_VIOLATION),
                (HEADER_PII_TYPES, suffix::PII_TYPES),
            ] {
                assert_eq!(full, format!("{PREFIX}{s}"));
            }
        }

        #[test]
        fn every_reason_has_a_distinct_wire_string() {
            use crate::v1::Reason;
            let all: Vec<&str> = (1..).map_while(|i| Reason::try_from(i).ok()).map(Reason::wire).collect();
            assert_eq!(all.len(), 8);
            assert!(all.iter().all(|w| !w.is_empty()));
            let mut unique = all.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), all.len());
        }

        #[test]
        fn guard_and_pii_headers_follow_the_typed_verdicts() {
            use crate::v1::{Decision, GuardVerdict, PiiVerdict, Reason};
            let names = |d: &Decision| decision_headers(d, "m", PREFIX).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
            let mut d = Decision {
                category: "math".into(),
                jailbreak: Some(GuardVerdict { flagged: true, label: "jailbreak".into(), confidence: 0.91 }),
                ..Default::default()
            };
            d.set_reason(Reason::Decision);
            // A v0.3 verdict is a signal: no block headers.
            assert!(!names(&d).contains(&HEADER_JAILBREAK_BLOCKED.to_string()));
            d.set_reason(Reason::JailbreakBlocked);
            let all = decision_headers(&d, "m", "x-my-");
            assert!(all.contains(&("x-my-jailbreak-blocked".into(), "true".into())), "{all:?}");
            assert!(all.contains(&("x-my-jailbreak-confidence".into(), "0.910".into())), "{all:?}");
            assert!(all.contains(&("x-my-selected-reason".into(), "jailbreak_blocked".into())), "{all:?}");
            d.pii = Some(PiiVerdict { violation: false, types: vec!["EMAIL".into(), "PHONE".into()] });
            let all = decision_headers(&d, "m", PREFIX);
            assert!(all.contains(&(HEADER_PII_TYPES.into(), "EMAIL,PHONE".into())), "{all:?}");
            assert!(!names(&d).contains(&HEADER_PII_VIOLATION.to_string()));
        }
    }
}
