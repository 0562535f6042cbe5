//! AVX-512 kernels behind [`super`]: the matrix product against pre-packed weights with its
//! fused epilogues, vectorised `exp` / GELU, the attention of one head and softmax.
//!
//! Every function here needs AVX-512F; callers check `is_x86_feature_detected!("avx512f")`
//! once before entering. Pointers are raw because the row-parallel callers write disjoint
//! tiles of one output buffer from several threads.

use std::arch::x86_64::*;

/// Columns per packed weight panel: two 16-lane registers.
pub const NR: usize = 32;
/// Rows of the register tile: 8 rows × 2 registers = 16 accumulators, which leaves registers
/// for the two weight vectors and the broadcast input.
const MR: usize = 8;

/// A 64-byte aligned run of 16 floats: packed panels start on a cache line, so the two
/// weight loads of a panel row never straddle lines.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

/// A zero-initialised, 64-byte aligned f32 buffer.
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    pub fn zeros(len: usize) -> Self {
        Self { lines: vec![Line([0.0; 16]); len.div_ceil(16)], len }
    }

    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` over `[f32; 16]`, so the lines are `16 * lines.len()`
        // contiguous, initialised f32 values, and `len` never exceeds that.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, with exclusive access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

/// A linear layer's weight `[k, n]` (burn's in × out layout) and bias, packed once into
/// column panels of [`NR`]: panel `p` holds `w[kk, p*NR + c]` at `kk*NR + c`, zero-padded past
/// `n`, so the kernel streams one panel row (two aligned vectors) per step of `k`.
pub struct PackedLinear {
    pub k: usize,
    pub n: usize,
    panels: AlignedBuf,
    bias: AlignedBuf,
}

impl PackedLinear {
    pub fn new(w: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [k, n]");
        let np = n.div_ceil(NR);
        let mut panels = AlignedBuf::zeros(np * k * NR);
        let dst = panels.as_mut_slice();
        for p in 0..np {
            let cols = (n - p * NR).min(NR);
            for kk in 0..k {
                let from = kk * n + p * NR;
                let to = (p * k + kk) * NR;
                dst[to..to + cols].copy_from_slice(&w[from..from + cols]);
            }
        }
        let mut padded_bias = AlignedBuf::zeros(np * NR);
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias length");
            padded_bias.as_mut_slice()[..n].copy_from_slice(b);
        }
        Self { k, n, panels, bias: padded_bias }
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

/// What happens to a tile of `x·W` before it is stored.
#[derive(Clone, Copy)]
pub enum Epilogue {
    /// `x·W + b`.
    Bias,
    /// `gelu(x·W + b)`, exact (erf) GELU.
    BiasGelu,
    /// `x·W + b + r` with `r` an `[m, n]` row-major residual.
    BiasResidual(*const f32),
}

// SAFETY: the residual is only read, and the matrix product that carries the epilogue to its
// tasks returns before the caller's residual buffer can be dropped or written.
unsafe impl Send for Epilogue {}
unsafe impl Sync for Epilogue {}

/// Lanes `0..len` of a 16-lane mask.
#[inline]
fn tail_mask(len: usize) -> __mmask16 {
    if len >= 16 {
        0xffff
    } else {
        ((1u32 << len) - 1) as __mmask16
    }
}

/// Rows `r0..r1` of `out[m, n] = epilogue(a[m, k] · W)` for panel `p` of `w`.
///
/// # Safety
/// AVX-512F; `a` holds `r1 * w.k` floats, `out` (and a residual) `r1 * w.n`; no other thread
/// writes this panel's columns of these rows.
#[target_feature(enable = "avx512f")]
pub unsafe fn matmul_panel(a: *const f32, w: &PackedLinear, p: usize, r0: usize, r1: usize, epi: Epilogue, out: *mut f32) {
    // While this panel's tiles run from cache, the next panel (this thread's next task) is
    // prefetched into L2, a share before each tile, so its first tile does not wait on L3 or
    // memory for the weights.
    let next = (p + 1 < w.panels()).then(|| w.panels.as_slice().as_ptr().add((p + 1) * w.k * NR));
    let tiles = (r1 - r0).div_ceil(MR);
    let prefetch_share = |ti: usize| {
        if let Some(next) = next {
            for kk in ti * w.k / tiles..(ti + 1) * w.k / tiles {
                _mm_prefetch::<_MM_HINT_T1>(next.add(kk * NR).cast());
                _mm_prefetch::<_MM_HINT_T1>(next.add(kk * NR + 16).cast());
            }
        }
    };
    let mut r = r0;
    while r + MR <= r1 {
        prefetch_share((r - r0) / MR);
        tile::<MR>(a, w, p, r, epi, out);
        r += MR;
    }
    if r < r1 {
        prefetch_share((r - r0) / MR);
    }
    match r1 - r {
        0 => {}
        1 => tile::<1>(a, w, p, r, epi, out),
        2 => tile::<2>(a, w, p, r, epi, out),
        3 => tile::<3>(a, w, p, r, epi, out),
        4 => tile::<4>(a, w, p, r, epi, out),
        5 => tile::<5>(a, w, p, r, epi, out),
        6 => tile::<6>(a, w, p, r, epi, out),
        7 => tile::<7>(a, w, p, r, epi, out),
        _ => unreachable!("remainder below MR"),
    }
}

/// One `R × NR` register tile: rows `row..row + R`, panel `p`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize>(a: *const f32, w: &PackedLinear, p: usize, row: usize, epi: Epilogue, out: *mut f32) {
    let (k, n) = (w.k, w.n);
    let b = w.panels.as_slice().as_ptr().add(p * k * NR);
    let a = a.add(row * k);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for kk in 0..k {
        let b0 = _mm512_load_ps(b.add(kk * NR));
        let b1 = _mm512_load_ps(b.add(kk * NR + 16));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r * k + kk));
            acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
        }
    }
    let col = p * NR;
    let cols = (n - col).min(NR);
    let masks = [tail_mask(cols), tail_mask(cols.saturating_sub(16))];
    let bias = w.bias.as_slice().as_ptr().add(col);
    let bias = [_mm512_load_ps(bias), _mm512_load_ps(bias.add(16))];
    for (r, acc) in acc.iter().enumerate() {
        let at = (row + r) * n + col;
        for h in 0..2 {
            let mut v = _mm512_add_ps(acc[h], bias[h]);
            match epi {
                Epilogue::Bias => {}
                Epilogue::BiasGelu => v = gelu(v),
                Epilogue::BiasResidual(res) => {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[h], res.add(at + 16 * h)))
                }
            }
            _mm512_mask_storeu_ps(out.add(at + 16 * h), masks[h], v);
        }
    }
}

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two (Cody–Waite): `n * LN2_HI` is exact for the `n` that occur, so the
/// reduced argument keeps full precision.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` per lane: `2^n · e^r` with `n = round(x / ln 2)` and `|r| ≤ ln 2 / 2`, `e^r` from its
/// Taylor series to `r^7` (truncation below 1e-8 relative on that interval). Inputs are
/// clamped to where the result is finite or rounds to zero.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp(x: __m512) -> __m512 {
    let x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7)), _mm512_set1_ps(-104.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(LOG2_E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut e = _mm512_set1_ps(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(e, n)
}

/// Exact GELU `x·Φ(x)` per lane. With `z = |x|/√2`, `erfc(z) ≈ t·P(t)·e^{−z²}`,
/// `t = 1/(1 + 0.3275911·z)` (Abramowitz & Stegun 7.1.26, absolute error ≤ 1.5e-7); then
/// `Φ(x) = 1 − erfc(z)/2` for `x ≥ 0` and `erfc(z)/2` for `x < 0`, which keeps the small
/// negative tail free of cancellation.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn gelu(x: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    let z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.327_591_1), z, one));
    let mut poly = _mm512_set1_ps(1.061_405_4);
    for c in [-1.453_152, 1.421_413_8, -0.284_496_72, 0.254_829_6] {
        poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
    }
    let neg_z2 = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z));
    let half_erfc = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), _mm512_mul_ps(poly, t)), exp(neg_z2));
    let positive = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_setzero_ps());
    let phi = _mm512_mask_blend_ps(positive, half_erfc, _mm512_sub_ps(one, half_erfc));
    _mm512_mul_ps(x, phi)
}

