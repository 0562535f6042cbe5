//! Time to first token (TTFT) and time per output token (TPOT) of a streamed answer, from the
//! times its body chunks arrived. Pure: the filter feeds it the host's clock.

/// The clock of one streamed answer.
#[derive(Debug, Clone)]
pub struct TokenClock {
    /// When the request reached the filter (nanoseconds).
    start: u64,
    first: Option<u64>,
    last: Option<u64>,
    chunks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTimes {
    /// Request start to the first chunk of the answer, microseconds.
    pub ttft_us: u64,
    /// Mean time per output token after the first, microseconds; `None` with fewer than two
    /// tokens.
    pub tpot_us: Option<u64>,
}

impl TokenClock {
    pub fn new(start_nanos: u64) -> Self {
        Self { start: start_nanos, first: None, last: None, chunks: 0 }
    }

    /// A non-empty chunk of the answer arrived at `now_nanos`.
    pub fn chunk(&mut self, now_nanos: u64) {
        self.first.get_or_insert(now_nanos);
        self.last = Some(now_nanos);
        self.chunks += 1;
    }

    /// The times of the answer: tokens after the first are the answer's `completion_tokens`
    /// when its usage reported them, else its chunks (a streamed delta carries about one).
    pub fn finish(&self, completion_tokens: Option<u64>) -> Option<TokenTimes> {
        let first = self.first?;
        let last = self.last.unwrap_or(first);
        let tokens = completion_tokens.filter(|&t| t > 0).unwrap_or(self.chunks);
        let tpot_us = (tokens >= 2).then(|| (last.saturating_sub(first) / 1_000) / (tokens - 1));
        Some(TokenTimes { ttft_us: first.saturating_sub(self.start) / 1_000, tpot_us })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn ttft_is_to_the_first_chunk_and_tpot_spreads_the_rest_over_the_tokens() {
        let mut c = TokenClock::new(10 * MS);
        assert_eq!(c.finish(None), None, "no chunk: nothing to report");
        c.chunk(60 * MS);
        c.chunk(70 * MS);
        c.chunk(100 * MS);
        // 50 ms to the first chunk; 40 ms over 2 later chunks, or over 4 later tokens by usage.
        assert_eq!(c.finish(None), Some(TokenTimes { ttft_us: 50_000, tpot_us: Some(20_000) }));
        assert_eq!(c.finish(Some(5)), Some(TokenTimes { ttft_us: 50_000, tpot_us: Some(10_000) }));
    }

    #[test]
    fn one_token_has_no_tpot() {
        let mut c = TokenClock::new(0);
        c.chunk(3 * MS);
        assert_eq!(c.finish(Some(1)), Some(TokenTimes { ttft_us: 3_000, tpot_us: None }));
        assert_eq!(c.finish(None), Some(TokenTimes { ttft_us: 3_000, tpot_us: None }));
    }
}
