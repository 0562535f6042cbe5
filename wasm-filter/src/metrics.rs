//! Envoy stats the filter emits. Envoy prefixes them with `wasmcustom.`.

/// Counters, one per outcome, so dashboards can rate() them directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Classified and routed by the sidecar's decision.
    Routed,
    /// The client named a model: no callout.
    Explicit,
    /// The sidecar decided to block the request.
    Blocked,
    /// Rejected by the filter as bad input (4xx).
    Rejected,
    /// Fail-open: routed to the default model.
    Fallback(FallbackReason),
    /// Fail-closed: answered 503.
    FailedClosed,
    /// Answered from the semantic cache.
    CacheHit,
    /// A response was handed to the semantic cache.
    CacheStore,
    /// Answered by the decision's fast_response plugin.
    FastResponse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackReason {
    /// The callout could not be started (e.g. unknown cluster).
    DispatchFailed,
    /// The callout exceeded its deadline.
    Timeout,
    /// The sidecar was unreachable.
    Unavailable,
    /// Any other gRPC error status.
    GrpcError,
    /// The reply did not decode as a ClassifyResponse.
    BadReply,
    /// The reply carried no model.
    EmptyDecision,
    /// The request had no text to classify.
    NoPrompt,
}

impl FallbackReason {
    pub const ALL: [FallbackReason; 7] = [
        Self::DispatchFailed,
        Self::Timeout,
        Self::Unavailable,
        Self::GrpcError,
        Self::BadReply,
        Self::EmptyDecision,
        Self::NoPrompt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DispatchFailed => "dispatch_failed",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::GrpcError => "grpc_error",
            Self::BadReply => "bad_reply",
            Self::EmptyDecision => "empty_decision",
            Self::NoPrompt => "no_prompt",
        }
    }

    /// Maps a gRPC status code of a failed callout.
    pub fn from_grpc_status(code: u32) -> Self {
        match code {
            4 => Self::Timeout,
            14 => Self::Unavailable,
            _ => Self::GrpcError,
        }
    }
}

impl Counter {
    pub fn all() -> Vec<Counter> {
        let mut all = vec![
            Self::Routed,
            Self::Explicit,
            Self::Blocked,
            Self::Rejected,
            Self::FailedClosed,
            Self::CacheHit,
            Self::CacheStore,
            Self::FastResponse,
        ];
        all.extend(FallbackReason::ALL.iter().map(|r| Self::Fallback(*r)));
        all
    }

    pub fn name(self) -> String {
        match self {
            Self::Routed => "semantic_router.requests.routed".into(),
            Self::Explicit => "semantic_router.requests.explicit".into(),
            Self::Blocked => "semantic_router.requests.blocked".into(),
            Self::Rejected => "semantic_router.requests.rejected".into(),
            Self::FailedClosed => "semantic_router.requests.failed_closed".into(),
            Self::CacheHit => "semantic_router.cache.hits".into(),
            Self::CacheStore => "semantic_router.cache.stores".into(),
            Self::FastResponse => "semantic_router.requests.fast_response".into(),
            Self::Fallback(r) => format!("semantic_router.fallback.{}", r.as_str()),
        }
    }
}

pub const CALLOUT_LATENCY_HISTOGRAM: &str = "semantic_router.callout_latency_us";

/// Token counters per model: `<prefix>.prompt.<model>` and `<prefix>.completion.<model>`.
pub const TOKENS_PREFIX: &str = "semantic_router.tokens";

/// Histograms of streamed answers per selected model and decision (microseconds):
/// `<prefix>.<model>.<decision>`.
pub const TTFT_PREFIX: &str = "semantic_router.ttft_us";
pub const TPOT_PREFIX: &str = "semantic_router.tpot_us";

/// A model or decision name as one segment of a stat name.
pub fn stat_segment(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}