/// In-place softmax of `len` floats at `row`.
///
/// # Safety
/// AVX-512F; `row` valid for `len` reads and writes, `len > 0`.
#[target_feature(enable = "avx512f")]
pub unsafe fn softmax(row: *mut f32, len: usize) {
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in (0..len).step_by(16) {
        let m = tail_mask(len - i);
        max = _mm512_max_ps(max, _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), m, row.add(i)));
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    let mut sum = _mm512_setzero_ps();
    for i in (0..len).step_by(16) {
        let m = tail_mask(len - i);
        let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row.add(i)), max));
        sum = _mm512_mask_add_ps(sum, m, sum, e);
        _mm512_mask_storeu_ps(row.add(i), m, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    for i in (0..len).step_by(16) {
        let m = tail_mask(len - i);
        _mm512_mask_storeu_ps(row.add(i), m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row.add(i)), inv));
    }
}

/// Where one head's queries, keys and values sit in the fused `[tokens, 3H]` projection.
pub struct HeadView {
    /// Pointer to the first token's Q row of this head.
    pub q: *const f32,
    /// Offsets from a Q row to the same token's K and V rows.
    pub k_off: usize,
    pub v_off: usize,
    /// Floats between consecutive tokens (3H).
    pub stride: usize,
}

/// Query rows per block of [`attention_head`]: each key or value vector loaded serves four
/// rows.
const QB: usize = 4;

