//! CPU kernels for the BERT layer on the flex backend.
//!
//! burn's generic ops leave a lot on the table for a 6-layer encoder over a few dozen tokens:
//! the matrix products re-pack their weights on every call and split 55-row products poorly
//! over threads, GELU runs a scalar `erf`, and attention goes through permute copies and a
//! scalar softmax. For the flex backend on a CPU with AVX-512, [`bert_layer`] runs the whole
//! layer here instead:
//! - linear weights are packed once (kept in a cache keyed by the weight's storage) into
//!   column panels that a register-tiled AVX-512 kernel streams, with the bias, GELU or
//!   residual add fused into the store;
//! - attention reads Q, K and V in place from the fused QKV projection (no permute copies),
//!   one task per (sequence, head), with a vectorised softmax;
//! - every product and the attention run over rayon's pool (panels × row blocks, heads).
//!
//! Any other backend, dtype, activation or CPU returns `None` and the caller runs its burn
//! ops, which are also what the tests compare these kernels against.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::bert::BertLayer;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// `layer.forward(x, bias)` in the CPU kernels when `B` is flex and this CPU has AVX-512;
/// `None` when the caller should use burn's ops.
pub fn bert_layer<B: Backend>(layer: &BertLayer<B>, x: &Tensor<B, 3>, bias: Option<&Tensor<B, 4>>) -> Option<Tensor<B, 3>> {
    #[cfg(target_arch = "x86_64")]
    {
        flex::bert_layer(layer, x, bias)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (layer, x, bias);
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod flex {
    use std::any::Any;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use burn::backend::Flex;
    use burn::nn::{LayerNorm, Linear};
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorData};
    use burn_flex::{FlexDevice, FlexTensor};
    use rayon::prelude::*;

    use super::avx512::{self, Epilogue, HeadView, PackedLinear};
    use crate::model::bert::BertLayer;
    use crate::model::common::Activation;

    pub fn bert_layer<B: Backend>(layer: &BertLayer<B>, x: &Tensor<B, 3>, bias: Option<&Tensor<B, 4>>) -> Option<Tensor<B, 3>> {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return None;
        }
        let layer = (layer as &dyn Any).downcast_ref::<BertLayer<Flex>>()?;
        let x = (x as &dyn Any).downcast_ref::<Tensor<Flex, 3>>()?;
        let bias = match bias {
            Some(b) => Some(F32View::of((b as &dyn Any).downcast_ref::<Tensor<Flex, 4>>()?)?),
            None => None,
        };
        let y = on_pool(|| forward(layer, x, bias.as_ref()))?;
        let y: Box<dyn Any> = Box::new(y);
        y.downcast::<Tensor<B, 3>>().ok().map(|y| *y)
    }

    /// Runs `f` on a worker of rayon's pool when there is more than one thread, so the
    /// parallel loops inside it are picked up by idle workers instead of each one waking the
    /// pool from outside.
    fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        if rayon::current_num_threads() > 1 && rayon::current_thread_index().is_none() {
            rayon::scope(|_| f())
        } else {
            f()
        }
    }

    /// `f(0..n)` over rayon's pool (in order on the current thread when there is one thread).
    fn for_each_task(n: usize, f: impl Fn(usize) + Send + Sync) {
        if n <= 1 || rayon::current_num_threads() <= 1 {
            (0..n).for_each(f);
        } else {
            (0..n).into_par_iter().for_each(f);
        }
    }

    fn forward(l: &BertLayer<Flex>, x: &Tensor<Flex, 3>, bias: Option<&F32View>) -> Option<Tensor<Flex, 3>> {
        let [b, s, h] = x.dims();
        let t = b * s;
        let nh = l.n_heads;
        if l.act != Activation::Gelu || nh == 0 || h % nh != 0 || (h / nh) % 16 != 0 {
            return None;
        }
        let (qkv_w, out_w) = (packed(&l.qkv)?, packed(&l.attn_out)?);
        let (up_w, down_w) = (packed(&l.intermediate)?, packed(&l.output)?);
        let shapes_match = (qkv_w.k, qkv_w.n) == (h, 3 * h)
            && (out_w.k, out_w.n) == (h, h)
            && up_w.k == h
            && (down_w.k, down_w.n) == (up_w.n, h);
        if !shapes_match || bias.is_some_and(|m| m.slice().len() != b * s * s) {
            return None;
        }
        let x = F32View::of(x)?;

        SCRATCH.with(|scratch| {
            // Reused between calls on this thread: every element is overwritten below, so
            // the buffers need neither zeroing nor fresh pages per call.
            let mut scratch = scratch.take();
            let [qkv, ctx, up] = &mut scratch;
            for (buf, len) in [(&mut *qkv, t * 3 * h), (&mut *ctx, t * h), (&mut *up, t * up_w.n)] {
                buf.resize(len, 0.0);
            }
            matmul(x.slice(), t, &qkv_w, Epilogue::Bias, qkv);
            attention(qkv, b, s, nh, h / nh, bias.map(F32View::slice), ctx);
            let mut attn = vec![0f32; t * h];
            matmul(ctx, t, &out_w, Epilogue::BiasResidual(x.slice().as_ptr()), &mut attn);
            let x1 = layer_norm(&l.attn_norm, attn, t, h);
            let x1v = F32View::of(&x1)?;
            matmul(x1v.slice(), t, &up_w, Epilogue::BiasGelu, up);
            let mut down = vec![0f32; t * h];
            matmul(up, t, &down_w, Epilogue::BiasResidual(x1v.slice().as_ptr()), &mut down);
            let y = layer_norm(&l.out_norm, down, t, h).reshape([b, s, h]);
            SCRATCH.with(|slot| slot.set(scratch));
            Some(y)
        })
    }

    thread_local! {
        /// The layer's intermediate buffers (QKV, attention context, feed-forward), per thread.
        static SCRATCH: std::cell::Cell<[Vec<f32>; 3]> = const { std::cell::Cell::new([Vec::new(), Vec::new(), Vec::new()]) };
    }

    /// The layer's own norm module (burn's flex kernel, with its epsilon) on `[t, h]` rows.
    fn layer_norm(norm: &LayerNorm<Flex>, rows: Vec<f32>, t: usize, h: usize) -> Tensor<Flex, 3> {
        let rows = Tensor::<Flex, 3>::from_data(TensorData::new(rows, [1, t, h]), &FlexDevice);
        norm.forward(rows)
    }

    /// A raw output pointer shared by tasks that write disjoint parts of one buffer.
    #[derive(Clone, Copy)]
    struct OutPtr(*mut f32);
    // SAFETY: every task writes a disjoint set of elements (see the callers), and the buffer
    // outlives the parallel loop that uses the pointer.
    unsafe impl Send for OutPtr {}
    unsafe impl Sync for OutPtr {}
    impl OutPtr {
        /// Through a method so closures capture the `Send` wrapper, not the raw field.
        fn get(self) -> *mut f32 {
            self.0
        }
    }

    /// Rows handled by one task of [`matmul`]: the rows of one block share each panel load.
    const ROW_BLOCK: usize = 64;

    /// `out[m, n] = epilogue(a[m, k] · W)`, tasks over (row block, column panel).
    fn matmul(a: &[f32], m: usize, w: &PackedLinear, epi: Epilogue, out: &mut [f32]) {
        assert!(a.len() >= m * w.k && out.len() >= m * w.n);
        let np = w.panels();
        let blocks = m.div_ceil(ROW_BLOCK);
        let (a, o) = (a.as_ptr() as usize, OutPtr(out.as_mut_ptr()));
        for_each_task(blocks * np, move |task| {
            let (block, p) = (task / np, task % np);
            let (r0, r1) = (block * ROW_BLOCK, ((block + 1) * ROW_BLOCK).min(m));
            // SAFETY: AVX-512F was checked in `bert_layer`; `a` has `m * k` floats, `out`
            // (and the residual, asserted by the caller's shapes) `m * n`; tasks own disjoint
            // (row block, panel) tiles.
            unsafe { avx512::matmul_panel(a as *const f32, w, p, r0, r1, epi, o.get()) };
        });
    }

    /// Multi-head attention from the fused `[b*s, 3h]` projection into `ctx` `[b*s, h]`,
    /// one task per (sequence, head). `bias` is the `[b, 1, s, s]` additive score bias.
    fn attention(qkv: &[f32], b: usize, s: usize, nh: usize, hd: usize, bias: Option<&[f32]>, ctx: &mut [f32]) {
        let h = nh * hd;
        assert!(qkv.len() == b * s * 3 * h && ctx.len() == b * s * h);
        let scale = 1.0 / (hd as f32).sqrt();
        let (qkv, out) = (qkv.as_ptr() as usize, OutPtr(ctx.as_mut_ptr()));
        let bias = bias.map(|m| m.as_ptr() as usize);
        for_each_task(b * nh, move |task| {
            let (n, head) = (task / nh, task % nh);
            let mut scratch = vec![0f32; avx512::attention_scratch(s, hd)];
            let view = HeadView {
                q: (qkv as *const f32).wrapping_add(n * s * 3 * h + head * hd),
                k_off: h,
                v_off: 2 * h,
                stride: 3 * h,
            };
            let bias = bias.map(|m| (m as *const f32).wrapping_add(n * s * s));
            let o = o_at(out, n * s * h + head * hd);
            // SAFETY: AVX-512F checked in `bert_layer`; the view addresses this sequence's
            // rows of `qkv`, the bias this sequence's `[s, s]` block, and the task writes only
            // its own head's columns of its own sequence's rows of `ctx`.
            unsafe { avx512::attention_head(&view, s, hd, scale, bias, &mut scratch, o, h) };
        });
    }

    fn o_at(out: OutPtr, offset: usize) -> *mut f32 {
        out.get().wrapping_add(offset)
    }

    /// Read access to a flex tensor's f32 values in row-major order (a copy only for strided
    /// views).
    struct F32View {
        tensor: FlexTensor,
        start: usize,
        len: usize,
    }

    impl F32View {
        fn of<const D: usize>(t: &Tensor<Flex, D>) -> Option<Self> {
            let mut tensor = t.clone().into_primitive().tensor();
            if tensor.dtype() != DType::F32 {
                return None;
            }
            if !tensor.is_contiguous() {
                tensor = tensor.to_contiguous();
            }
            let (start, end) = tensor.layout().contiguous_offsets()?;
            Some(Self { tensor, start, len: end - start })
        }

        fn slice(&self) -> &[f32] {
            &self.tensor.storage::<f32>()[self.start..self.start + self.len]
        }
    }

    /// Identity of a weight (and bias) view: storage address and layout. The cache entry
    /// holds a reference to the storage, so the address cannot be reused by other data and
    /// flex's copy-on-write never mutates it in place while the entry lives.
    #[derive(PartialEq, Eq, Hash)]
    struct Key {
        weight: (usize, usize, Vec<usize>, Vec<isize>),
        bias: Option<(usize, usize)>,
    }

    struct Entry {
        storage: Vec<Arc<burn::tensor::Bytes>>,
        packed: Arc<PackedLinear>,
    }

    static PACKED: Mutex<Option<HashMap<Key, Entry>>> = Mutex::new(None);

    /// The packed form of `linear`, packed on first use and cached while its weights live.
    fn packed(linear: &Linear<Flex>) -> Option<Arc<PackedLinear>> {
        let weight = linear.weight.val().into_primitive().tensor();
        let bias = linear.bias.as_ref().map(|b| b.val().into_primitive().tensor());
        if weight.dtype() != DType::F32 || bias.as_ref().is_some_and(|b| b.dtype() != DType::F32) {
            return None;
        }
        let layout = weight.layout();
        let key = Key {
            weight: (
                Arc::as_ptr(&weight.data_arc()) as usize,
                layout.start_offset(),
                layout.shape().to_vec(),
                layout.strides().to_vec(),
            ),
            bias: bias.as_ref().map(|b| (Arc::as_ptr(&b.data_arc()) as usize, b.layout().start_offset())),
        };
        let mut cache = PACKED.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        if let Some(entry) = cache.get(&key) {
            return Some(entry.packed.clone());
        }
        // Entries whose weights only the cache still holds belong to dropped models.
        cache.retain(|_, e| e.storage.iter().all(|s| Arc::strong_count(s) > 1));
        let [k, n] = linear.weight.dims();
        let w = Tensor::<Flex, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(weight.clone()));
        let w = w.into_data().into_vec::<f32>().ok()?;
        let b = match &bias {
            Some(b) => Some(F32View { start: b.layout().contiguous_offsets()?.0, len: n, tensor: b.clone() }),
            None => None,
        };
        let packed = Arc::new(PackedLinear::new(&w, k, n, b.as_ref().map(F32View::slice)));
        let mut storage = vec![weight.data_arc()];
        storage.extend(bias.map(|b| b.data_arc()));
        cache.insert(key, Entry { storage, packed: packed.clone() });
        Some(packed)
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Distribution, Tensor, TensorData};

    use crate::model::bert::{BertConfig, BertLayer};

    type B = crate::CpuBackend;

    /// Whether this CPU runs the kernels (elsewhere the model uses burn's ops, tested as such).
    fn kernels_run_here() -> bool {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        if !avx512 {
            eprintln!("no AVX-512 on this CPU: the kernels are not used here");
        }
        avx512
    }

    /// One BERT layer with GELU and every weight, bias and norm parameter drawn at random
    /// (scaled so activations stay O(1) and GELU sees both signs).
    fn layer(hidden: usize, heads: usize, intermediate: usize) -> BertLayer<B> {
        let config: BertConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": 16, "hidden_size": hidden, "num_hidden_layers": 1,
            "num_attention_heads": heads, "intermediate_size": intermediate,
            "max_position_embeddings": 64, "hidden_act": "gelu",
        }))
        .unwrap();
        let device = Default::default();
        let mut layer = config.init::<B>(&device).layers.remove(0);
        let normal = |std: f64| Distribution::Normal(0.0, std);
        for linear in [&mut layer.qkv, &mut layer.attn_out, &mut layer.intermediate, &mut layer.output] {
            let [k, n] = linear.weight.dims();
            linear.weight = Param::from_tensor(Tensor::random([k, n], normal(1.0 / (k as f64).sqrt()), &device));
            linear.bias = Some(Param::from_tensor(Tensor::random([n], normal(0.5), &device)));
        }
        for norm in [&mut layer.attn_norm, &mut layer.out_norm] {
            norm.gamma = Param::from_tensor(Tensor::random([hidden], Distribution::Uniform(0.5, 1.5), &device));
            norm.beta = Some(Param::from_tensor(Tensor::random([hidden], normal(0.5), &device)));
        }
        layer
    }

    /// The kernels against burn's ops on the same layer: padded and unpadded batches, a
    /// sequence length off the 16-lane grid, an intermediate width off the 32-column panels,
    /// and enough rows for several register tiles and row blocks.
    #[test]
    fn the_kernel_layer_matches_burn_ops() {
        if !kernels_run_here() {
            return;
        }
        let device = Default::default();
        for (hidden, heads, inter, batch, seq) in [(64, 4, 200, 2, 5), (96, 3, 96, 3, 37), (32, 2, 48, 1, 70)] {
            let layer = &layer(hidden, heads, inter);
            let x = Tensor::<B, 3>::random([batch, seq, hidden], Distribution::Normal(0.0, 1.0), &device);
            // The last sequence is padded after 3 tokens.
            let mut bias = vec![0f32; batch * seq * seq];
            for i in 0..seq {
                bias[((batch - 1) * seq + i) * seq + 3..((batch - 1) * seq + i + 1) * seq].fill(-1.0e30);
            }
            let bias = Tensor::<B, 4>::from_data(TensorData::new(bias, [batch, 1, seq, seq]), &device);
            for bias in [None, Some(bias)] {
                let fast = super::bert_layer(layer, &x, bias.as_ref()).expect("the kernels handle this layer");
                let reference = layer.forward_ops(x.clone(), bias);
                let diff = (fast - reference).abs().max().into_scalar();
                assert!(diff < 1e-4, "hidden {hidden}, seq {seq}: max |difference| {diff}");
            }
        }
    }

    /// The whole all-MiniLM-L6-v2 encoder, kernels vs burn ops, on the sentence-transformers
    /// fixture texts in one padded batch.
    #[test]
    fn minilm_hidden_states_match_burn_ops() {
        if !kernels_run_here() {
            return;
        }
        use crate::model::{Encoder, LoadOptions, Model};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("../models/all-MiniLM-L6-v2");
        assert!(dir.join("model.safetensors").exists(), "{} is missing: run `just models` first", dir.display());
        let device = Default::default();
        let model = Model::<B>::load(&dir, &LoadOptions::default(), &device).unwrap();
        let Encoder::Bert(bert) = &model.encoder else { panic!("MiniLM is a BERT") };
        let fixture = std::fs::read_to_string(root.join("fixtures/minilm/reference.json")).unwrap();
        let fixture: serde_json::Value = serde_json::from_str(&fixture).unwrap();
        let texts: Vec<&str> = fixture["cases"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
        let batch = model.batch(&model.tokenize(&texts).unwrap());
        let (b, s) = (batch.size(), batch.seq_len);
        assert!(batch.lens.iter().any(|&len| len < s), "the fixture texts differ in length");
        let ids = Tensor::<B, 2, burn::tensor::Int>::from_data(TensorData::new(batch.ids.clone(), [b, s]), &device);
        // Keys past each text's length masked, as the model masks padding.
        let bias: Vec<f32> = (0..b * s * s).map(|i| if i % s >= batch.lens[i / (s * s)] { -1.0e30 } else { 0.0 }).collect();
        let bias = Tensor::<B, 4>::from_data(TensorData::new(bias, [b, 1, s, s]), &device);
        let fast = bert.forward(ids.clone(), Some(bias.clone()));
        let mut reference = bert.embed(ids);
        for layer in &bert.layers {
            reference = layer.forward_ops(reference, Some(bias.clone()));
        }
        let diff = (fast - reference).abs().max().into_scalar();
        eprintln!("MiniLM last hidden state, kernels vs burn ops: max |difference| {diff:e}");
        // 5e-5 when written (hidden values of a few units, six layers of f32 rounding and two
        // different erf approximations); a wrong kernel is off by O(1).
        assert!(diff < 2e-4, "max |difference| {diff}");
    }

    /// Exact GELU and `exp` per lane against `libm`-grade references over a wide range.
    #[test]
    fn vector_gelu_and_exp_match_the_scalar_functions() {
        if !kernels_run_here() {
            return;
        }
        use std::arch::x86_64::*;
        let xs: Vec<f32> = (0..4096).map(|i| -12.0 + 24.0 * i as f32 / 4095.0).collect();
        let (mut gelu, mut exp) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
        for ((x, g), e) in xs.chunks(16).zip(gelu.chunks_mut(16)).zip(exp.chunks_mut(16)) {
            // SAFETY: AVX-512F checked above; every chunk has 16 floats.
            unsafe {
                let v = _mm512_loadu_ps(x.as_ptr());
                _mm512_storeu_ps(g.as_mut_ptr(), super::avx512::gelu(v));
                _mm512_storeu_ps(e.as_mut_ptr(), super::avx512::exp(v));
            }
        }
        let mut worst_gelu = 0f64;
        let mut worst_exp = 0f64;
        for ((&x, &g), &e) in xs.iter().zip(&gelu).zip(&exp) {
            let x = x as f64;
            let reference = 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2));
            worst_gelu = worst_gelu.max((g as f64 - reference).abs());
            worst_exp = worst_exp.max(((e as f64 - x.exp()) / x.exp()).abs());
        }
        assert!(worst_gelu < 2e-6, "GELU max |error| {worst_gelu}");
        assert!(worst_exp < 5e-7, "exp max relative error {worst_exp}");
    }

    /// erf in f64 to ~1e-15 from its Maclaurin series (|x| < 3) and continued fraction of
    /// erfc (|x| ≥ 3), enough to judge an f32 approximation.
    fn erf(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            // erfc(a) = e^{-a²}/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...)))), evaluated backwards.
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        r.copysign(x)
    }
}
