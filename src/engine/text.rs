//! Text encoders (BERT-style): int64 token inputs of a length that changes from call to call, one
//! float output. Kept beside [`super::Engine`] (single f32 image input, pinned shape) because the
//! input facts and the symbolic sequence axis are a different way of loading.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::{Error, Result};

/// A loaded encoder taking `input_ids`, `attention_mask`, `token_type_ids` (`[1, seq]` int64).
pub struct TextEngine {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    /// Input order of the graph, mapped to our three tensors.
    order: Vec<TextInput>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TextInput {
    Ids,
    Mask,
    Types,
}

impl std::fmt::Debug for TextEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEngine")
            .field("path", &self.path)
            .finish()
    }
}

fn chain(e: &TractError) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

impl TextEngine {
    /// Load an encoder. The sequence axis stays symbolic, so one optimised plan serves every length.
    pub fn load(path: &Path) -> Result<TextEngine> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.is_empty() {
            return Err(Error::model(path, "file is empty"));
        }
        let onnx = tract_onnx::onnx();
        let mut model = onnx
            .model_for_read(&mut std::io::Cursor::new(&bytes))
            .map_err(|e| Error::model(path, format!("cannot load: {}", chain(&e))))?;
        let seq = model.symbols.sym("seq");
        let names: Vec<String> = model
            .input_outlets()
            .map_err(|e| Error::model(path, chain(&e)))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let mut order = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let which = match name.as_str() {
                "input_ids" => TextInput::Ids,
                "attention_mask" => TextInput::Mask,
                "token_type_ids" => TextInput::Types,
                other => {
                    return Err(Error::model(
                        path,
                        format!("unexpected input '{other}' (a text encoder takes input_ids, attention_mask, token_type_ids)"),
                    ))
                }
            };
            order.push(which);
            model = model
                .with_input_fact(i, i64::fact([1.to_dim(), seq.to_dim()]).into())
                .map_err(|e| Error::model(path, format!("input '{name}': {}", chain(&e))))?;
        }
        if !order.contains(&TextInput::Ids) {
            return Err(Error::model(path, "no input_ids input"));
        }
        // Planned as a session's graph is, lookout's passes included: with tract's own
        // `into_optimized`, MiniLM's int8 products ran tract's AVX2 kernel, which stalls ~110 ns
        // per step on CPUs without VNNI (91 % of the label-matching test's 16.6 s, `perf record`,
        // AMD EPYC, 2026-12-07).
        let typed = model
            .into_typed()
            .map_err(|e| Error::model(path, format!("cannot analyse: {}", chain(&e))))?;
        let typed = super::optimize_for_run(typed, path)?;
        let plan = typed
            .into_runnable()
            .map_err(|e| Error::model(path, format!("cannot plan: {}", chain(&e))))?;
        Ok(TextEngine {
            path: path.to_path_buf(),
            plan,
            order,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run on one sequence (attention mask all ones, token types all zero). Returns the first
    /// output's shape and values.
    pub fn run(&self, ids: &[i64]) -> Result<(Vec<usize>, Vec<f32>)> {
        if ids.is_empty() {
            return Err(Error::model(&self.path, "empty token sequence"));
        }
        let n = ids.len();
        let tensor = |v: Vec<i64>| {
            Tensor::from_shape(&[1, n], &v)
                .map_err(|e| Error::model(&self.path, format!("input tensor: {e}")))
        };
        let mut inputs = TVec::new();
        for which in &self.order {
            let t = match which {
                TextInput::Ids => tensor(ids.to_vec())?,
                TextInput::Mask => tensor(vec![1; n])?,
                TextInput::Types => tensor(vec![0; n])?,
            };
            inputs.push(t.into());
        }
        let out = self
            .plan
            .run(inputs)
            .map_err(|e| Error::model(&self.path, format!("inference failed: {}", chain(&e))))?;
        let first = out
            .into_iter()
            .next()
            .ok_or_else(|| Error::model(&self.path, "model has no output"))?;
        let first = first
            .cast_to::<f32>()
            .map_err(|e| Error::model(&self.path, format!("output is not numeric: {e}")))?
            .into_owned();
        let shape = first.shape().to_vec();
        let data = first
            .try_as_plain_ram()
            .ok()
            .and_then(|t| t.as_slice::<f32>().ok().map(|s| s.to_vec()))
            .ok_or_else(|| Error::model(&self.path, "cannot read the output"))?;
        Ok((shape, data))
    }
}