/// Scratch floats [`attention_head`] needs for `s` tokens and head width `hd`.
pub fn attention_scratch(s: usize, hd: usize) -> usize {
    let s16 = s.div_ceil(16) * 16;
    hd * s16 + QB * hd + QB * s16
}

/// Scaled dot-product attention of one head over `s` tokens:
/// `out_i = softmax(q_i·Kᵀ·scale + bias_i) · V`, written at `out + i * out_stride`.
/// `bias` (optional) is an `[s, s]` row-major additive score bias. `scratch` holds at least
/// [`attention_scratch`] floats.
///
/// # Safety
/// AVX-512F; `hd` a multiple of 16; every pointer valid for the rows it addresses.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn attention_head(
    v: &HeadView,
    s: usize,
    hd: usize,
    scale: f32,
    bias: Option<*const f32>,
    scratch: &mut [f32],
    out: *mut f32,
    out_stride: usize,
) {
    let s16 = s.div_ceil(16) * 16;
    assert!(scratch.len() >= attention_scratch(s, hd) && hd % 16 == 0);
    let (kt, rest) = scratch.split_at_mut(hd * s16);
    let (qs, scores) = rest.split_at_mut(QB * hd);
    // Kᵀ as [hd, s16] (zero-padded), so a block's scores are `hd` vector FMAs per 16 keys.
    kt.fill(0.0);
    for j in 0..s {
        let key = v.q.add(j * v.stride + v.k_off);
        for d in 0..hd {
            kt[d * s16 + j] = *key.add(d);
        }
    }
    let block = Block { v, s, s16, hd, scale, bias, kt: kt.as_ptr(), qs: qs.as_mut_ptr(), scores: scores.as_mut_ptr(), out, out_stride };
    let mut i = 0;
    while i + QB <= s {
        block.rows::<QB>(i);
        i += QB;
    }
    match s - i {
        0 => {}
        1 => block.rows::<1>(i),
        2 => block.rows::<2>(i),
        3 => block.rows::<3>(i),
        _ => unreachable!("remainder below QB"),
    }
}

/// One head's attention state, shared by its query blocks.
struct Block<'a> {
    v: &'a HeadView,
    s: usize,
    s16: usize,
    hd: usize,
    scale: f32,
    bias: Option<*const f32>,
    kt: *const f32,
    qs: *mut f32,
    scores: *mut f32,
    out: *mut f32,
    out_stride: usize,
}

impl Block<'_> {
    /// Query rows `i0..i0 + R`: scores, softmax, then the weighted sum of the values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize>(&self, i0: usize) {
        let (s, s16, hd) = (self.s, self.s16, self.hd);
        for r in 0..R {
            let q = self.v.q.add((i0 + r) * self.v.stride);
            for d in 0..hd {
                *self.qs.add(r * hd + d) = *q.add(d) * self.scale;
            }
        }
        for jv in (0..s16).step_by(16) {
            let mut acc = [_mm512_setzero_ps(); R];
            for d in 0..hd {
                let k = _mm512_loadu_ps(self.kt.add(d * s16 + jv));
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*self.qs.add(r * hd + d)), k, *acc);
                }
            }
            for (r, mut acc) in acc.into_iter().enumerate() {
                if let Some(b) = self.bias {
                    acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(tail_mask(s - jv), b.add((i0 + r) * s + jv)));
                }
                _mm512_storeu_ps(self.scores.add(r * s16 + jv), acc);
            }
        }
        for r in 0..R {
            softmax(self.scores.add(r * s16), s);
        }
        for dv in (0..hd).step_by(16) {
            let mut acc = [_mm512_setzero_ps(); R];
            for j in 0..s {
                let val = _mm512_loadu_ps(self.v.q.add(j * self.v.stride + self.v.v_off + dv));
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*self.scores.add(r * s16 + j)), val, *acc);
                }
            }
            for (r, acc) in acc.into_iter().enumerate() {
                _mm512_storeu_ps(self.out.add((i0 + r) * self.out_stride + dv), acc);
            }
        }
    }
}
