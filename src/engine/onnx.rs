//! An ONNX file read into its protobuf, before tract analyses it: the checks and graph-level
//! edits that need the file as written (its declared inputs, operators outside the standard
//! domains, duplicate `NonZero` nodes). Callers above the engine see [`OnnxFile`] and plain
//! names, never the protobuf types.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tract_onnx::pb::{GraphProto, ModelProto};
use tract_onnx::prelude::{Datum, DatumType, Framework};

use crate::error::{Error, Result};

/// Element type of a graph input, as the file declares it or a caller promises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    I64,
    Bool,
}

impl ElemType {
    pub(super) fn datum(self) -> DatumType {
        match self {
            ElemType::F32 => f32::datum_type(),
            ElemType::I64 => i64::datum_type(),
            ElemType::Bool => bool::datum_type(),
        }
    }
}

/// An operator outside the standard ONNX domains: such graphs (the `_q4`, `_bnb4` exports use
/// com.microsoft MatMulNBits / GatherBlockQuantized) only run on onnxruntime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignOp {
    pub domain: String,
    pub op: String,
    /// The node using it.
    pub node: String,
}

/// One real graph input (initializers excluded) and its element type, where the file declares
/// one lookout knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredInput {
    pub name: String,
    pub elem: Option<ElemType>,
}

/// A parsed ONNX file, not yet loaded by tract.
#[derive(Debug)]
pub struct OnnxFile {
    path: PathBuf,
    pub(super) proto: ModelProto,
}

impl OnnxFile {
    /// Reads `path`, with errors that say what is wrong with the file: missing, empty, truncated
    /// or not ONNX.
    pub fn read(path: &Path) -> Result<OnnxFile> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() == 0 {
            return Err(Error::model(path, "file is empty"));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(|e| {
                Error::model(
                    path,
                    format!("not a valid ONNX file (truncated or corrupt?): {e}"),
                )
            })?;
        Ok(OnnxFile {
            path: path.to_path_buf(),
            proto,
        })
    }

    /// The parsed protobuf, for tools and tests that build tract models from it themselves.
    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first operator outside the standard ONNX domains, if any.
    pub fn foreign_op(&self) -> Option<ForeignOp> {
        foreign_op_in(self.proto.graph.as_ref()?)
    }

    /// The graph's real inputs, in the file's order.
    pub fn declared_inputs(&self) -> Vec<DeclaredInput> {
        let Some(g) = self.proto.graph.as_ref() else {
            return Vec::new();
        };
        let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        g.input
            .iter()
            .filter(|i| !inits.contains(i.name.as_str()))
            .map(|i| {
                use tract_onnx::pb::type_proto::Value as T;
                let elem = match i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                    Some(T::TensorType(t)) => match t.elem_type {
                        1 => Some(ElemType::F32),
                        7 => Some(ElemType::I64),
                        9 => Some(ElemType::Bool),
                        _ => None,
                    },
                    _ => None,
                };
                DeclaredInput {
                    name: i.name.clone(),
                    elem,
                }
            })
            .collect()
    }

    /// The graph's output names, in the file's order.
    pub fn output_names(&self) -> Vec<String> {
        self.proto
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Merges `NonZero` nodes that read the same tensor into one. tract gives each `NonZero` output
    /// its own size symbol, so two selections by the same mask (an exporter indexing two tensors
    /// with one boolean mask emits one `NonZero` per tensor) get sizes tract cannot prove equal,
    /// and analysis fails at the first reshape that mixes them. Identical nodes on identical inputs
    /// have identical outputs, so sharing one is exact. Returns how many nodes were removed.
    pub fn merge_duplicate_nonzero(&mut self) -> usize {
        let Some(graph) = self.proto.graph.as_mut() else {
            return 0;
        };
        let mut first: HashMap<Vec<String>, String> = HashMap::new();
        let mut rename: HashMap<String, String> = HashMap::new();
        let mut keep = Vec::with_capacity(graph.node.len());
        for node in graph.node.drain(..) {
            if node.op_type == "NonZero" && node.output.len() == 1 {
                if let Some(out) = first.get(&node.input) {
                    rename.insert(node.output[0].clone(), out.clone());
                    continue;
                }
                first.insert(node.input.clone(), node.output[0].clone());
            }
            keep.push(node);
        }
        graph.node = keep;
        for node in graph.node.iter_mut() {
            for i in node.input.iter_mut() {
                if let Some(to) = rename.get(i) {
                    *i = to.clone();
                }
            }
        }
        rename.len()
    }
}

/// Searches subgraphs (`If`/`Loop` bodies) too: a merged decoder hides its operators there.
fn foreign_op_in(graph: &GraphProto) -> Option<ForeignOp> {
    for n in &graph.node {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Some(ForeignOp {
                domain: n.domain.clone(),
                op: n.op_type.clone(),
                node: n.name.clone(),
            });
        }
        for attr in &n.attribute {
            if let Some(found) = attr
                .g
                .iter()
                .chain(attr.graphs.iter())
                .find_map(foreign_op_in)
            {
                return Some(found);
            }
        }
    }
    None
}
